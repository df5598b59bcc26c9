"""`python -m ml` against the real models (sharing the session's artifact cache)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ml.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ML_CACHE_DIR": str(settings.cache_dir), "ML_DEVICE": "cpu",
           "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "ml", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


@pytest.fixture(scope="module", autouse=True)
def trained(registry) -> None:  # type: ignore[no-untyped-def]
    registry.warmup()  # the CLI then loads cached artifacts instead of training


def test_predict_sentiment(settings: Settings) -> None:
    result = cli(settings, "predict", "sentiment", "I love this so much!", "--detailed")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["sentiment"] == "positive"
    assert body["terms"]


def test_predict_image(settings: Settings, photo_dir: Path) -> None:
    result = cli(settings, "predict", "image", str(photo_dir / "coffee.jpg"), "--top-k", "3")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["predictions"][0]["label"] == "espresso"
    assert len(body["predictions"]) == 3


def test_recommend(settings: Settings, recommender) -> None:  # type: ignore[no-untyped-def]
    user = recommender.known_users()[0]
    result = cli(settings, "recommend", user, "--limit", "4", "--category", "produce")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["strategy"] == "als"
    assert [item["department"] for item in body["items"]] == ["PRODUCE"] * 4


def test_info_and_evaluate(settings: Settings) -> None:
    info = json.loads(cli(settings, "info").stdout)
    assert set(info["models"]) == {"sentiment", "image", "recommender"}
    assert any(row["env"] == "ML_DEVICE" for row in info["settings"])
    evaluation = json.loads(cli(settings, "evaluate").stdout)
    assert evaluation["sentiment"]["accuracy"] >= 0.74
    assert evaluation["recommender"]["als"]["ndcg@10"] > 0


@pytest.mark.parametrize("args", [
    pytest.param(("predict", "sentiment", "   "), id="empty-text"),
    pytest.param(("recommend", "1", "--limit", "0"), id="bad-limit"),
    pytest.param(("predict", "image", "/nonexistent/file.jpg"), id="missing-file"),
])
def test_errors_exit_2_with_json(settings: Settings, args: tuple[str, ...]) -> None:
    result = cli(settings, *args)
    assert result.returncode == 2
    error = json.loads(result.stderr)["error"]
    assert error["code"] and error["message"]


def test_model_cards_markdown(settings: Settings) -> None:
    result = cli(settings, "cards")
    assert result.returncode == 0, result.stderr
    for heading in ("## sentiment (sentiment-v1)", "## image (image-classifier-v1)",
                    "## recommender (recommender-v1)"):
        assert heading in result.stdout
    assert "| accuracy |" in result.stdout and "| als.ndcg@10 |" in result.stdout
