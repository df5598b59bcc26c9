"""The REST client against a running server (make run, or make api).

    python examples/rest_client.py http://127.0.0.1:8501 [--api-key KEY]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.client import ApiClientError, Client

parser = argparse.ArgumentParser()
parser.add_argument("url", nargs="?", default="http://127.0.0.1:8501")
parser.add_argument("--api-key", default=None)
args = parser.parse_args()

with Client(args.url, api_key=args.api_key) as api:
    print("health:", api.health().status)
    answer = api.sentiment("Support fixed my problem in minutes")
    print(f"sentiment: {answer.sentiment} in {answer.latency_ms:.2f} ms of model time")
    batch = api.batch(["love it", "hate it", "it arrived on Tuesday"])
    print("batch:", [r.sentiment for r in batch.results])
    print("recommend:", api.recommend("1", limit=2).recommendations[0].description)
    try:
        api.sentiment("   ")
    except ApiClientError as error:
        print(f"error handling: {error.status} {error.code} (request {error.request_id})")
