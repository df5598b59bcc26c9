"""Benchmarks: call paths side by side, live on this machine; the server's own metrics;
the latest saved harness results."""

import json
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from api.metrics import HttpMetrics, metrics_body
from api.ratelimit import TokenBuckets
from benchmarks import live, report
from views.shared import client, engine, registry, ui_settings

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
COLORS = alt.Scale(domain=list(live.PATH_LABELS.values()),
                   range=["#16a34a", "#2563eb", "#f97316"])


@st.cache_data(ttl=30, show_spinner=False)
def local_api() -> str | None:
    """This process's own API (from its listening socket), if the UI is served with it."""
    return live.local_api_url()


@st.cache_resource(show_spinner=False)
def key_failures() -> TokenBuckets:
    """Wrong keys entered on this page, per visitor address (as the API throttles them)."""
    settings = ui_settings()
    return TokenBuckets(settings.auth_failures_per_minute / 60, settings.auth_failure_burst)


def run_permission() -> tuple[bool, dict[str, str], str]:
    """Whether this visitor may start runs, the headers their HTTP paths send, and why not
    (the rule: `live.may_run`); wrong keys are throttled per address."""
    settings = ui_settings()
    key = None
    if settings.api_keys and settings.ui_benchmarks != "off":
        key = st.text_input("API key", type="password",
                            help="Live runs load the server: they need one of its API keys.")
        if key and key_failures().remaining(client()) < 1:
            return False, {}, "Too many wrong keys from your address; try again later."
    allowed, refusal = live.may_run(settings, key, public=live.listens_publicly())
    if not allowed and key:
        key_failures().take(client())
    return allowed, {"authorization": f"Bearer {key}"} if allowed and key else {}, refusal


st.title("Benchmarks")
st.markdown("The same model called **in-process**, over **HTTP to this very process**, and "
            "through a **microservice hop** (a front API forwarding to a model-server "
            "process), measured now, on this machine.")
api_url = local_api()
allowed, headers, refusal = run_permission()
run: live.LiveRun | None = st.session_state.get("benchmark_run")
elsewhere = live.active_run()
busy = elsewhere is not None and elsewhere is not run

with st.form("benchmark"):
    left, right = st.columns(2)
    model = left.selectbox("Model", registry().names())
    paths = right.multiselect("Call paths", list(live.PATHS), default=list(live.PATHS),
                              format_func=live.PATH_LABELS.get)
    concurrency = left.select_slider("Concurrent requests", [1, 2, 4, 8, 16, 32], value=1)
    seconds = right.slider("Seconds per call path", 1, int(live.MAX_SECONDS), 3)
    submitted = st.form_submit_button("Run", type="primary", icon=":material/play_arrow:",
                                      disabled=not allowed or busy
                                      or (run is not None and run.active))
if refusal:
    st.info(refusal, icon=":material/lock:")
if busy:
    st.info("Another visitor's run is measuring this server now; try again when it is done.",
            icon=":material/hourglass_top:")
if api_url is None:
    st.caption("HTTP paths need the API in this process (`make run`); only in-process "
               "calls can be measured here.")
st.caption("Every path sends the same inputs in the same order, and the prediction cache is "
           "off for the model during the run (here and in the hop's model server), so every "
           "request runs the model. The run's own requests are not rate-limited: they carry a "
           "secret made for this run only. This page refreshes its charts inside the server "
           "it measures, so a few requests wait for a redraw; `python -m benchmarks run` "
           "measures from outside, without that effect.")
if submitted and allowed:
    chosen = tuple(p for p in paths if p == "in-process" or api_url is not None)
    if not chosen:
        st.warning("Choose at least one call path that is available here.")
    else:
        try:
            run = live.start(registry(), model=model, paths=chosen, concurrency=concurrency,
                             seconds=seconds, base_url=api_url, headers=headers,
                             engine=engine())
            st.session_state["benchmark_run"] = run
        except live.RunInProgress as exc:
            st.warning(str(exc))


