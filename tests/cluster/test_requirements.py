"""Ray lives in requirements-ray.txt: `make run` (and Streamlit Community Cloud, which
installs requirements.txt) goes without it, `make test` and `make cluster` install it, and
the one process never imports it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.test_install import requirements

ROOT = Path(__file__).resolve().parents[2]


def rule(makefile: str, target: str) -> str:
    return makefile.split(f"\n{target}:")[1].split("\n\n")[0]


def test_ray_and_redis_are_the_ray_files_alone() -> None:
    assert requirements("requirements-ray.txt") == {"ray": "ray[serve]==2.60.0",
                                                    "redis": "redis==8.1.0"}
    assert not {"ray", "redis"} & requirements("requirements.txt").keys()


def test_make_test_and_make_cluster_install_it_and_make_run_does_not() -> None:
    makefile = (ROOT / "Makefile").read_text()
    dev, ray, runtime = (rule(makefile, t) for t in ("$(VENV)/.dev", "$(VENV)/.ray",
                                                     "$(VENV)/.runtime"))
    assert "requirements-ray.txt" in dev.splitlines()[0]  # a change re-runs pip
    assert "-r requirements-ray.txt" in dev and "-r requirements-ray.txt" in ray
    assert "requirements-ray.txt" not in runtime
    assert rule(makefile, "run").splitlines()[0].split() == ["$(VENV)/.runtime"]
    assert rule(makefile, "cluster").splitlines()[0].split() == ["$(VENV)/.ray"]
    tools = next(x for x in makefile.splitlines() if x.startswith("SYSTEM_TOOLS :="))
    assert "redis-server" in tools.split()  # `make test` apt-installs it


def test_the_one_process_never_imports_ray() -> None:
    probe = ("import sys; from api.app import create_app; from ml.registry import Registry; "
             "from ml.config import Settings; "
             "create_app(registry=Registry(Settings.from_env({'ML_MODELS': 'wine'}))); "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'redis')))")
    found = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                           text=True, timeout=120, check=True)
    assert found.stdout.strip() == "[]", found.stdout
