"""Sentiment: one text with explanation, or many lines / a CSV file in batch."""

import altair as alt
import msgspec
import pandas as pd
import streamlit as st

from ml.engine import Served
from ml.samples import TEXTS
from ml.sentiment import SentimentOptions, SentimentQuery, SentimentResult
from ml.sentiment_cnn import BLANK, PHRASE
from ml.sentiment_scoring import SPELLING
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
# served blended with the word CNN (the default; ML_SENTIMENT_CNN=false: the linear model
# alone): for a text the linear model is unsure of, the CNN's phrases are terms too
SCORER = getattr(sentiment, "scorer", None)
BLENDED = getattr(SCORER, "cnn", None) is not None

CLASSES = ["positive", "neutral", "negative"]
CLASS_COLOURS = alt.Scale(domain=CLASSES, range=["#16a34a", "#94a3b8", "#dc2626"])
PUSH_COLOURS = alt.Scale(domain=["toward positive", "toward negative"],
                         range=["#16a34a", "#dc2626"])
TERM_LABEL_PX = 400  # room for the longest term names (phrases, spellings)


def analyse(text: str) -> None:
    """Predict `text` and remember the answer together with the text it belongs to."""
    served, ms = serve("sentiment", SentimentQuery(text, SentimentOptions(detailed=True)))
    st.session_state["sentiment_answer"] = (text, served, ms) if served is not None else None


def show(text: str, served: Served, ms: float) -> None:
    result: SentimentResult = served.result
    colour = {"positive": "green", "negative": "red", "neutral": "gray"}[result.sentiment]
    left, middle, right = st.columns(3)
    left.markdown(f"### :{colour}[{result.sentiment}]")
    middle.metric("Confidence", f"{result.confidence:.1%}")
    right.metric("Score", f"{result.score:+.2f}", help="P(positive) - P(negative)")
    st.progress((result.score + 1) / 2,
                text=f"score {result.score:+.2f}  (-1 negative ... +1 positive)")
    latency_caption(ms, cached=served.cached, work=", with the explanation below")
    shares = msgspec.structs.asdict(result.probabilities)
    probabilities = pd.DataFrame({"class": list(shares), "probability": list(shares.values())})
    st.altair_chart(alt.Chart(probabilities).mark_bar().encode(
        x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
        y=alt.Y("class:N", sort=CLASSES),
        color=alt.Color("class:N", scale=CLASS_COLOURS, legend=None)), width="stretch")
    st.markdown("**Words that drove the decision**")
    # the word CNN's answer to a text without a word it knows belongs with the prior
    seen = [term for term in result.terms or () if term.term != BLANK]
    if not any(ch.isalnum() for term in seen
               for ch in term.term.removeprefix(SPELLING).removeprefix(PHRASE)):
        st.info("No words the model knows were found in this text: unseen words count only "
                "through their letter groups and emoji without a rating not at all, so the "
                "answer rests on "
                + ("punctuation alone." if seen else "the model's prior alone."),
                icon=":material/help:")
    asked = BLENDED and SCORER.blended([text])[0]  # type: ignore[union-attr]
    if BLENDED:
        gate = f"{SCORER.gate:.0%}"  # type: ignore[union-attr]
        st.caption(f"The linear model was unsure (top probability below {gate}), so the word "
                   "CNN was asked too and the two answers were averaged." if asked else
                   f"The linear model was sure (top probability {gate} or more), so the word "
                   "CNN was not asked.")
    if not result.terms:
        return
    st.caption("Each bar is a word or word pair of the text, a word's spelling (its letter "
               "groups, which carry over to words the model never saw), "
               + ("a lexicon score of rated words, or a phrase of up to three words that the "
                  "word CNN's filters picked" if asked else "or a lexicon score of rated "
                  "words")
               + ": how far it pushed the answer toward positive (green, right) or toward "
               "negative (red, left).")
    terms = pd.DataFrame([(t.term, t.toward_positive) for t in result.terms],
                         columns=["term", "push"])
    terms["direction"] = ["toward positive" if v > 0 else "toward negative"
                          for v in terms["push"]]
    st.altair_chart(alt.Chart(terms).mark_bar().encode(
        x=alt.X("push:Q", title="push toward negative (-) or positive (+)"),
        y=alt.Y("term:N", sort="-x", title=None, axis=alt.Axis(labelLimit=TERM_LABEL_PX)),
        color=alt.Color("direction:N", scale=PUSH_COLOURS,
                        legend=alt.Legend(title=None, orient="bottom")),
        tooltip=["term", alt.Tooltip("push:Q", format="+.3f")]), width="stretch")


