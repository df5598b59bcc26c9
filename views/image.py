"""Image classification: upload, camera or sample gallery; top-k chart."""

import io

import altair as alt
import pandas as pd
import streamlit as st

from ml.image import ImageQuery
from ml.samples import PHOTOS, sample_jpeg, sample_photo
from views.shared import info_card, latency_caption, limited, model, registry, serve

st.title("Image classification")
classifier = model("image")
if classifier is None:
    st.stop()

MB = 2**20
MAX_MB = registry().settings.max_image_bytes / MB
# the formats the decoder opens (ml.decoding.FORMATS), as the uploader's file extensions
EXTENSIONS = ["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"]


@st.cache_data(show_spinner=False)
def thumbnail(name: str) -> bytes:
    """A small JPEG of a sample photo, for the gallery."""
    from PIL import ImageOps

    image = ImageOps.fit(sample_photo(name), (320, 240))  # one shape: the row lines up
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


source = st.radio("Image source", ["Sample gallery", "Upload", "Camera"], horizontal=True)
image_input = None
if source == "Sample gallery":
    names = list(PHOTOS)
    chosen = st.session_state.setdefault("image_sample", names[0])
    for column, name in zip(st.columns(len(names)), names, strict=True):
        column.image(thumbnail(name), width="stretch")
        if column.button(PHOTOS[name].split(" (")[0], key=f"sample-{name}", width="stretch",
                         type="primary" if name == chosen else "secondary"):
            st.session_state["image_sample"] = chosen = name
            st.rerun()
    image_input = sample_jpeg(chosen, quality=92)
elif source == "Upload":
    upload = st.file_uploader(
        "Image file", type=EXTENSIONS,
        help=f"JPEG, PNG, WebP, GIF, BMP or TIFF, up to {MAX_MB:g} MB.")
    if upload is not None:
        image_input = upload.getvalue()
else:
    shot = st.camera_input("Take a photo")
    if shot is not None:
        image_input = shot.getvalue()

top_k = st.slider("Top-k classes", 1, 20, 5)
result_area = st.empty()  # one place for the answer: a rejected image replaces the last one
if image_input is not None:
    with result_area.container():
        decoded, _ = limited(lambda: classifier.preview(image_input))  # type: ignore[attr-defined]
        if decoded is not None:
            served, ms = serve("image", ImageQuery(image_input, top_k=top_k))
            result = served.result if served is not None else None
            left, right = st.columns([2, 3])
            left.image(decoded, width="stretch")
            if result is not None:
                with right:
                    best = result.predictions[0]
                    st.metric("Best guess", best.label)
                    st.progress(best.confidence, text=f"{best.confidence:.1%} confident")
                    latency_caption(ms, cached=served is not None and served.cached)
                    frame = pd.DataFrame([{"label": p.label, "confidence": p.confidence}
                                          for p in result.predictions])
                    st.altair_chart(alt.Chart(frame).mark_bar(color="#2563eb").encode(
                        x=alt.X("confidence:Q", axis=alt.Axis(format="%"),
                                scale=alt.Scale(domain=[0, 1])),
                        y=alt.Y("label:N", sort="-x", title=None)), width="stretch")

info_card(classifier.info())
