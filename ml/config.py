"""Settings: the one place that reads environment variables."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml.errors import ConfigError

MODEL_NAMES = ("sentiment", "image", "recommender")
DEVICES = ("auto", "cpu", "cuda")
IMAGE_RUNTIMES = ("auto", "onnxruntime", "torch")
UI_BENCHMARKS = ("auto", "on", "off")
UI_PAGES = ("overview", "sentiment", "image", "recommendations", "benchmarks")


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "realtime-ml"


def _setting(default: Any, env: str, help: str, *, secret: bool = False) -> Any:
    meta = {"env": env, "help": help}
    if callable(default):
        return field(default_factory=default, metadata=meta, repr=not secret)
    return field(default=default, metadata=meta, repr=not secret)


@dataclass(frozen=True)
class BatchLimits:
    """One model's micro-batcher settings."""

    max_batch: int
    max_wait_ms: float
    max_queue: int


@dataclass(frozen=True)
class Settings:
    """Every tunable of the service; built once, passed explicitly, never mutated."""

    cache_dir: Path = _setting(  # noqa: RUF009 - field() with env metadata
        _default_cache_dir, "ML_CACHE_DIR", "Where trained artifacts are cached."
    )
    device: str = _setting("auto", "ML_DEVICE", "Image model device: auto, cpu or cuda.")
    image_weights: Path | None = _setting(  # noqa: RUF009 - None default, env metadata
        None, "ML_IMAGE_WEIGHTS",
        "EfficientNet-Lite0 weights file (default: the one packaged with the requirements)."
    )
    image_runtime: str = _setting(
        "auto", "ML_IMAGE_RUNTIME",
        "Image model runtime: auto (ONNX Runtime on CPU, torch on CUDA), onnxruntime or torch."
    )
    torch_threads: int = _setting(
        0, "ML_TORCH_THREADS",
        "Threads the image model's runtime may use (0: the runtime's default)."
    )
    models: tuple[str, ...] = _setting(
        MODEL_NAMES, "ML_MODELS", "Comma-separated models to serve."
    )
    max_text_chars: int = _setting(
        5000, "ML_MAX_TEXT_CHARS", "Longest text the sentiment model accepts."
    )
    max_image_bytes: int = _setting(
        10 * 1024 * 1024, "ML_MAX_IMAGE_BYTES", "Largest encoded image accepted."
    )
    max_image_pixels: int = _setting(
        40_000_000, "ML_MAX_IMAGE_PIXELS", "Largest decoded image (width x height)."
    )
    max_image_aspect: float = _setting(
        20.0, "ML_MAX_IMAGE_ASPECT", "Most elongated image accepted (long side / short side)."
    )
    max_decode_bytes: int = _setting(
        48 * 1024 * 1024, "ML_MAX_DECODE_BYTES",
        "Memory one image may need to decode; larger images are refused (422)."
    )
    decode_budget_bytes: int = _setting(
        64 * 1024 * 1024, "ML_DECODE_BUDGET_BYTES",
        "Memory all image decodes in flight may hold together; others wait for room."
    )

    # -- serving (read by the API layer; kept here so that env is read in one place) --
    api_keys: tuple[str, ...] = _setting(
        (), "ML_API_KEYS", "Comma-separated API keys; empty turns auth off.", secret=True
    )
    rate_limit_per_second: float = _setting(
        50.0, "ML_RATE_LIMIT_PER_SECOND", "Sustained requests/s per key or client (0: off)."
    )
    rate_limit_burst: int = _setting(100, "ML_RATE_LIMIT_BURST", "Token-bucket burst size.")
    trusted_proxies: tuple[str, ...] = _setting(
        (), "ML_TRUSTED_PROXIES",
        "Proxy addresses/CIDRs whose X-Forwarded-For is believed for rate limiting."
    )
    max_body_bytes: int = _setting(
        12 * 1024 * 1024, "ML_MAX_BODY_BYTES",
        "Largest request body accepted (an image upload)."
    )
    max_json_body_bytes: int = _setting(
        4 * 1024 * 1024, "ML_MAX_JSON_BODY_BYTES",
        "Largest body of the JSON text routes (sentiment, batch, recommendations)."
    )
    max_headers: int = _setting(
        100, "ML_MAX_HEADERS", "Most header lines in one request head (then 431)."
    )
    max_head_bytes: int = _setting(
        64 * 1024, "ML_MAX_HEAD_BYTES",
        "Largest request head: request line plus headers (then 431)."
    )
    max_url_bytes: int = _setting(
        8 * 1024, "ML_MAX_URL_BYTES", "Longest request target (path and query; then 414)."
    )
    write_timeout_s: float = _setting(
        15.0, "ML_WRITE_TIMEOUT_S",
        "A client that stops reading its response for this long loses the connection."
    )
    auth_failure_burst: int = _setting(
        20, "ML_AUTH_FAILURE_BURST",
        "Wrong API keys a client may send in a row before it is throttled (429)."
    )
    auth_failures_per_minute: float = _setting(
        10.0, "ML_AUTH_FAILURES_PER_MINUTE",
        "Sustained wrong API keys per minute per client once the burst is spent."
    )
    max_batch_texts: int = _setting(
        2000, "ML_MAX_BATCH_TEXTS", "Most texts one /api/predict/batch call may carry."
    )
    threadpool_size: int = _setting(
        8, "ML_THREADPOOL_SIZE", "Worker threads for model calls off the event loop."
    )
    request_timeout_s: float = _setting(
        10.0, "ML_REQUEST_TIMEOUT_S", "Deadline for one prediction request."
    )
    cors_origins: tuple[str, ...] = _setting(
        (), "ML_CORS_ORIGINS", "Comma-separated origins allowed by CORS (empty: none)."
    )
    url_fetch_allow: tuple[str, ...] = _setting(
        (), "ML_URL_FETCH_ALLOW",
        "CIDRs that image_url may reach even though private (default: public only)."
    )
    url_fetch_timeout_s: float = _setting(
        5.0, "ML_URL_FETCH_TIMEOUT_S", "Total time allowed to fetch an image_url."
    )
    url_fetch_max_redirects: int = _setting(
        3, "ML_URL_FETCH_MAX_REDIRECTS", "Redirects followed for image_url (each re-checked)."
    )
    warmup: bool = _setting(True, "ML_WARMUP", "Load and warm every model at start-up.")
    header_timeout_s: float = _setting(
        10.0, "ML_HEADER_TIMEOUT_S",
        "Time a client has to send a request head (slow-header clients get 408)."
    )
    body_timeout_s: float = _setting(
        10.0, "ML_BODY_TIMEOUT_S", "Time a client has to send a request body (then 408)."
    )
    max_request_timeout_s: float = _setting(
        60.0, "ML_MAX_REQUEST_TIMEOUT_S",
        "Longest deadline a request may ask for with the X-Request-Timeout-Ms header."
    )

    # -- batching and caching (ml.engine) --
    batching: bool = _setting(
        True, "ML_BATCHING", "Micro-batch concurrent requests (off: one model call each)."
    )
    cache_entries: int = _setting(
        4096, "ML_CACHE_ENTRIES", "Prediction cache size per model, in results (0: off)."
    )
    sentiment_max_batch: int = _setting(
        64, "ML_SENTIMENT_MAX_BATCH", "Most texts the sentiment batcher joins into one call."
    )
    sentiment_max_wait_ms: float = _setting(
        0.0, "ML_SENTIMENT_MAX_WAIT_MS",
        "Longest a sentiment batch waits for more texts (0: a batch is what queued meanwhile)."
    )
    sentiment_max_queue: int = _setting(
        1024, "ML_SENTIMENT_MAX_QUEUE", "Sentiment requests that may wait; more get 503."
    )
    image_max_batch: int = _setting(
        0, "ML_IMAGE_MAX_BATCH",
        "Most images in one forward pass (0: the model's choice, 4 on CPU, 32 on a GPU)."
    )
    image_max_wait_ms: float = _setting(
        0.0, "ML_IMAGE_MAX_WAIT_MS",
        "Longest an image batch waits for more images (0: a batch is what queued meanwhile)."
    )
    image_max_queue: int = _setting(
        64, "ML_IMAGE_MAX_QUEUE", "Images that may wait for the model; more get 503."
    )
    recommender_max_batch: int = _setting(
        32, "ML_RECOMMENDER_MAX_BATCH", "Most recommendation queries served in one call."
    )
    recommender_max_wait_ms: float = _setting(
        0.0, "ML_RECOMMENDER_MAX_WAIT_MS",
        "Longest a recommendation batch waits for more queries (0: what queued meanwhile)."
    )
    recommender_max_queue: int = _setting(
        1024, "ML_RECOMMENDER_MAX_QUEUE", "Recommendation queries that may wait; more get 503."
    )

    # -- the UI (server.py, views/) --
    ui_pages: tuple[str, ...] = _setting(
        ("overview", "sentiment", "image", "recommendations", "benchmarks"), "ML_UI_PAGES",
        "Comma-separated UI pages to show (overview, sentiment, image, recommendations, "
        "benchmarks)."
    )
    ui_password: str = _setting(
        "", "ML_UI_PASSWORD", "Password the UI asks for before any page (empty: none).",
        secret=True
    )
    ui_benchmarks: str = _setting(
        "auto", "ML_UI_BENCHMARKS",
        "Live benchmark runs from the UI: auto (on when the server listens on loopback "
        "only, otherwise only for a visitor who enters an API key), on or off."
    )
    ui_max_sessions: int = _setting(
        200, "ML_UI_MAX_SESSIONS", "UI websocket sessions open at once, in total."
    )
    ui_max_sessions_per_client: int = _setting(
        16, "ML_UI_MAX_SESSIONS_PER_CLIENT", "UI websocket sessions open at once per client."
    )
    ui_idle_timeout_s: float = _setting(
        1800.0, "ML_UI_IDLE_TIMEOUT_S",
        "A UI session whose browser sends nothing for this long is closed."
    )
    ui_upload_session_bytes: int = _setting(
        24 * 1024 * 1024, "ML_UI_UPLOAD_SESSION_BYTES",
        "Uploaded files one UI session may hold at once."
    )
    ui_upload_total_bytes: int = _setting(
        64 * 1024 * 1024, "ML_UI_UPLOAD_TOTAL_BYTES",
        "Uploaded files all UI sessions may hold at once, uploads in flight included."
    )
    ui_frame_ancestors: str = _setting(
        "'self'", "ML_UI_FRAME_ANCESTORS",
        "Who may frame the UI (a CSP frame-ancestors value; 'none' forbids framing)."
    )

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ConfigError("ML_DEVICE", self.device, f"one of {', '.join(DEVICES)}")
        if self.ui_benchmarks not in UI_BENCHMARKS:
            raise ConfigError("ML_UI_BENCHMARKS", self.ui_benchmarks,
                              f"one of {', '.join(UI_BENCHMARKS)}")
        unknown_pages = [p for p in self.ui_pages if p not in UI_PAGES]
        if unknown_pages:
            raise ConfigError("ML_UI_PAGES", ",".join(self.ui_pages),
                              f"a subset of {', '.join(UI_PAGES)}")
        if self.image_runtime not in IMAGE_RUNTIMES:
            raise ConfigError("ML_IMAGE_RUNTIME", self.image_runtime,
                              f"one of {', '.join(IMAGE_RUNTIMES)}")
        unknown = [m for m in self.models if m not in MODEL_NAMES]
        if unknown or not self.models:
            raise ConfigError(
                "ML_MODELS", ",".join(self.models), f"a subset of {', '.join(MODEL_NAMES)}"
            )
        minimums = {"torch_threads": 0, "max_text_chars": 1, "max_image_bytes": 1,
                    "max_image_pixels": 1, "rate_limit_per_second": 0, "rate_limit_burst": 1,
                    "max_body_bytes": 1024, "max_batch_texts": 1, "threadpool_size": 1,
                    "request_timeout_s": 0.01, "url_fetch_timeout_s": 0.01,
                    "url_fetch_max_redirects": 0, "max_request_timeout_s": 0.01,
                    "header_timeout_s": 0.01, "body_timeout_s": 0.01,
                    "cache_entries": 0, "max_image_aspect": 1, "max_decode_bytes": 1024,
                    "decode_budget_bytes": 1024, "max_json_body_bytes": 1024,
                    "max_headers": 8, "max_head_bytes": 1024, "max_url_bytes": 256,
                    "write_timeout_s": 0.01, "auth_failure_burst": 1,
                    "auth_failures_per_minute": 0.01, "ui_max_sessions": 1,
                    "ui_max_sessions_per_client": 1, "ui_idle_timeout_s": 1,
                    "ui_upload_session_bytes": 0, "ui_upload_total_bytes": 0}
        for model in MODEL_NAMES:
            minimums.update({f"{model}_max_batch": 0 if model == "image" else 1,
                             f"{model}_max_wait_ms": 0,
                             f"{model}_max_queue": 1})
        for name, minimum in minimums.items():
            if getattr(self, name) < minimum:
                raise ConfigError(_env_name(name), str(getattr(self, name)),
                                  f"a number >= {minimum}")
        if self.max_decode_bytes > self.decode_budget_bytes:
            raise ConfigError("ML_MAX_DECODE_BYTES", str(self.max_decode_bytes),
                              "at most ML_DECODE_BUDGET_BYTES")
        for cidr in (*self.trusted_proxies, *self.url_fetch_allow):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ConfigError("ML_TRUSTED_PROXIES/ML_URL_FETCH_ALLOW", cidr,
                                  "IP addresses or CIDR networks") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `environ` (default: the process environment)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f.metadata["env"])
            if raw is None or raw.strip() == "":
                continue
            values[f.name] = _parse(f, raw.strip())
        return cls(**values)

    def batching_for(self, model: str) -> BatchLimits:
        """The batcher limits of `model` (defaults for models without their own)."""
        if model not in MODEL_NAMES:
            return BatchLimits(16, 0.0, 256)
        return BatchLimits(getattr(self, f"{model}_max_batch"),
                           getattr(self, f"{model}_max_wait_ms"),
                           getattr(self, f"{model}_max_queue"))

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def describe(cls) -> list[dict[str, str]]:
        """Each setting's env var, default and help, for docs and `python -m ml info`."""
        rows = []
        for f in dataclasses.fields(cls):
            default = f.default_factory() if callable(f.default_factory) else f.default
            if isinstance(default, tuple):
                default = ",".join(default)
            if f.name == "api_keys":
                default = "(none: auth off)"
            if f.name == "ui_password":
                default = "(none)"
            if default is None:
                default = "(packaged)"
            rows.append(
                {"name": f.name, "env": f.metadata["env"], "default": str(default),
                 "help": f.metadata["help"]}
            )
        return rows


def _env_name(field_name: str) -> str:
    return str(Settings.__dataclass_fields__[field_name].metadata["env"])


def _parse(f: dataclasses.Field[Any], raw: str) -> Any:
    kind = f.type
    if kind in ("Path", "Path | None"):
        return Path(raw).expanduser()
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f.metadata["env"], raw, "an integer") from None
    if kind == "float":
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f.metadata["env"], raw, "a number") from None
    if kind == "bool":
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f.metadata["env"], raw, "true or false")
    if kind == "tuple[str, ...]":
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw
