"""Basic prediction in-process: no server, the models straight from the ml core.

    python examples/inprocess.py

`ml.predict(name, **fields)` goes through the process-wide engine (validation, micro-batching,
cache, metrics) exactly as a REST request does; its fields are the model's query, the same
names the JSON body of /api/predict/<name> takes.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ml
from ml.samples import sample_jpeg

result = ml.predict("sentiment", text="The new update is fantastic!", options={"detailed": True})
print(f"sentiment: {result.sentiment} ({result.confidence:.0%}), score {result.score:+.2f}")
print("  driven by:", ", ".join(t.term for t in result.terms[:3]))

best = ml.predict("image", image=sample_jpeg("coffee"), top_k=1).predictions[0]
print(f"image: {best.label} ({best.confidence:.0%})")

picks = ml.predict("recommender", user_id="1", limit=3, context={"category": "PRODUCE"})
print(f"recommendations ({picks.strategy}):",
      "; ".join(i.description for i in picks.recommendations))

for status in ml.list_models():  # every served model, plugins included
    print(f"model {status.name}: {status.state} ({status.origin})")
