"""Batch processing: score a CSV of texts in chunks and write the results.

    python examples/batch.py reviews.csv --column text --out scored.csv

Each chunk is one `ml.predict_many` call: validated once, cache hits answered, the rest one
vectorised prediction through the same engine the REST API uses.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ml

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("csv_file", type=Path)
parser.add_argument("--column", default="text")
parser.add_argument("--out", type=Path, default=Path("scored.csv"))
parser.add_argument("--chunk", type=int, default=1000)
args = parser.parse_args()

with args.csv_file.open(encoding="utf-8", newline="") as handle:
    rows = [row for row in csv.DictReader(handle) if row.get(args.column, "").strip()]
started = time.perf_counter()
with args.out.open("w", encoding="utf-8", newline="") as handle:
    writer = csv.DictWriter(handle, [*rows[0].keys(), "sentiment", "confidence", "score"]
                            if rows else ["sentiment"])
    writer.writeheader()
    for start in range(0, len(rows), args.chunk):
        chunk = rows[start:start + args.chunk]
        results = ml.predict_many("sentiment", [{"text": row[args.column]} for row in chunk])
        for row, result in zip(chunk, results, strict=True):
            writer.writerow({**row, "sentiment": result.sentiment,
                             "confidence": f"{result.confidence:.4f}",
                             "score": f"{result.score:.4f}"})
print(f"scored {len(rows)} rows in {time.perf_counter() - started:.2f}s -> {args.out}")
