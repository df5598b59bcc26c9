"""Command line: `python -m ml info|predict|recommend|evaluate`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ml.config import Settings
from ml.errors import MLError
from ml.registry import Registry


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m ml", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log model loading")
    commands = parser.add_subparsers(dest="command", required=True)

    info = commands.add_parser("info", help="model cards and settings as JSON")
    info.add_argument("models", nargs="*", help="models to describe (default: all)")

    predict = commands.add_parser("predict", help="run a model on one input")
    kinds = predict.add_subparsers(dest="model", required=True)
    sentiment = kinds.add_parser("sentiment", help="classify the sentiment of a text")
    sentiment.add_argument("text")
    sentiment.add_argument("--detailed", action="store_true", help="add the driving terms")
    image = kinds.add_parser("image", help="classify an image file")
    image.add_argument("path", type=Path)
    image.add_argument("--top-k", type=int, default=5)

    recommend = commands.add_parser("recommend", help="recommend products for a household")
    recommend.add_argument("user_id")
    recommend.add_argument("--limit", type=int, default=10)
    recommend.add_argument("--category", default=None, help="department, e.g. PRODUCE")
    recommend.add_argument("--include-purchased", action="store_true")

    commands.add_parser("evaluate", help="held-out evaluation figures of every model")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        registry = Registry(Settings.from_env())
        result = _run(args, registry)
    except MLError as exc:
        print(json.dumps({"error": {"code": exc.code, "message": exc.message,
                                    "details": exc.details}}), file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(json.dumps({"error": {"code": "not_found", "message": str(exc)}}),
              file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0


def _run(args: argparse.Namespace, registry: Registry) -> Any:
    if args.command == "info":
        names = args.models or registry.names()
        cards = {name: registry.get(name).info() for name in names}
        return {"models": cards, "settings": Settings.describe()}
    if args.command == "predict" and args.model == "sentiment":
        model = registry.get("sentiment")
        return _plain(model.predict_one(args.text, detailed=args.detailed))  # type: ignore[attr-defined]
    if args.command == "predict" and args.model == "image":
        model = registry.get("image")
        return _plain(model.predict_one(args.path.read_bytes(), top_k=args.top_k))  # type: ignore[attr-defined]
    if args.command == "recommend":
        model = registry.get("recommender")
        return _plain(model.recommend(args.user_id, limit=args.limit,  # type: ignore[attr-defined]
                                      category=args.category,
                                      exclude_purchased=not args.include_purchased))
    if args.command == "evaluate":
        return {name: registry.get(name).info()["evaluation"] for name in registry.names()}
    raise AssertionError(args)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
