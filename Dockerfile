# syntax=docker/dockerfile:1
# The one-process server (UI at /, REST API at /api, /health, /metrics) as a warm image:
# every model's artifacts (sentiment and recommender training, the image model's ONNX graph)
# are built here, so a container serves its first request without training.
#
#   docker build -t realtime-ml .
#   docker run --rm -p 8501:8501 --read-only --stop-timeout 30 realtime-ml
#
# The REST API alone (what `make api` runs; WORKERS processes share the port):
#   docker run --rm -p 8501:8501 --read-only --stop-timeout 30 realtime-ml \
#     python -m api.workers --host 0.0.0.0 --port 8501 --workers 2 --no-access-log \
#     --no-proxy-headers --timeout-graceful-shutdown 20 \
#     --http api.protocol:GuardedHttpToolsProtocol --ws-max-size 8388608
# The Ray Serve image for KubeRay (deploy/kuberay/rayservice.yaml): --target ray.
#
# Stop: SIGTERM makes readiness answer 503 at once (api/service.py), then uvicorn drains
# requests in flight for up to 20 s (--timeout-graceful-shutdown 20, as in the Makefile).
# A Dockerfile cannot set the stop timeout: give `docker run --stop-timeout 30` (Docker's
# default of 10 s would kill a drain half-way); Kubernetes gets terminationGracePeriodSeconds.
ARG PYTHON_IMAGE=python:3.11-slim

# -- build: the pinned CPU runtime in a venv (no torch: the image model on CPU is an ONNX
# graph made from the packaged weights with onnx). Wheels only, so no compiler is needed.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install --no-cache-dir --only-binary=:all: -r /tmp/requirements.txt

# -- artifacts: train and export every model into the cache the image ships. Only ml/ is
# needed, so a change elsewhere does not retrain.
FROM build AS artifacts
ENV ML_CACHE_DIR=/var/cache/realtime-ml \
    ORT_DISABLE_TELEMETRY=1
WORKDIR /src
COPY ml/ ml/
# readable by any uid (the artifacts are derived from public packages): a platform that
# runs the image under another user id can still load and copy them
RUN /opt/venv/bin/python -m ml build && chmod -R a+rX "$ML_CACHE_DIR"

# -- runtime: the venv, the artifacts and the source; nothing to build anything with.
FROM ${PYTHON_IMAGE} AS runtime
# ML_CACHE_DIR: the one place the app writes (a model whose cache key changed is rebuilt
# there); /tmp: large multipart uploads spool there. Both are volumes, so the rest of the
# filesystem can be read-only (docker run --read-only, Kubernetes readOnlyRootFilesystem).
# ORT_DISABLE_TELEMETRY: ONNX Runtime would otherwise write a device id and telemetry
# session files under $HOME/.cache and $TMPDIR.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    ML_CACHE_DIR=/var/cache/realtime-ml \
    ORT_DISABLE_TELEMETRY=1
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
COPY --from=artifacts --chown=10001:10001 /var/cache/realtime-ml /var/cache/realtime-ml
WORKDIR /app
COPY .streamlit/ .streamlit/
COPY server.py app.py ./
COPY ml/ ml/
COPY api/ api/
COPY views/ views/
COPY benchmarks/ benchmarks/
# bytecode now, so that a read-only filesystem costs nothing at start
RUN python -m compileall -q /app
USER 10001:10001
VOLUME ["/var/cache/realtime-ml", "/tmp"]
EXPOSE 8501
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/health/live', timeout=2)"]

# -- ray: the same app with Ray Serve, for KubeRay (which starts `ray start` itself and
# probes Ray with wget; build with --target ray).
FROM runtime AS ray
USER 0
# (not under /tmp: it is a volume now, and build steps' writes to a volume are discarded)
COPY requirements-ray.txt /opt/requirements-ray.txt
# DL3008 (pin apt versions): the base image tag is the pin; Debian replaces a package's
# point release in place, so a pinned wget would stop installing at the next update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends wget \
    && rm -rf /var/lib/apt/lists/* \
    && pip install --no-cache-dir --only-binary=:all: -r /opt/requirements-ray.txt
USER 10001:10001
# On its own (not under KubeRay, which ignores HEALTHCHECK and probes Ray itself): `make
# cluster`, a one-node Ray cluster serving the application, ingress included, on 8000.
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=2)"]
CMD ["python", "-m", "api.cluster", "--host", "0.0.0.0", "--port", "8000"]

# -- app (the default target): `make run`'s server, one process, one port.
FROM runtime AS app
CMD ["uvicorn", "server:app", "--host", "0.0.0.0", "--port", "8501", \
     "--no-access-log", "--no-proxy-headers", "--timeout-graceful-shutdown", "20", \
     "--http", "api.protocol:GuardedHttpToolsProtocol", "--ws-max-size", "8388608"]
