"""Settings of the HTTP layer and the UI's front: keys, limits, timeouts, CORS, fetching.

Read from the environment the same way as the ml core's (`ml.config.EnvSettings`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ml.config import EnvSettings, setting
from ml.errors import ConfigError
from ml.registry import NAME

UI_BENCHMARKS = ("auto", "on", "off")
UI_ACCESS_LOG = ("pages", "all", "off")
UI_PAGES = ("overview", "models", "benchmarks")  # or single models, by name
REDIS_FAILURE_MODES = ("open", "closed")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


@dataclass(frozen=True)
class ApiSettings(EnvSettings):
    """Every tunable of the REST API and the one process's UI front."""

    api_keys: tuple[str, ...] = setting(
        (), "ML_API_KEYS", "Comma-separated API keys; empty turns auth off.", secret=True)
    rate_limit_per_second: float = setting(
        1000.0, "ML_RATE_LIMIT_PER_SECOND",
        "Sustained requests/s per key or client (0: off); a 429 names this setting.",
        minimum=0)
    rate_limit_burst: int = setting(2000, "ML_RATE_LIMIT_BURST", "Token-bucket burst size.",
                                    minimum=1)
    access_log: bool = setting(
        True, "ML_ACCESS_LOG", "Write the JSON access log: one line per API request.")
    access_log_ui: str = setting(
        "pages", "ML_ACCESS_LOG_UI",
        "UI lines in the same access log: pages (page loads, websocket sessions, uploads and "
        "every error; static assets and health pings quiet), all, or off.")
    response_digits: int = setting(
        4, "ML_RESPONSE_DIGITS",
        "Significant digits of the floats in prediction answers (0: full precision).",
        minimum=0)
    trusted_proxies: tuple[str, ...] = setting(
        (), "ML_TRUSTED_PROXIES",
        "Proxy addresses/CIDRs whose X-Forwarded-For is believed for rate limiting.")
    auth_failure_burst: int = setting(
        20, "ML_AUTH_FAILURE_BURST",
        "Wrong API keys a client may send in a row before it is throttled (429).", minimum=1)
    auth_failures_per_minute: float = setting(
        10.0, "ML_AUTH_FAILURES_PER_MINUTE",
        "Sustained wrong API keys per minute per client once the burst is spent.",
        minimum=0.01)
    max_body_bytes: int = setting(
        12 * 1024 * 1024, "ML_MAX_BODY_BYTES",
        "Largest request body accepted (a route that takes files: an image upload).",
        minimum=1024)
    max_json_body_bytes: int = setting(
        4 * 1024 * 1024, "ML_MAX_JSON_BODY_BYTES",
        "Largest body of a route that takes no files (sentiment, batch, recommend).",
        minimum=1024)
    max_headers: int = setting(
        100, "ML_MAX_HEADERS", "Most header lines in one request head (then 431).", minimum=8)
    max_head_bytes: int = setting(
        64 * 1024, "ML_MAX_HEAD_BYTES",
        "Largest request head: request line plus headers (then 431).", minimum=1024)
    max_url_bytes: int = setting(
        8 * 1024, "ML_MAX_URL_BYTES", "Longest request target (path and query; then 414).",
        minimum=256)
    header_timeout_s: float = setting(
        10.0, "ML_HEADER_TIMEOUT_S",
        "Time a client has to send a request head (slow-header clients get 408).",
        minimum=0.01)
    body_timeout_s: float = setting(
        10.0, "ML_BODY_TIMEOUT_S", "Time a client has to send a request body (then 408).",
        minimum=0.01)
    write_timeout_s: float = setting(
        15.0, "ML_WRITE_TIMEOUT_S",
        "A client that stops reading its response for this long loses the connection.",
        minimum=0.01)
    max_request_timeout_s: float = setting(
        60.0, "ML_MAX_REQUEST_TIMEOUT_S",
        "Longest deadline a request may ask for with the X-Request-Timeout-Ms header.",
        minimum=0.01)
    cors_origins: tuple[str, ...] = setting(
        (), "ML_CORS_ORIGINS", "Comma-separated origins allowed by CORS (empty: none).")
    url_fetch_allow: tuple[str, ...] = setting(
        (), "ML_URL_FETCH_ALLOW",
        "CIDRs that <field>_url inputs may reach even though private (default: public only).")
    url_fetch_timeout_s: float = setting(
        5.0, "ML_URL_FETCH_TIMEOUT_S", "Total time allowed to fetch a <field>_url input.",
        minimum=0.01)
    url_fetch_max_redirects: int = setting(
        3, "ML_URL_FETCH_MAX_REDIRECTS", "Redirects followed for a URL input (each re-checked).",
        minimum=0)
    redis_url: str = setting(
        "", "ML_REDIS_URL",
        "Redis that keeps the rate-limit buckets, shared by every API process and ingress "
        "replica that uses it (redis://host:port/db; empty: each process keeps its own).",
        secret=True)
    redis_failure_mode: str = setting(
        "open", "ML_REDIS_FAILURE_MODE",
        "When ML_REDIS_URL cannot be reached: open (each process limits with its own "
        "buckets until Redis answers again) or closed (requests get 503).")

    # -- the UI (server.py, views/) --
    ui_pages: tuple[str, ...] = setting(
        UI_PAGES, "ML_UI_PAGES",
        "Comma-separated UI pages to show: overview, models (a page per model), benchmarks, "
        "or single models by name (sentiment, image, ...).")
    ui_password: str = setting(
        "", "ML_UI_PASSWORD", "Password the UI asks for before any page (empty: none).",
        secret=True)
    ui_benchmarks: str = setting(
        "auto", "ML_UI_BENCHMARKS",
        "Live benchmark runs from the UI: auto (on when the server listens on loopback "
        "only, otherwise only for a visitor who enters an API key), on or off.")
    ui_max_sessions: int = setting(
        200, "ML_UI_MAX_SESSIONS", "UI websocket sessions open at once, in total.", minimum=1)
    ui_max_sessions_per_client: int = setting(
        16, "ML_UI_MAX_SESSIONS_PER_CLIENT", "UI websocket sessions open at once per client.",
        minimum=1)
    ui_idle_timeout_s: float = setting(
        1800.0, "ML_UI_IDLE_TIMEOUT_S",
        "A UI session whose browser sends nothing for this long is closed.", minimum=1)
    ui_upload_session_bytes: int = setting(
        24 * 1024 * 1024, "ML_UI_UPLOAD_SESSION_BYTES",
        "Uploaded files one UI session may hold at once.", minimum=0)
    ui_upload_total_bytes: int = setting(
        64 * 1024 * 1024, "ML_UI_UPLOAD_TOTAL_BYTES",
        "Uploaded files all UI sessions may hold at once, uploads in flight included.",
        minimum=0)
    ui_frame_ancestors: str = setting(
        "'self'", "ML_UI_FRAME_ANCESTORS",
        "Who may frame the UI (a CSP frame-ancestors value; 'none' forbids framing).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.redis_failure_mode not in REDIS_FAILURE_MODES:
            raise ConfigError("ML_REDIS_FAILURE_MODE", self.redis_failure_mode,
                              f"one of {', '.join(REDIS_FAILURE_MODES)}")
        if self.redis_url and not self.redis_url.startswith(REDIS_SCHEMES):
            raise ConfigError("ML_REDIS_URL", "(hidden)",
                              f"a URL starting with {', '.join(REDIS_SCHEMES)}")
        if self.ui_benchmarks not in UI_BENCHMARKS:
            raise ConfigError("ML_UI_BENCHMARKS", self.ui_benchmarks,
                              f"one of {', '.join(UI_BENCHMARKS)}")
        if self.access_log_ui not in UI_ACCESS_LOG:
            raise ConfigError("ML_ACCESS_LOG_UI", self.access_log_ui,
                              f"one of {', '.join(UI_ACCESS_LOG)}")
        unknown_pages = [p for p in self.ui_pages if p not in UI_PAGES and not NAME.match(p)]
        if unknown_pages:
            raise ConfigError("ML_UI_PAGES", ",".join(self.ui_pages),
                              f"{', '.join(UI_PAGES)} or model names")
        for cidr in (*self.trusted_proxies, *self.url_fetch_allow):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ConfigError("ML_TRUSTED_PROXIES/ML_URL_FETCH_ALLOW", cidr,
                                  "IP addresses or CIDR networks") from None


# -- the Ray Serve application (api.cluster) ---------------------------------------------------

SCALING_FIELDS = {"MIN_REPLICAS": ("min_replicas", int, 0),
                  "MAX_REPLICAS": ("max_replicas", int, 1),
                  "TARGET_ONGOING_REQUESTS": ("target_ongoing_requests", float, 0.01),
                  "NUM_CPUS": ("num_cpus", float, 0), "NUM_GPUS": ("num_gpus", float, 0)}
SCALING_ENV = re.compile(
    r"^ML_([A-Z0-9_]+?)_(MIN_REPLICAS|MAX_REPLICAS|TARGET_ONGOING_REQUESTS|NUM_CPUS|NUM_GPUS)$")
INGRESS = "ingress"  # the API's deployment, scaled like a model's (ML_INGRESS_*)


@dataclass(frozen=True)
class Scaling:
    """One deployment's replicas and the resources each reserves."""

    min_replicas: int
    max_replicas: int
    target_ongoing_requests: float
    num_cpus: float
    num_gpus: float

    @property
    def autoscaled(self) -> bool:
        return self.max_replicas > self.min_replicas


@dataclass(frozen=True)
class ClusterSettings(EnvSettings):
    """The deployments of the Ray Serve application: replicas, resources, health checks and
    autoscaling. ML_SERVE_* are every deployment's defaults; ML_<MODEL>_* (a model's name,
    or INGRESS for the API) set one deployment's."""

    min_replicas: int = setting(
        1, "ML_SERVE_MIN_REPLICAS", "Fewest replicas of each deployment.", minimum=0)
    max_replicas: int = setting(
        1, "ML_SERVE_MAX_REPLICAS",
        "Most replicas of each deployment; above the fewest, Ray Serve autoscales.", minimum=1)
    target_ongoing_requests: float = setting(
        2.0, "ML_SERVE_TARGET_ONGOING_REQUESTS",
        "Requests in flight per replica that autoscaling aims for.", minimum=0.01)
    num_cpus: float = setting(
        1.0, "ML_SERVE_NUM_CPUS", "CPUs each replica reserves.", minimum=0)
    num_gpus: float = setting(
        0.0, "ML_SERVE_NUM_GPUS",
        "GPUs each replica reserves (ML_<MODEL>_NUM_GPUS=1 for the model that uses one).",
        minimum=0)
    health_check_period_s: float = setting(
        10.0, "ML_SERVE_HEALTH_CHECK_PERIOD_S",
        "How often Ray Serve checks each replica (a failing one is replaced).", minimum=0.1)
    metrics_interval_s: float = setting(
        10.0, "ML_SERVE_METRICS_INTERVAL_S",
        "How often replicas report their load to the autoscaler.", minimum=0.1)
    look_back_period_s: float = setting(
        30.0, "ML_SERVE_LOOK_BACK_PERIOD_S",
        "Window of load the autoscaler averages over.", minimum=0.1)
    upscale_delay_s: float = setting(
        30.0, "ML_SERVE_UPSCALE_DELAY_S",
        "How long load must call for more replicas before they are added.", minimum=0)
    downscale_delay_s: float = setting(
        600.0, "ML_SERVE_DOWNSCALE_DELAY_S",
        "How long load must call for fewer replicas before they are removed.", minimum=0)
    # (deployment, field, value) from ML_<MODEL>_MIN_REPLICAS, ... and ML_INGRESS_*
    scaling_overrides: tuple[tuple[str, str, float], ...] = ()

    SCALING_HELP: ClassVar[dict[str, str]] = {
        "MIN_REPLICAS": "Fewest replicas of <MODEL> (INGRESS: the API; default: "
                        "ML_SERVE_MIN_REPLICAS).",
        "MAX_REPLICAS": "Most replicas of <MODEL> (default: ML_SERVE_MAX_REPLICAS).",
        "TARGET_ONGOING_REQUESTS": "Requests in flight per replica of <MODEL> that "
                                   "autoscaling aims for.",
        "NUM_CPUS": "CPUs each replica of <MODEL> reserves.",
        "NUM_GPUS": "GPUs each replica of <MODEL> reserves.",
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in (*(o[0] for o in self.scaling_overrides), "serve"):
            scaling = self.scaling(name)
            if scaling.max_replicas < scaling.min_replicas:
                prefix = "SERVE" if name == "serve" else name.upper()
                raise ConfigError(f"ML_{prefix}_MAX_REPLICAS", str(scaling.max_replicas),
                                  f"at least ML_{prefix}_MIN_REPLICAS "
                                  f"({scaling.min_replicas})")

    @classmethod
    def _extra_from_env(cls, env: Mapping[str, str]) -> dict[str, Any]:
        overrides = []
        for key, raw in env.items():
            match = SCALING_ENV.match(key)
            if match is None or match[1] == "SERVE" or not raw.strip():
                continue
            name, kind, minimum = SCALING_FIELDS[match[2]]
            try:
                value = kind(raw.strip())
            except ValueError:
                raise ConfigError(key, raw, "an integer" if kind is int else "a number") \
                    from None
            if value < minimum:
                raise ConfigError(key, raw, f"a number >= {minimum:g}")
            overrides.append((match[1].lower(), name, float(value)))
        return {"scaling_overrides": tuple(sorted(overrides))} if overrides else {}

    @classmethod
    def _extra_rows(cls) -> list[dict[str, str]]:
        return [{"name": f"<model>_{key.lower()}", "env": f"ML_<MODEL>_{key}",
                 "default": f"(ML_SERVE_{key})", "help": text}
                for key, text in cls.SCALING_HELP.items()]

    def scaling(self, deployment: str) -> Scaling:
        """The replicas and resources of `deployment` (a model's name, or INGRESS)."""
        key = deployment.replace("-", "_")
        values: dict[str, float] = {
            "min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
            "num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        values.update({name: value for d, name, value in self.scaling_overrides if d == key})
        return Scaling(int(values["min_replicas"]), int(values["max_replicas"]),
                       values["target_ongoing_requests"], values["num_cpus"],
                       values["num_gpus"])
