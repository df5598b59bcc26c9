from __future__ import annotations

from pathlib import Path

import pytest

from ml.config import MODEL_NAMES, Settings
from ml.errors import ConfigError


def test_defaults_need_no_environment() -> None:
    settings = Settings.from_env({})
    assert settings.device == "auto"
    assert settings.models == MODEL_NAMES
    assert settings.torch_threads == 0
    assert settings.cache_dir.name == "realtime-ml"


def test_reads_only_the_given_mapping(tmp_path: Path) -> None:
    settings = Settings.from_env({
        "ML_CACHE_DIR": str(tmp_path), "ML_DEVICE": "cpu", "ML_TORCH_THREADS": "1",
        "ML_MODELS": "sentiment, image", "ML_MAX_TEXT_CHARS": "100",
    })
    assert settings.cache_dir == tmp_path
    assert settings.device == "cpu"
    assert settings.torch_threads == 1
    assert settings.models == ("sentiment", "image")
    assert settings.max_text_chars == 100


def test_serving_settings(tmp_path: Path) -> None:
    settings = Settings.from_env({
        "ML_API_KEYS": "k1, k2", "ML_RATE_LIMIT_PER_SECOND": "2.5", "ML_WARMUP": "off",
        "ML_URL_FETCH_ALLOW": "127.0.0.0/8", "ML_CORS_ORIGINS": "https://a.example",
    })
    assert settings.api_keys == ("k1", "k2")
    assert settings.rate_limit_per_second == 2.5
    assert settings.warmup is False
    assert settings.url_fetch_allow == ("127.0.0.0/8",)
    assert settings.cors_origins == ("https://a.example",)


def test_blank_values_mean_default() -> None:
    assert Settings.from_env({"ML_DEVICE": "  "}).device == "auto"


@pytest.mark.parametrize(("env", "value", "fragment"), [
    pytest.param("ML_DEVICE", "tpu", "auto, cpu, cuda", id="device"),
    pytest.param("ML_TORCH_THREADS", "many", "an integer", id="threads-not-int"),
    pytest.param("ML_TORCH_THREADS", "-1", ">= 0", id="threads-negative"),
    pytest.param("ML_MODELS", "sentiment,llm", "subset", id="unknown-model"),
    pytest.param("ML_MAX_TEXT_CHARS", "0", ">= 1", id="zero-limit"),
    pytest.param("ML_RATE_LIMIT_PER_SECOND", "fast", "a number", id="rate-not-number"),
    pytest.param("ML_WARMUP", "maybe", "true or false", id="bool"),
    pytest.param("ML_TRUSTED_PROXIES", "10.0.0.0/8,not-an-ip", "CIDR", id="bad-cidr"),
])
def test_bad_values_are_refused_naming_the_variable(env: str, value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({env: value})
    assert env in caught.value.message
    assert fragment in caught.value.message


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.device = "cpu"  # type: ignore[misc]
    assert settings.replace(device="cpu").device == "cpu"


def test_describe_lists_every_setting_with_its_variable() -> None:
    rows = Settings.describe()
    assert {row["env"] for row in rows} >= {"ML_CACHE_DIR", "ML_DEVICE", "ML_TORCH_THREADS",
                                            "ML_MODELS"}
    assert all(row["help"] for row in rows)