def samples_frame(current: live.LiveRun, limit: int = 800) -> pd.DataFrame:
    frames = []
    for path, samples in current.samples.items():
        rows = list(samples)
        step = max(1, len(rows) // limit)
        frames.append(pd.DataFrame(rows[::step], columns=["t", "latency"]).assign(
            path=live.PATH_LABELS[path]))
    frame = pd.concat(frames) if frames else pd.DataFrame(columns=["t", "latency", "path"])
    frame["latency_ms"] = frame["latency"].astype(float) * 1e3
    return frame


def render(current: live.LiveRun) -> None:
    if current.active:
        current.heartbeat()
        label = live.PATH_LABELS.get(current.current, "starting")
        st.progress(current.progress, text=current.message or f"measuring {label}...")
        if st.button("Stop", icon=":material/stop:"):
            current.stop()
    elif current.state == "failed":
        st.error(f"The run failed: {current.message}")
    elif failures := current.failures():
        st.error(f"Run {current.state} with errors, so it measured something else than "
                 "predictions and no ratio is shown: " + "; ".join(
                     f"{path}: " + ", ".join(f"{count:,} {what}" for what, count in found.items())
                     for path, found in failures.items()) + ".", icon=":material/error:")
    else:
        st.success(f"Run {current.state}: {current.model}, {current.concurrency} concurrent, "
                   f"{current.seconds:g}s per path.", icon=":material/check:")
    frame = samples_frame(current)
    if frame.empty:
        return
    over_time = alt.Chart(frame).mark_circle(size=12, opacity=0.5).encode(
        x=alt.X("t:Q", title="seconds into the path's run"),
        y=alt.Y("latency_ms:Q", title="latency (ms)", scale=alt.Scale(type="log")),
        color=alt.Color("path:N", scale=COLORS))
    ranked = frame.sort_values("latency_ms").assign(
        quantile=lambda f: f.groupby("path").cumcount() / f.groupby("path")["t"].transform("size"))
    marks = frame.groupby("path")["latency_ms"].quantile([0.5, 0.95, 0.99]).reset_index()
    marks.columns = ["path", "q", "latency_ms"]
    marks["percentile"] = marks["q"].map({0.5: "p50", 0.95: "p95", 0.99: "p99"})
    cdf = alt.Chart(ranked).mark_line().encode(
        x=alt.X("latency_ms:Q", title="latency (ms)", scale=alt.Scale(type="log")),
        y=alt.Y("quantile:Q", title="share of requests"), color=alt.Color("path:N",
                                                                            scale=COLORS))
    rules = alt.Chart(marks).mark_rule(strokeDash=[4, 3]).encode(
        x="latency_ms:Q", color=alt.Color("path:N", scale=COLORS),
        tooltip=["path", "percentile", alt.Tooltip("latency_ms:Q", format=".3f")])
    left, right = st.columns(2)
    left.markdown("**Latency over time**")
    left.altair_chart(over_time, width="stretch")
    right.markdown("**Latency distribution** (dashed: p50, p95, p99)")
    right.altair_chart(cdf + rules, width="stretch")
    summary = pd.DataFrame(current.summary())
    if not summary.empty:
        st.altair_chart(alt.Chart(summary).mark_bar().encode(
            x=alt.X("requests/s:Q"),
            y=alt.Y("path:N", title=None, sort=list(live.PATH_LABELS.values())),
            color=alt.Color("path:N", scale=COLORS, legend=None)), width="stretch")
        st.dataframe(summary, hide_index=True, width="stretch")
        base = summary.set_index("path")["p50 ms"]
        if len(base) > 1 and live.PATH_LABELS["in-process"] in base and not current.failures():
            floor = base[live.PATH_LABELS["in-process"]]
            st.markdown("  \n".join(f"**{p}** is **{v / floor:.1f}x** slower than in-process "
                                    f"(p50)" for p, v in base.items() if v != floor))


if run is not None:
    refresh = 1.0 if run.active else None

    @st.fragment(run_every=refresh)
    def live_view() -> None:
        current: live.LiveRun | None = st.session_state.get("benchmark_run")
        if current is None:
            return
        render(current)
        if refresh and not current.active:
            st.rerun()

    live_view()

st.divider()
st.subheader("This server's own metrics")
models = engine().metrics  # in-process: the very counters /metrics serves
metrics = metrics_body(HttpMetrics.of(models), models, {})
requests, perf = metrics["requests"], metrics["performance"]
if not requests["total"] and not metrics["models"]:
    st.caption("No API requests or model calls yet.")
else:
    cols = st.columns(5)
    cols[0].metric("API requests", f"{requests['total']:,}")
    cols[1].metric("Success rate", f"{requests['success_rate']:.1%}")
    cols[2].metric("p50", f"{perf['p50_ms']:.2f} ms")
    cols[3].metric("p95", f"{perf['p95_ms']:.2f} ms")
    cols[4].metric("p99", f"{perf['p99_ms']:.2f} ms")
    per_model = pd.DataFrame([{"model": name, "calls": m["calls"], "errors": m["errors"],
                               **{k: v for k, v in m["latency"].items()}}
                              for name, m in metrics["models"].items()])
    if not per_model.empty:
        st.dataframe(per_model, hide_index=True, width="stretch")

st.divider()
st.subheader("Latest saved harness run")
saved = next((p for p in (RESULTS / "harness.json", RESULTS / "harness-quick.json")
              if p.exists()), None)
if saved is None:
    st.caption("No saved results yet: run `python -m benchmarks run`.")
else:
    record = json.loads(saved.read_text())
    machine = record["machine"]
    st.caption(f"{saved.name}: {machine['when']} on {machine['cpu']}, {machine['cores']} "
               f"cores, load {machine['load_average']}"
               + (" (busy)" if machine.get("busy") else ""))
    rows = [{"model": model_name, "call path": report.PATH_NAMES.get(path, path),
             "p50 ms (c=1)": levels["c1"].get("p50_ms"),
             "p99 ms (c=1)": levels["c1"].get("p99_ms"),
             **{f"req/s (c={level[1:]})": f.get("throughput_rps")
                for level, f in levels.items() if level != "c1"}}
            for path, models in record["results"]["paths"].items()
            for model_name, levels in models.items()]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    memory = record["results"].get("memory", {})
    if "single_process_mb" in memory:
        st.markdown(f"Memory: one process with the UI and all models "
                    f"**{memory['single_process_mb']:.0f} MiB** vs the microservice split "
                    f"**{memory['microservices_total_mb']:.0f} MiB**.")
