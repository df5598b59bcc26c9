"""The examples run as documented."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from api.config import ApiSettings
from ml.config import Settings

ROOT = Path(__file__).resolve().parents[1]


def run(settings: Settings, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ML_CACHE_DIR": str(settings.cache_dir), "ML_DEVICE": "cpu"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def test_inprocess_example(settings: Settings, registry) -> None:  # type: ignore[no-untyped-def]
    registry.warmup()
    result = run(settings, "examples/inprocess.py")
    assert result.returncode == 0, result.stderr
    assert "sentiment: positive" in result.stdout
    assert "image: espresso" in result.stdout


def test_batch_example(settings: Settings, registry, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = tmp_path / "reviews.csv"
    source.write_text("id,text\n1,great service\n2,never again\n3,\n", encoding="utf-8")
    out = tmp_path / "scored.csv"
    result = run(settings, str(ROOT / "examples" / "batch.py"), str(source), "--out", str(out))
    assert result.returncode == 0, result.stderr
    lines = out.read_text().splitlines()
    assert lines[0] == "id,text,sentiment,confidence,score"
    assert lines[1].startswith("1,great service,positive")
    assert len(lines) == 3


def test_production_configuration_is_valid() -> None:
    environ = {}
    for line in (ROOT / "examples" / "production.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            environ[key] = value
    known = {row["env"] for row in Settings.describe() + ApiSettings.describe()}
    assert set(environ) <= known, set(environ) - known  # no misspelt or retired names
    settings, http = Settings.from_env(environ), ApiSettings.from_env(environ)
    assert http.api_keys and http.trusted_proxies == ("10.0.0.2",)
    assert settings.max_text_chars == 2000
