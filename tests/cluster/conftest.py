"""Cluster fixtures: Redis on a free loopback port, a local 2-node Ray cluster, the
application served on it. Every process here is started by the fixture and stopped by it,
by PID (Ray's own by `Cluster.shutdown`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.services import free_port
from tests.conftest import need_tool

ROOT = Path(__file__).resolve().parents[2]
# Ray's own modules use APIs their dependencies deprecate (pydantic's Field extras, ...):
# not ours to fix; everything else stays an error.
RAY_WARNINGS = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray",
                                          "ignore::FutureWarning:ray")
# A local cluster stays on loopback, reports nothing and leaves the proxy free to route to
# either node's ingress replica (its default prefers the replica on its own node). Ray
# reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, when imported: without it, it turns the
# cluster's 127.0.0.1 into this machine's address, where nothing listens. So it is set as
# the tests are collected, before anything imports Ray.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0",
           "RAY_SERVE_PROXY_PREFER_LOCAL_AZ_ROUTING": "0"}
os.environ.update(RAY_ENV)
with warnings.catch_warnings():  # imported once here, its import-time warnings silenced
    for category in (DeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category, module="ray")
    import ray.serve  # noqa: F401


class RedisServer:
    """Debian's redis-server on 127.0.0.1:<free port>, no persistence; stop/start by PID."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = log_dir / f"redis-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--protected-mode", "yes"],
                stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        import redis

        while time.monotonic() < deadline:
            try:
                with redis.Redis(port=self.port, socket_timeout=0.5) as client:
                    if client.ping():
                        return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start:\n{self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    need_tool(shutil.which("redis-server") is not None,
              "redis-server is not installed (apt-get install redis-server; `make test` does)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class LocalCluster:
    """A 2-node Ray cluster on this machine with Serve's proxy on `url`."""

    cluster: Any
    url: str
    temp_dir: str

    def serve(self, args: Mapping[str, str], timeout_s: float = 240.0) -> None:
        """Deploy (or redeploy) the application with `args`; wait until it is ready."""
        from ray import serve

        from api.cluster import APP_NAME, build_app

        serve.run(build_app(args), name=APP_NAME, route_prefix="/", blocking=False)
        self.wait_ready(timeout_s)

    def wait_ready(self, timeout_s: float) -> None:
        from ray import serve

        from api.cluster import APP_NAME

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            app = serve.status().applications.get(APP_NAME)
            if app is not None and str(app.status.value if hasattr(app.status, "value")
                                       else app.status) == "RUNNING":
                try:
                    if httpx.get(f"{self.url}/health/ready", timeout=5).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.5)
        raise TimeoutError(f"the application was not ready in {timeout_s}s")

    def replicas(self, deployment: str) -> list[dict[str, Any]]:
        """The deployment's replicas as Serve's controller lists them (state, node, actor)."""
        from ray.serve.context import _get_global_client

        from api.cluster import APP_NAME

        details = _get_global_client().get_serve_details()
        found: list[dict[str, Any]] = details["applications"][APP_NAME]["deployments"][
            deployment]["replicas"]
        return found


@contextmanager
def local_cluster(cpus_per_node: float = 1) -> Iterator[LocalCluster]:
    """Two nodes on 127.0.0.1 (`cpus_per_node` logical CPUs each, no dashboard) and Serve's
    proxy on the head node on a free port; everything shut down afterwards."""
    import ray
    from ray import serve
    from ray._private import services
    from ray.cluster_utils import Cluster

    assert services.resolve_ip_for_localhost("127.0.0.1") == "127.0.0.1", \
        "Ray was imported before RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 was set"
    temp_dir = tempfile.mkdtemp(prefix="rtml-ray-test-")
    # the nodes' workers import api, ml and tests from this checkout. Cluster() records the
    # head's address in $RAY_TMPDIR/ray/ray_current_cluster (/tmp/ray by default) whatever
    # temp_dir it is given, and fails where that folder does not exist, as on a fresh
    # machine: keep it inside this cluster's own folder.
    saved = {key: os.environ.get(key) for key in ("PYTHONPATH", "RAY_TMPDIR")}
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), saved["PYTHONPATH"] or "") if p)
    os.environ["RAY_TMPDIR"] = temp_dir
    os.mkdir(os.path.join(temp_dir, "ray"))
    cluster = None
    try:
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": cpus_per_node, "node_ip_address": "127.0.0.1",
            "include_dashboard": False, "temp_dir": temp_dir})
        cluster.add_node(num_cpus=cpus_per_node, node_ip_address="127.0.0.1")
        ray.init(address=cluster.address)
        port = free_port()
        serve.start(proxy_location="HeadOnly",
                    http_options={"host": "127.0.0.1", "port": port})
        yield LocalCluster(cluster, f"http://127.0.0.1:{port}", temp_dir)
    finally:
        try:
            if ray.is_initialized():
                serve.shutdown()
        finally:
            ray.shutdown()
            if cluster is not None:
                cluster.shutdown()
            shutil.rmtree(temp_dir, ignore_errors=True)
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
