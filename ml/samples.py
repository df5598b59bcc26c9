"""Sample inputs shipped by installed packages: photos for the gallery, texts for examples."""

from __future__ import annotations

from functools import cache
from typing import Any

PHOTOS = {
    "chelsea": "Chelsea the cat (scikit-image)",
    "coffee": "A cup of coffee (scikit-image)",
    "astronaut": "Astronaut Eileen Collins (scikit-image)",
    "rocket": "A rocket on the launch pad (scikit-image)",
    "china.jpg": "A temple in China (scikit-learn)",
    "flower.jpg": "A flower (scikit-learn)",
}

# Example texts and the label the model gives each (tests/views/test_pages.py checks every
# one against the model: an example it gets wrong is never shown).
TEXT_LABELS = {
    "I absolutely love how smooth the ride was, best trip ever!": "positive",
    "The update broke everything and support never answered. Terrible.": "negative",
    "The new model will be presented at the conference on Thursday.": "neutral",
    "Thanks so much, you made my day!": "positive",
}
TEXTS = tuple(TEXT_LABELS)


def sample_photo(name: str) -> Any:
    """One sample photo as a PIL image; names are the keys of PHOTOS."""
    from PIL import Image

    if name not in PHOTOS:
        raise KeyError(f"unknown sample photo {name!r}; choose from {', '.join(PHOTOS)}")
    if name.endswith(".jpg"):
        from sklearn.datasets import load_sample_image

        return Image.fromarray(load_sample_image(name))
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)())


def sample_photos() -> list[Any]:
    """Every sample photo, in PHOTOS order."""
    return [sample_photo(name) for name in PHOTOS]


@cache
def sample_jpeg(name: str, quality: int = 90) -> bytes:
    """One sample photo as the JPEG bytes an upload would bring."""
    import io

    buffer = io.BytesIO()
    sample_photo(name).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
