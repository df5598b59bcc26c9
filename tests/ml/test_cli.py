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
    result = cli(settings, "predict", "sentiment", "I love this so much!", "--json",
                 '{"options": {"detailed": true}}')
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["sentiment"] == "positive"
    assert body["terms"]


def test_predict_image(settings: Settings, photo_dir: Path) -> None:
    result = cli(settings, "predict", "image", "--file", f"image={photo_dir / 'coffee.jpg'}",
                 "--json", '{"top_k": 3}')
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["predictions"][0]["label"] == "espresso"
    assert len(body["predictions"]) == 3


def test_recommend(settings: Settings, recommender) -> None:  # type: ignore[no-untyped-def]
    user = recommender.known_users()[0]
    query = json.dumps({"user_id": user, "limit": 4, "context": {"category": "produce"}})
    for name in ("recommender", "recommend"):  # the model and its alias
        result = cli(settings, "predict", name, "--json", query)
        assert result.returncode == 0, result.stderr
        body = json.loads(result.stdout)
        assert body["strategy"] == "als"
        assert [item["department"] for item in body["recommendations"]] == ["PRODUCE"] * 4


def test_predict_a_plugin_model(settings: Settings, registry) -> None:  # type: ignore[no-untyped-def]
    example = registry.get("wine").examples()[1]
    result = cli(settings, "predict", "wine", "--json", json.dumps(
        {f: getattr(example, f) for f in example.__struct_fields__}))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["cultivar"] == "cultivar 2"
    listed = {m["name"]: m for m in json.loads(cli(settings, "models").stdout)}
    assert listed["wine"]["origin"] == "plugin realtime-ml-wine"


def test_info_and_evaluate(settings: Settings) -> None:
    info = json.loads(cli(settings, "info").stdout)
    assert set(info["models"]) == {"sentiment", "image", "recommender", "wine"}
    assert any(row["env"] == "ML_DEVICE" for row in info["settings"])
    evaluation = json.loads(cli(settings, "evaluate").stdout)
    assert evaluation["sentiment"]["accuracy"] >= 0.74
    assert evaluation["recommender"]["als"]["ndcg@10"] > 0


@pytest.mark.parametrize("args", [
    pytest.param(("predict", "sentiment", "   "), id="empty-text"),
    pytest.param(("predict", "recommender", "--json", '{"user_id": "1", "limit": 0}'),
                 id="bad-limit"),
    pytest.param(("predict", "image", "--file", "image=/nonexistent/file.jpg"),
                 id="missing-file"),
    pytest.param(("predict", "nothing", "hi"), id="unknown-model"),
    pytest.param(("predict", "sentiment", "--json", "[1]"), id="json-not-an-object"),
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
                    "## recommender (recommender-v1)", "## wine (wine-cultivar-v1)"):
        assert heading in result.stdout
    assert "| accuracy |" in result.stdout and "| als.ndcg@10 |" in result.stdout
