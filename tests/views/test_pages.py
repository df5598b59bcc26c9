"""Every page rendered headlessly with Streamlit's AppTest, on the real models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import ml.registry
from ml.artifacts import ArtifactStore
from ml.config import Settings
from ml.image import ImageClassifier
from ml.registry import Entry, Registry
from ml.samples import TEXT_LABELS
from views.shared import MAX_CSV_ROWS, read_text_table, text_columns

ROOT = Path(__file__).resolve().parents[2]


def page(name: str) -> AppTest:
    app = AppTest.from_file(str(ROOT / "views" / f"{name}.py"), default_timeout=90)
    app.run()
    assert not app.exception, app.exception
    return app


@pytest.fixture(autouse=True)
def loaded(registry: Registry) -> None:
    registry.warmup()


def texts_of(app: AppTest) -> str:
    parts = [m.value for m in app.markdown] + [c.value for c in app.caption]
    parts += [str(m.value) for m in app.metric] + [m.label for m in app.metric]
    parts += [e.value for e in app.error] + [w.value for w in app.warning]
    parts += [i.value for i in app.info]
    return "\n".join(str(p) for p in parts)


# -- overview ---------------------------------------------------------------------------------

def test_home_shows_architecture_and_model_cards() -> None:
    app = page("home")
    assert app.title[0].value == "Real-time ML predictions"
    text = texts_of(app)
    for name in ("sentiment", "image", "recommender"):
        assert f"**{name}**" in text
    assert "Held-out accuracy" in text and "NDCG@10" in text
    assert "Process memory" in text


def test_app_entry_is_a_router_over_every_page() -> None:
    source = (ROOT / "app.py").read_text()
    assert "st.navigation(pages(" in source
    assert "ml" not in {line.split()[1] for line in source.splitlines()
                        if line.startswith(("import ", "from "))}
    assert '"home.py"' in (ROOT / "views" / "navigation.py").read_text()


def test_home_links_to_every_other_page_and_the_api() -> None:
    app = page("home")
    links = [element.proto.page for element in app.get("page_link")]
    assert links == ["sentiment", "image", "recommender", "wine", "benchmarks"]
    text = texts_of(app)
    for route in ("/docs", "/health", "/metrics"):
        assert f"]({route})" in text


# -- sentiment --------------------------------------------------------------------------------

def analyse(app: AppTest, text: str) -> AppTest:
    """Type `text` and press Analyse, as a visitor does."""
    app.text_area(key="sentiment_text").input(text).run()
    [button] = [b for b in app.button if b.label == "Analyse"]
    return button.click().run()


def test_sentiment_single_text() -> None:
    app = analyse(page("sentiment"), "I love this wonderful day")
    text = texts_of(app)
    assert ":green[positive]" in text
    assert "Confidence" in text and "in-process" in text
    assert "Words that drove the decision" in text
    assert "toward positive (green, right) or toward negative (red, left)" in text
    # the linear model is sure of this one: the word CNN was not asked, and no phrase is shown
    assert "so the word CNN was not asked" in text and "CNN's filters picked" not in text
    [chart] = [c for c in app.get("arrow_vega_lite_chart") + app.get("vega_lite_chart")
               if "toward positive" in str(c.proto)][:1] or [None]
    assert chart is not None  # the signed chart with its legend
    # term names are not cut at Vega-Lite's default 180 px (a phrase of three words is not)
    assert '"labelLimit":400' in str(chart.proto.spec).replace(" ", "")


def test_sentiment_says_when_the_word_cnn_was_asked() -> None:
    """A text the linear model is unsure of (and gets wrong alone): the page says the word
    CNN was asked, and its phrases are among the terms."""
    app = analyse(page("sentiment"), "I did not enjoy the film.")
    text = texts_of(app)
    assert ":red[negative]" in text
    assert "so the word CNN was asked too" in text
    assert "a phrase of up to three words that the word CNN's filters picked" in text


def test_sentiment_answer_from_the_cache_says_so() -> None:
    """The page's latency is the model's and its explanation's, unless the cache answered."""
    text = "A sentence that only the cache test of the sentiment page sends"
    app = analyse(page("sentiment"), text)
    [first] = [c.value for c in app.caption if "in-process" in c.value]
    assert "with the explanation below" in first and "cache" not in first
    [again] = [c.value for c in analyse(app, text).caption if "in-process" in c.value]
    assert "answered from the prediction cache" in again


def test_sentiment_typing_alone_does_not_predict() -> None:
    app = page("sentiment")
    app.text_area(key="sentiment_text").input("I love this wonderful day").run()
    assert "Confidence" not in texts_of(app)


