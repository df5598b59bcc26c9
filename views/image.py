"""Image classification: upload, camera or sample gallery; top-k chart."""

import altair as alt
import pandas as pd
import streamlit as st

from ml.image import ImageQuery
from ml.samples import PHOTOS, sample_jpeg
from views.shared import info_card, latency_caption, limited, model, serve

st.title("Image classification")
classifier = model("image")
if classifier is None:
    st.stop()

source = st.radio("Image source", ["Sample gallery", "Upload", "Camera"], horizontal=True)
image_input = None
if source == "Sample gallery":
    name = st.selectbox("Sample photo", list(PHOTOS), format_func=PHOTOS.get)
    image_input = sample_jpeg(name, quality=92)
elif source == "Upload":
    upload = st.file_uploader("Image file", type=["jpg", "jpeg", "png", "webp", "gif", "bmp",
                                                  "tif", "tiff"])
    if upload is not None:
        image_input = upload.getvalue()
else:
    shot = st.camera_input("Take a photo")
    if shot is not None:
        image_input = shot.getvalue()

top_k = st.slider("Top-k classes", 1, 20, 5)
if image_input is not None:
    decoded, _ = limited(lambda: classifier.preview(image_input))  # type: ignore[attr-defined]
    if decoded is not None:
        result, ms = serve("image", ImageQuery(image_input, top_k=top_k))
        left, right = st.columns([2, 3])
        left.image(decoded, width="stretch")
        if result is not None:
            with right:
                best = result.predictions[0]
                st.metric("Best guess", best.label)
                st.progress(best.confidence, text=f"{best.confidence:.1%} confident")
                latency_caption(ms)
                frame = pd.DataFrame([{"label": p.label, "confidence": p.confidence}
                                      for p in result.predictions])
                st.altair_chart(alt.Chart(frame).mark_bar(color="#2563eb").encode(
                    x=alt.X("confidence:Q", axis=alt.Axis(format="%")),
                    y=alt.Y("label:N", sort="-x")), width="stretch")

info_card(classifier.info())
