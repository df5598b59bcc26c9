"""Settings: read from an injected environment mapping, checked, frozen, described. The ml
core's own (`ml.config.Settings`) and the HTTP layer's (`api.config.ApiSettings`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.config import ApiSettings
from ml.config import Settings
from ml.errors import ConfigError


def test_defaults_need_no_environment() -> None:
    settings = Settings.from_env({})
    assert settings.device == "auto"
    assert settings.models == ()  # every built-in and installed model
    assert settings.torch_threads == 0
    assert settings.cache_dir.name == "realtime-ml"
    assert ApiSettings.from_env({}).api_keys == ()


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


def test_serving_settings_belong_to_the_http_layer() -> None:
    settings = ApiSettings.from_env({
        "ML_API_KEYS": "k1, k2", "ML_RATE_LIMIT_PER_SECOND": "2.5",
        "ML_URL_FETCH_ALLOW": "127.0.0.0/8", "ML_CORS_ORIGINS": "https://a.example",
    })
    assert settings.api_keys == ("k1", "k2")
    assert settings.rate_limit_per_second == 2.5
    assert settings.url_fetch_allow == ("127.0.0.0/8",)
    assert settings.cors_origins == ("https://a.example",)
    assert Settings.from_env({"ML_WARMUP": "off"}).warmup is False
    ml_fields, http_fields = set(Settings.__dataclass_fields__), \
        set(ApiSettings.__dataclass_fields__)
    assert not ml_fields & http_fields
    for http_only in ("api_keys", "cors_origins", "rate_limit_per_second",
                      "header_timeout_s", "url_fetch_timeout_s"):
        assert http_only not in ml_fields


def test_per_model_batch_limits_come_from_the_environment_for_any_model() -> None:
    settings = Settings.from_env({"ML_SENTIMENT_MAX_BATCH": "8", "ML_WINE_MAX_QUEUE": "5",
                                  "ML_MY_PLUGIN_MAX_WAIT_MS": "1.5"})
    assert settings.batch_overrides_for("sentiment") == {"max_batch": 8.0}
    assert settings.batch_overrides_for("wine") == {"max_queue": 5.0}
    assert settings.batch_overrides_for("my-plugin") == {"max_wait_ms": 1.5}
    assert settings.batch_overrides_for("image") == {}
    assert settings.tuned("image", max_batch=2).batch_overrides_for("image") == \
        {"max_batch": 2.0}


def test_blank_values_mean_default() -> None:
    assert Settings.from_env({"ML_DEVICE": "  "}).device == "auto"


@pytest.mark.parametrize(("kind", "env", "value", "fragment"), [
    pytest.param(Settings, "ML_DEVICE", "tpu", "auto, cpu, cuda", id="device"),
    pytest.param(Settings, "ML_TORCH_THREADS", "many", "an integer", id="threads-not-int"),
    pytest.param(Settings, "ML_TORCH_THREADS", "-1", ">= 0", id="threads-negative"),
    pytest.param(Settings, "ML_MAX_TEXT_CHARS", "0", ">= 1", id="zero-limit"),
    pytest.param(Settings, "ML_SENTIMENT_MAX_BATCH", "0", ">= 1", id="zero-batch"),
    pytest.param(Settings, "ML_IMAGE_MAX_QUEUE", "lots", "an integer", id="batch-not-int"),
    pytest.param(Settings, "ML_WARMUP", "maybe", "true or false", id="bool"),
    pytest.param(ApiSettings, "ML_RATE_LIMIT_PER_SECOND", "fast", "a number",
                 id="rate-not-number"),
    pytest.param(ApiSettings, "ML_TRUSTED_PROXIES", "10.0.0.0/8,not-an-ip", "CIDR",
                 id="bad-cidr"),
    pytest.param(ApiSettings, "ML_UI_PAGES", "overview,Admin Page", "model names", id="bad-page"),
])
def test_bad_values_are_refused_naming_the_variable(kind: type, env: str, value: str,
                                                    fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        kind.from_env({env: value})  # type: ignore[attr-defined]
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
                                            "ML_MODELS", "ML_<MODEL>_MAX_BATCH"}
    assert all(row["help"] for row in rows)
    http = {row["env"]: row for row in ApiSettings.describe()}
    assert http["ML_API_KEYS"]["default"] == "(none)"  # secrets never shown
    assert http["ML_UI_PASSWORD"]["default"] == "(none)"


def test_the_readme_documents_every_setting_and_no_other() -> None:
    import re
    from pathlib import Path

    from api.config import ClusterSettings

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    known = {row["env"] for row in (Settings.describe() + ApiSettings.describe()
                                    + ClusterSettings.describe())}
    rows = set(re.findall(r"^\| `(ML_[A-Z0-9_<>]+)` \|", readme, flags=re.MULTILINE))
    assert rows == known, (rows - known, known - rows)
    mentioned = set(re.findall(r"\bML_[A-Z0-9_<>]+[A-Z0-9>]", readme))
    per_model = re.compile(r"^ML_[A-Z0-9_]+_(MAX_BATCH|MAX_WAIT_MS|MAX_QUEUE|MIN_REPLICAS|"
                           r"MAX_REPLICAS|TARGET_ONGOING_REQUESTS|NUM_CPUS|NUM_GPUS)$")
    assert {m for m in mentioned - known if not per_model.match(m)} == set()