single, batch = st.tabs(["One text", "Batch"])
with single:
    examples = st.columns(len(TEXTS))
    for column, example in zip(examples, TEXTS, strict=True):
        if column.button(example[:32] + "...", help=example, width="stretch"):
            st.session_state["sentiment_text"] = example
            analyse(example)
    st.caption(":material/info: Known weak spots: " + sentiment.info()["limits"])
    text = st.text_area("Text", key="sentiment_text", height=100,
                        max_chars=sentiment.max_chars,
                        placeholder="Type a sentence, or pick an example above")
    if st.button("Analyse", type="primary", icon=":material/psychology:"):
        if text.strip():
            analyse(text)
        else:
            st.caption("Type a text first.")
    answer = st.session_state.get("sentiment_answer")
    if answer is not None:
        analysed, served, ms = answer
        if analysed == text:
            show(analysed, served, ms)
        else:  # never a stale answer beside edited text
            st.caption("The text changed: press **Analyse** for its answer.")

with batch:
    source = st.radio("Input", ["Paste lines", "Upload CSV"], horizontal=True)
    frame = pd.DataFrame({"text": []})
    column = "text"
    if source == "Paste lines":
        pasted = st.text_area("One text per line", height=150, key="batch_lines")
        frame = pd.DataFrame({"text": pasted.splitlines()})
    else:
        upload = st.file_uploader("CSV file", type=["csv"])
        if upload is not None:
            try:
                frame = read_text_table(upload.getvalue())
            except ValueError as exc:
                st.error(f"Could not use that file: {exc}.", icon=":material/error:")
            else:
                column = st.selectbox("Text column", text_columns(frame))
    # the rows with text, every column of the upload kept
    rows = frame[frame[column].notna() & (frame[column].astype(str).str.strip() != "")]
    if len(rows) > MAX_CSV_ROWS:
        st.warning(f"{len(rows):,} texts given; only the first {MAX_CSV_ROWS:,} are analysed.")
        rows = rows.iloc[:MAX_CSV_ROWS]
    texts = rows[column].astype(str).tolist()
    if texts and st.button(f"Analyse {len(texts)} texts", type="primary"):
        progress = st.progress(0.0, text="Analysing...")
        answers, total_ms = [], 0.0
        for start in range(0, len(texts), 500):
            chunk = texts[start:start + 500]
            results, ms = serve_many("sentiment", [SentimentQuery(t) for t in chunk])
            if results is None:
                break
            total_ms += ms
            answers += results
            progress.progress(min(1.0, (start + len(chunk)) / len(texts)),
                              text=f"{start + len(chunk)} of {len(texts)}")
        if answers:
            table = rows.iloc[:len(answers)].assign(
                sentiment=[r.sentiment for r in answers],
                confidence=[round(r.confidence * 100, 1) for r in answers],
                score=[round(r.score, 4) for r in answers])
            latency_caption(total_ms)
            st.altair_chart(alt.Chart(table).mark_bar().encode(
                x=alt.X("count():Q", title="texts", axis=alt.Axis(format="d", tickMinStep=1)),
                y=alt.Y("sentiment:N", sort=CLASSES),
                color=alt.Color("sentiment:N", scale=CLASS_COLOURS, legend=None)),
                width="stretch")
            st.dataframe(table, width="stretch", hide_index=True, column_config={
                "confidence": st.column_config.NumberColumn("confidence", format="%.1f%%")})
            st.download_button("Download CSV", table.rename(
                columns={"confidence": "confidence %"}).to_csv(index=False), "sentiment.csv",
                "text/csv", icon=":material/download:")

info_card(sentiment.info())
