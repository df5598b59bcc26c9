"""Overview: what this is, the one-process architecture, model cards and live health."""

import psutil
import streamlit as st

from views.navigation import pages
from views.shared import registry, ui_settings

st.title("Real-time ML predictions")
st.markdown(
    "Sentiment analysis, image classification and product recommendations, served by "
    "**one Python process**: this UI and the REST API (`/api/...`) call the very same loaded "
    "models, in microseconds, with no network hop in between.")

st.graphviz_chart("""
digraph {
  rankdir=LR; node [shape=box, style="rounded,filled", fillcolor="#eef2ff", fontname="sans"];
  browser [label="Browser"]; client [label="REST client"];
  subgraph cluster_p { label="one process, one port"; style=rounded; color="#94a3b8";
    ui [label="Streamlit UI  /"]; api [label="Starlette API  /api, /health, /metrics"];
    reg [label="ml registry\\n(one copy of each model)", fillcolor="#dcfce7"]; }
  browser -> ui; client -> api; ui -> reg [label="in-process call"];
  api -> reg [label="in-process call"];
}""")

reg = registry()
loading = not reg.ready


@st.fragment(run_every=2.0 if loading else None)  # polls only while a model is loading
def model_cards() -> None:
    """Model cards with live state; refreshes itself while anything is still loading."""
    statuses = list(reg.statuses().items())
    st.subheader("Models")
    per_row = 4
    columns = [column for start in range(0, len(statuses), per_row)
               for column in st.columns(per_row)]
    for column, (name, status) in zip(columns, statuses, strict=False):
        with column, st.container(border=True, height=370):
            icon = {"ready": ":material/check_circle:", "failed": ":material/error:"}.get(
                status.state, ":material/hourglass_empty:")
            st.markdown(f"**{name}** {icon}")
            st.caption(f"{status.version or 'not loaded yet'} · {status.state}"
                       + (f" · loaded in {status.load_seconds:.2f}s"
                          if status.load_seconds else ""))
            if status.state == "ready":
                info = reg.get(name).info()
                st.write(info["task"])
                headline = info.get("headline")  # the card's figure that matters most
                if headline:
                    st.metric(headline["label"], headline["value"],
                              delta=headline.get("delta"), help=headline.get("help"))
                if status.origin != "built-in":
                    st.caption(f"from {status.origin}")
            elif status.state == "failed":
                st.error(status.reason or "failed to load")
    memory = psutil.Process().memory_info().rss / 2**20
    st.caption(f"Process memory: {memory:,.0f} MB for the UI, the API and every loaded model.")
    if loading and reg.ready:
        st.rerun()  # the whole page, once: its fragment then stops polling


model_cards()
if loading:
    if st.button("Load all models now", icon=":material/download:"):
        with st.spinner("Loading and warming every model..."):
            reg.warmup()
        st.rerun()

st.subheader("Try it")
for link in pages([shown for shown in ui_settings().ui_pages if shown != "overview"]):
    st.page_link(link)

st.subheader("Use it from code")
st.code("""curl -s localhost:8501/api/predict/sentiment -H 'content-type: application/json' \\
  -d '{"text": "I love this!"}'""", language="bash")
st.markdown("[API docs](/docs) · [Health](/health) · [Metrics](/metrics) (Prometheus)")
