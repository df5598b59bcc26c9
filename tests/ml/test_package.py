"""`import ml` is cheap and silent: no web frameworks, no model libraries, no files, no output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
import ml
print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))
"""


def test_import_ml_pulls_in_no_web_or_model_library_and_writes_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "ML_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                            env=env, cwd=tmp_path, check=True, timeout=60)
    modules = set(json.loads(result.stdout))
    for heavy in ("streamlit", "starlette", "uvicorn", "torch", "sklearn", "implicit", "pandas"):
        assert heavy not in modules, f"import ml imported {heavy}"
    assert result.stderr == ""
    assert list(tmp_path.iterdir()) == [], "import ml created files"


def test_public_names() -> None:
    import ml

    assert {"Registry", "Settings", "get_model", "list_models", "MLError"} <= set(ml.__all__)


def test_importing_the_api_creates_no_registry(tmp_path: Path) -> None:
    probe = ("import api.app, ml.registry, os\n"
             "assert ml.registry._default is None\n"
             "print('ok')")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ML_DEVICE": "not-a-device"}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=120)
    assert result.stdout.strip() == "ok", result.stderr
