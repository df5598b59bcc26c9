"""`make cluster PORT=n`: a local Ray cluster on 127.0.0.1 serving the API on that port, in
the foreground; SIGTERM stops the application and every Ray process it started."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest

from benchmarks.services import free_port
from ml.config import Settings
from ml.registry import Registry
from tests.cluster.conftest import RAY_WARNINGS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400), RAY_WARNINGS]
ROOT = Path(__file__).resolve().parents[2]


def started_by(root: psutil.Process, temp_dir: str) -> set[int]:
    """PIDs of the processes `root` started: its descendants, and any process whose
    command line names the cluster's own temp dir (Ray's, should one leave the tree)."""
    pids = {p.pid for p in root.children(recursive=True)}
    for process in psutil.process_iter(["pid", "cmdline"]):
        if temp_dir in " ".join(process.info["cmdline"] or ()):
            pids.add(process.pid)
    return pids


def alive(pids: set[int]) -> set[int]:
    found = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                found.add(pid)
        except psutil.NoSuchProcess:
            continue
    return found


def test_make_cluster_serves_then_stops_everything_on_sigterm(
        settings: Settings, registry: Registry, tmp_path: Path) -> None:
    registry.get("sentiment")  # the artifact is cached for the replica
    port = free_port()
    env = {**os.environ, "ML_CACHE_DIR": str(settings.cache_dir), "ML_DEVICE": "cpu",
           "ML_MODELS": "sentiment", "ML_SERVE_NUM_CPUS": "0.5"}
    log = tmp_path / "cluster.log"
    with open(log, "wb") as out:
        make = subprocess.Popen(["make", "cluster", f"PORT={port}"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while "serving on" not in log.read_text(errors="replace"):
            assert make.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        while httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        response = httpx.post(f"http://127.0.0.1:{port}/api/predict/sentiment",
                              json={"text": "a fine day"}, timeout=30)
        assert response.json()["sentiment"] == "positive"
        assert httpx.get(f"http://127.0.0.1:{port}/health").json()["replicas"] == {
            "sentiment": 1}
        temp_dir = re.search(r"Ray's files in (\S+?)\)", log.read_text())
        assert temp_dir is not None
        ours = started_by(psutil.Process(make.pid), temp_dir[1])
        names = {psutil.Process(pid).name() for pid in alive(ours)}
        assert {"raylet", "gcs_server"} <= names, names
        server = next(p for p in psutil.Process(make.pid).children()
                      if "api.cluster" in " ".join(p.cmdline()))
        server.send_signal(signal.SIGTERM)  # as a service manager would
        assert make.wait(120) == 0, log.read_text()[-3000:]
        deadline = time.monotonic() + 30
        while alive(ours) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not alive(ours), [psutil.Process(p).cmdline() for p in alive(ours)]
        assert not Path(temp_dir[1]).exists()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=2)
    finally:
        if make.poll() is None:  # only if the test failed midway: our group, by its id
            os.killpg(make.pid, signal.SIGKILL)
            make.wait(10)
