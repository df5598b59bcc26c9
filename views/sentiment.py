"""Sentiment: one text with explanation, or many lines / a CSV file in batch."""

import altair as alt
import msgspec
import pandas as pd
import streamlit as st

from ml.samples import TEXTS
from ml.sentiment import SentimentOptions, SentimentQuery
from views.shared import (
    MAX_CSV_ROWS,
    info_card,
    latency_caption,
    model,
    read_text_table,
    serve,
    serve_many,
    text_columns,
)

st.title("Sentiment analysis")
sentiment = model("sentiment")
if sentiment is None:
    st.stop()

single, batch = st.tabs(["One text", "Batch"])
with single:
    examples = st.columns(len(TEXTS))
    for column, example in zip(examples, TEXTS, strict=True):
        if column.button(example[:32] + "...", help=example, width="stretch"):
            st.session_state["sentiment_text"] = example
    text = st.text_area("Text", key="sentiment_text", height=100,
                        placeholder="Type a sentence, or pick an example above")
    if text.strip():
        result, ms = serve("sentiment", SentimentQuery(text, SentimentOptions(detailed=True)))
        if result is not None:
            colour = {"positive": "green", "negative": "red", "neutral": "gray"}[result.sentiment]
            left, middle, right = st.columns(3)
            left.markdown(f"### :{colour}[{result.sentiment}]")
            middle.metric("Confidence", f"{result.confidence:.1%}")
            right.metric("Score", f"{result.score:+.2f}", help="P(positive) - P(negative)")
            st.progress((result.score + 1) / 2,
                        text=f"score {result.score:+.2f}  (-1 negative ... +1 positive)")
            latency_caption(ms)
            shares = msgspec.structs.asdict(result.probabilities)
            probabilities = pd.DataFrame({"class": list(shares),
                                          "probability": list(shares.values())})
            st.altair_chart(alt.Chart(probabilities).mark_bar().encode(
                x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1])),
                y=alt.Y("class:N", sort=["positive", "neutral", "negative"]),
                color=alt.Color("class:N", scale=alt.Scale(
                    domain=["positive", "neutral", "negative"],
                    range=["#16a34a", "#94a3b8", "#dc2626"]), legend=None)),
                width="stretch")
            if result.terms:
                st.markdown("**Words that drove the decision**")
                terms = pd.DataFrame([(t.term, t.weight) for t in result.terms],
                                     columns=["term", "weight"])
                st.altair_chart(alt.Chart(terms).mark_bar().encode(
                    x="weight:Q", y=alt.Y("term:N", sort="-x"),
                    color=alt.condition("datum.weight > 0", alt.value("#2563eb"),
                                        alt.value("#f97316"))), width="stretch")

with batch:
    source = st.radio("Input", ["Paste lines", "Upload CSV"], horizontal=True)
    texts: list[str] = []
    if source == "Paste lines":
        pasted = st.text_area("One text per line", height=150, key="batch_lines")
        texts = [line for line in pasted.splitlines() if line.strip()]
    else:
        upload = st.file_uploader("CSV file", type=["csv"])
        if upload is not None:
            try:
                frame = read_text_table(upload.getvalue())
            except ValueError as exc:
                st.error(f"Could not use that file: {exc}.", icon=":material/error:")
            else:
                column = st.selectbox("Text column", text_columns(frame))
                texts = frame[column].dropna().astype(str).tolist()
    texts = [t for t in texts if t.strip()]
    if len(texts) > MAX_CSV_ROWS:
        st.warning(f"{len(texts):,} texts given; only the first {MAX_CSV_ROWS:,} are analysed.")
        texts = texts[:MAX_CSV_ROWS]
    if texts and st.button(f"Analyse {len(texts)} texts", type="primary"):
        progress = st.progress(0.0, text="Analysing...")
        rows, total_ms = [], 0.0
        for start in range(0, len(texts), 500):
            chunk = texts[start:start + 500]
            results, ms = serve_many("sentiment", [SentimentQuery(t) for t in chunk])
            if results is None:
                break
            total_ms += ms
            rows += [{"text": t, "sentiment": r.sentiment, "confidence": round(r.confidence, 4),
                      "score": round(r.score, 4)} for t, r in zip(chunk, results, strict=True)]
            progress.progress(min(1.0, (start + len(chunk)) / len(texts)),
                              text=f"{start + len(chunk)} of {len(texts)}")
        if rows:
            table = pd.DataFrame(rows)
            latency_caption(total_ms)
            st.altair_chart(alt.Chart(table).mark_bar().encode(
                x="count()", y=alt.Y("sentiment:N", sort=["positive", "neutral", "negative"]),
                color=alt.Color("sentiment:N", legend=None)), width="stretch")
            st.dataframe(table, width="stretch", hide_index=True)
            st.download_button("Download CSV", table.to_csv(index=False), "sentiment.csv",
                               "text/csv", icon=":material/download:")

info_card(sentiment.info())
