"""`python -m ml build`: the image's build-time step that leaves every model's artifacts in
ML_CACHE_DIR (the slow image test runs it in a fresh venv; these run it here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ml.config import Settings
from ml.registry import Registry
from tests.deploy.dockerfile import ROOT


def build(settings: Settings, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ml", "build"], capture_output=True,
                          text=True, cwd=ROOT, timeout=600, env={
                              **os.environ, "ML_CACHE_DIR": str(settings.cache_dir),
                              "ML_DEVICE": "cpu", "PYTHONPATH": str(ROOT), **env})


@pytest.fixture(scope="module", autouse=True)
def trained(registry: Registry) -> None:
    registry.warmup()  # the command then loads cached artifacts instead of training


def test_build_reports_every_model_ready_and_its_artifacts(settings: Settings,
                                                           registry: Registry) -> None:
    result = build(settings)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["cache_dir"] == str(settings.cache_dir)
    assert sorted(report["models"]) == sorted(registry.names())
    assert all(m["state"] == "ready" for m in report["models"].values())
    on_disk = {p.name: p.stat().st_size for p in settings.cache_dir.glob("*.artifact")}
    assert report["artifacts"] == on_disk and on_disk


def test_build_fails_when_a_model_cannot_be_built(settings: Settings) -> None:
    result = build(settings, ML_MODELS="sentiment,no-such-model")
    assert result.returncode == 1, result.stderr
    models = json.loads(result.stdout)["models"]
    assert models["sentiment"]["state"] == "ready"
    assert models["no-such-model"]["state"] == "failed"
    assert "no model named" in models["no-such-model"]["reason"]
