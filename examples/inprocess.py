"""Basic prediction in-process: no server, the models straight from the ml core.

    python examples/inprocess.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml import get_model
from ml.samples import sample_photo

sentiment = get_model("sentiment")
result = sentiment.predict_one("The new update is fantastic!", detailed=True)  # type: ignore[attr-defined]
print(f"sentiment: {result.sentiment} ({result.confidence:.0%}), score {result.score:+.2f}")
print("  driven by:", ", ".join(term for term, _ in result.terms[:3]))

image = get_model("image")
best = image.predict_one(sample_photo("coffee"), top_k=1).predictions[0]  # type: ignore[attr-defined]
print(f"image: {best.label} ({best.confidence:.0%})")

recommender = get_model("recommender")
picks = recommender.recommend("1", limit=3, category="produce")  # type: ignore[attr-defined]
print(f"recommendations ({picks.strategy}):", "; ".join(i.description for i in picks.items))