def test_sentiment_edited_text_never_shows_the_old_answer() -> None:
    app = analyse(page("sentiment"), "I love this wonderful day")
    assert ":green[positive]" in texts_of(app)
    app.text_area(key="sentiment_text").input("I hate this awful day").run()
    text = texts_of(app)
    assert ":green[positive]" not in text and "Confidence" not in text
    assert "press **Analyse**" in text


@pytest.mark.parametrize("text", [pytest.param("🛸🧱", id="unrated-emoji"),  # 😀 now counts
                                  pytest.param("!?… ---", id="punctuation")])
def test_sentiment_without_known_words_says_so(text: str, registry: Registry) -> None:
    app = analyse(page("sentiment"), text)
    assert "No words the model knows were found" in texts_of(app)


@pytest.mark.parametrize(("text", "label"), list(TEXT_LABELS.items()))
def test_every_example_is_one_the_model_gets_right(text: str, label: str,
                                                   registry: Registry) -> None:
    """An example the model gets wrong is never shown."""
    assert registry.get("sentiment").predict_one(text).sentiment == label
    app = page("sentiment")
    [button] = [b for b in app.button if b.help == text]
    button.click().run()
    assert f"[{label}]" in texts_of(app)


def test_sentiment_example_button_fills_the_text() -> None:
    app = page("sentiment")
    app.button[1].click().run()
    assert app.text_area(key="sentiment_text").value.startswith("The update broke")
    assert ":red[negative]" in texts_of(app)


def test_sentiment_without_text_shows_no_result() -> None:
    app = page("sentiment")
    assert "Confidence" not in texts_of(app)
    next(b for b in app.button if b.label == "Analyse").click().run()
    assert "Confidence" not in texts_of(app) and "Type a text first." in texts_of(app)


def test_sentiment_text_box_counts_up_to_the_models_limit() -> None:
    """The box shows a character counter and stops at the model's limit (a longer text
    cannot be typed, so never reaches the model)."""
    app = page("sentiment")
    box = app.text_area(key="sentiment_text")
    assert box.proto.max_chars == 5000
    app = analyse(app, "word " * 1000)
    assert "Confidence" in texts_of(app) and not app.exception


def test_sentiment_batch_of_pasted_lines() -> None:
    app = page("sentiment")
    app.text_area(key="batch_lines").input("great service\nterrible food\nthe bus at nine").run()
    [button] = [b for b in app.button if b.label.startswith("Analyse ")]
    button.click().run()
    assert not app.exception
    table = app.dataframe[0].value
    assert list(table["sentiment"][:2]) == ["positive", "negative"]
    assert len(table) == 3
    assert table["confidence"].between(33, 100).all()  # a percentage, not a share


