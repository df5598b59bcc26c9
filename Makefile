# Two entry points do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8501
HOST ?= 127.0.0.1
WORKERS ?= 1
PYTEST_ARGS ?=
# The API writes its own JSON access log; the guarded protocol bounds request heads and
# unread responses; client addresses come from the socket, X-Forwarded-For only from
# ML_TRUSTED_PROXIES (the API's own check), never from uvicorn's loopback default
# (benchmarks/services.py starts servers with the same flags).
SERVING_FLAGS := --no-access-log --no-proxy-headers --timeout-graceful-shutdown 20 \
  --http api.protocol:GuardedHttpToolsProtocol --ws-max-size 8388608

.PHONY: run api cluster system-tools test test-fast lint notebook bench reliability clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamp files: pip runs again only when a requirements file changes.
$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

# Ray Serve and the Redis client (requirements-ray.txt): `make cluster` only.
$(VENV)/.ray: requirements.txt requirements-ray.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-ray.txt
	touch $@ $(VENV)/.runtime

# The test environment adds torch (requirements-gpu.txt): the CUDA path's tests and the
# reference network that the torch-free CPU graph is held to; and Ray (requirements-ray.txt)
# for the cluster's tests.
$(VENV)/.dev: requirements.txt requirements-gpu.txt requirements-ray.txt requirements-dev.txt \
  | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-gpu.txt \
	  -r requirements-ray.txt -r requirements-dev.txt
	touch $@ $(VENV)/.runtime $(VENV)/.ray

# UI at / and the REST API at /api, /health, /metrics: one process, one port. Served by
# uvicorn rather than `streamlit run`, whose own listening socket lacks TCP_NODELAY and so
# adds ~40 ms to every keep-alive API request (see README).
run: $(VENV)/.runtime
	$(BIN)/uvicorn server:app --host $(HOST) --port $(PORT) $(SERVING_FLAGS)

# The REST API alone (programmatic use, scale-out). WORKERS=n runs n processes, each with
# its own SO_REUSEPORT socket on the port, so the kernel spreads connections evenly.
api: $(VENV)/.runtime
	$(BIN)/python -m api.workers --host $(HOST) --port $(PORT) --workers $(WORKERS) \
	  $(SERVING_FLAGS)

# The same application on Ray Serve (api/cluster.py): a local Ray cluster on 127.0.0.1 and
# the API as its ingress on HOST:PORT, in the foreground. SIGTERM or Ctrl-C stops the
# application and every Ray process it started. A real cluster: see deploy/ray/serve.yaml.
cluster: $(VENV)/.ray
	exec $(BIN)/python -m api.cluster --host $(HOST) --port $(PORT)

# Debian packages the tests and benchmarks drive: chromium for the real-browser tests
# (Playwright uses it, downloads nothing), wrk, the C load generator, and redis-server,
# which the cluster's tests start for rate limits shared across ingress replicas.
SYSTEM_TOOLS := chromium wrk redis-server
system-tools:
	@missing=""; for tool in $(SYSTEM_TOOLS); do \
	  command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "missing:$$missing and this is not root: browser tests skip without" \
	    "chromium; load tests and the harness use the Python client without wrk"; fi; fi

test: $(VENV)/.dev system-tools
	$(BIN)/ruff check .
	$(BIN)/python -m mypy ml api benchmarks
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(VENV)/.dev
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/python -m mypy ml api benchmarks

# Opens the exploration notebooks in JupyterLab (installed on first use).
notebook: $(VENV)/.dev
	$(BIN)/pip install --quiet -r requirements-notebook.txt
	$(BIN)/jupyter lab notebooks/

bench: $(VENV)/.dev system-tools
	$(BIN)/python -m benchmarks inprocess
	$(BIN)/python -m benchmarks run

# RELIABILITY.md: hostile-request catalogue, 60 s soak and fuzzing against a real server.
reliability: $(VENV)/.dev
	$(BIN)/python -m benchmarks reliability

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