@pytest.mark.parametrize(("data", "fragment"), [
    pytest.param("caf\xe9;naïve".encode("latin-1"), "not UTF-8", id="latin-1"),
    pytest.param(b"", "not a readable CSV", id="empty"),
    pytest.param(b"a,b\n1,2\n3,4\n", "no column with text", id="numbers-only"),
    pytest.param(b"text\n" + b"hello\n" * (MAX_CSV_ROWS + 1), "at most", id="too-many-rows"),
    pytest.param(b'text\n"unterminated\n', "not a readable CSV", id="broken-quotes"),
])
def test_bad_csv_files_are_explained(data: bytes, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        read_text_table(data)


def test_good_csv_keeps_every_column_and_finds_the_text() -> None:
    frame = read_text_table(b"id,review\n1,great\n2,awful\n")
    assert list(frame.columns) == ["id", "review"]  # the id travels with the results
    assert text_columns(frame) == ["review"]
    assert list(frame["review"]) == ["great", "awful"]


# -- image -------------------------------------------------------------------------------------

def test_image_gallery_default_is_classified() -> None:
    app = page("image")
    assert app.metric[0].label == "Best guess"
    assert app.metric[0].value in {"tabby", "tiger cat", "Egyptian cat"}
    assert "in-process" in texts_of(app)


def test_image_gallery_choice_and_top_k() -> None:
    """The gallery is thumbnails with a button each (no dropdown); the chart's confidence
    axis runs 0-100% whatever the answer."""
    app = page("image")
    assert not app.selectbox
    assert len(app.get("image")) >= 6 and len(app.button) >= 6
    app.button(key="sample-coffee").click().run()
    app.slider[0].set_value(3).run()
    assert app.metric[0].value == "espresso"
    assert not app.exception
    [chart] = app.get("arrow_vega_lite_chart") + app.get("vega_lite_chart")
    assert '"domain":[0,1]' in str(chart.proto.spec).replace(" ", "")


def test_image_answer_from_the_cache_says_so() -> None:
    app = page("image")
    app.button(key="sample-rocket").click().run()
    app.slider[0].set_value(7).run()  # a query no other test asks: first time, the model
    first = [c.value for c in app.caption if "in-process" in c.value]
    assert first and "cache" not in first[0]
    app.run()  # the same image and top-k again
    again = [c.value for c in app.caption if "in-process" in c.value]
    assert again and "answered from the prediction cache" in again[0]


def test_image_limits_read_in_mb_and_agree_with_the_uploader() -> None:
    import tomllib

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    app = page("image")
    app.radio[0].set_value("Upload").run()
    assert f"up to {config['server']['maxUploadSize']} MB" in app.get("file_uploader")[0].help
    assert "TIFF" in app.get("file_uploader")[0].help
    card = texts_of(app)
    assert "max bytes: 10 MB" in card and "{" not in card  # the model card, not JSON


def test_image_upload_without_a_file_shows_nothing() -> None:
    app = page("image")
    app.radio[0].set_value("Upload").run()
    assert not app.metric and not app.exception


# -- recommendations ---------------------------------------------------------------------------

def test_recommendations_for_a_persona() -> None:
    app = page("recommender")
    assert not app.exception
    subheaders = [s.value for s in app.subheader]
    assert "Buy again" in subheaders and "Discover" in subheaders
    recommended = app.dataframe[1].value
    assert len(recommended) == 10 and "score" in recommended.columns


def test_recommendations_with_category_and_limit() -> None:
    app = page("recommender")
    app.selectbox[1].select("MEAT").run()
    app.slider[0].set_value(5).run()
    bought, recommended = app.dataframe[0].value, app.dataframe[1].value
    assert len(recommended) == 5
    assert set(recommended["department"]) == {"Meat"}
    assert len(bought) and set(bought["department"]) == {"Meat"}  # the history too


def test_recommendations_history_counts_purchases_in_plain_words() -> None:
    bought = page("recommender").dataframe[0].value
    assert list(bought.columns) == ["product", "department", "times bought"]
    counts = list(bought["times bought"])
    assert all(isinstance(n, int) and n >= 1 for n in counts), counts


def test_household_ids_sort_as_numbers_and_the_id_field_names_the_range() -> None:
    app = page("recommender")
    ids = app.selectbox[0].options[:-1]
    numbers = [int(option.split(":")[0].lstrip("#")) for option in ids]
    assert numbers == sorted(numbers) and len(numbers) == 12
    app.selectbox[0].select("another id...").run()
    field = app.text_input[0]
    assert "ids from 1 to 2500" in field.help and "have a purchase history" in field.help


def test_unknown_household_says_it_shows_popular_items() -> None:
    app = page("recommender")
    app.selectbox[0].select("another id...").run()
    app.text_input[0].input("999999999").run()
    assert "most popular" in texts_of(app)
    assert "No purchase history." in texts_of(app)


def test_new_customer_cold_start(recommender) -> None:  # type: ignore[no-untyped-def]
    app = page("recommender")
    popular = recommender.recommend("new-customer", limit=40).recommendations
    app.multiselect[0].select(popular[0].item_id).select(popular[3].item_id).run()
    assert "Recommended for you" in [s.value for s in app.subheader]
    assert not app.exception
    latency = [c.value for c in app.caption if "in-process" in c.value][-1]  # the last tab
    assert "cache" not in latency
    app.run()  # the same picks again
    latency = [c.value for c in app.caption if "in-process" in c.value][-1]
    assert "answered from the prediction cache" in latency


def test_new_customer_picker_has_no_select_all() -> None:
    picker = page("recommender").multiselect[0]
    assert picker.proto.HasField("select_all") and picker.proto.select_all == 0


# -- a failed model --------------------------------------------------------------------------

@pytest.fixture
def broken_image_registry(registry: Registry, monkeypatch: pytest.MonkeyPatch
                          ) -> Iterator[None]:
    def broken(settings: Settings, store: ArtifactStore) -> object:
        raise FileNotFoundError("weights file is missing")

    failing = Registry(registry.settings, entries={
        "sentiment": Entry.of(registry.get("sentiment")),
        "image": Entry(broken, cls=ImageClassifier)})
    monkeypatch.setattr(ml.registry, "_default", failing)
    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


@pytest.mark.usefixtures("broken_image_registry")
def test_failed_model_shows_an_error_and_other_pages_work() -> None:
    image = page("image")
    assert "weights file is missing" in texts_of(image)
    assert not image.metric
    sentiment = page("sentiment")
    assert ":green[positive]" in texts_of(analyse(sentiment, "great"))
    home = page("home")
    assert "weights file is missing" in texts_of(home)
