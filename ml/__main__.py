"""Command line: `python -m ml info|models|predict|evaluate|cards|build`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from ml.config import Settings
from ml.contract import query_of
from ml.engine import Engine
from ml.errors import MLError
from ml.registry import Registry


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m ml", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log model loading")
    commands = parser.add_subparsers(dest="command", required=True)

    info = commands.add_parser("info", help="model cards and settings as JSON")
    info.add_argument("models", nargs="*", help="models to describe (default: all)")

    predict = commands.add_parser(
        "predict", help="run a model on one query",
        description="The query is JSON in the model's own shape (the REST body of "
                    "/api/predict/NAME, with files given by --file instead of base64).")
    predict.add_argument("model", help="a registered model (python -m ml models)")
    predict.add_argument("text", nargs="?", help="shortcut for models that take a text: "
                                                 '--json \'{"text": TEXT}\'')
    predict.add_argument("--json", default=None, help="the query as a JSON object")
    predict.add_argument("--file", action="append", default=[], metavar="FIELD=PATH",
                         help="a file for a bytes field, e.g. image=photo.jpg")

    commands.add_parser("models", help="registered models: name, origin, state")
    commands.add_parser("evaluate", help="held-out evaluation figures of every model")
    commands.add_parser("cards", help="model cards as Markdown (docs/MODEL_CARDS.md)")
    commands.add_parser(
        "build", help="train and export every model's artifacts into ML_CACHE_DIR",
        description="Load and warm every model, so that its trained artifacts (sentiment and "
                    "recommender training, the image model's ONNX graph) are in ML_CACHE_DIR "
                    "before a server starts: the container image's build step. Exits 1 if "
                    "any model failed.")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        registry = Registry(Settings.from_env())
        if args.command == "cards":
            print(cards(registry))
            return 0
        if args.command == "build":
            report = build(registry)
            print(json.dumps(report, indent=2))
            return 0 if all(m["state"] == "ready" for m in report["models"].values()) else 1
        result = _run(args, registry)
    except MLError as exc:
        print(json.dumps({"error": {"code": exc.code, "message": exc.message,
                                    "details": exc.details}}), file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:
        print(json.dumps({"error": {"code": "bad_argument", "message": str(exc)}}),
              file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0


def command_query(cls: Any, text: str | None, raw: str | None, files: Sequence[str]) -> Any:
    """The model's query from the command line's JSON, text and files."""
    values: dict[str, Any] = json.loads(raw) if raw else {}
    if not isinstance(values, dict):
        raise ValueError("--json must be a JSON object")
    if text is not None:
        values["text"] = text
    for spec in files:
        field, _, path = spec.partition("=")
        if not path:
            raise ValueError(f"--file takes FIELD=PATH, not {spec!r}")
        values[field] = Path(path).read_bytes()
    return query_of(cls, values, strict=False)


def _run(args: argparse.Namespace, registry: Registry) -> Any:
    if args.command == "info":
        names = args.models or registry.names()
        return {"models": {name: registry.get(name).info() for name in names},
                "settings": Settings.describe()}
    if args.command == "models":
        return [{"name": s.name, "origin": s.origin, "state": s.state, "reason": s.reason}
                for s in registry.statuses().values()]
    if args.command == "predict":
        cls = registry.model_class(args.model)
        query = command_query(cls, args.text, args.json, args.file)
        return msgspec.to_builtins(Engine(registry).predict(args.model, query).result)
    if args.command == "evaluate":
        return {name: registry.get(name).info()["evaluation"] for name in registry.names()}
    raise AssertionError(args)


def build(registry: Registry) -> dict[str, Any]:
    """Warm every model (which builds and caches its artifacts); what was built, and where."""
    statuses = registry.warmup()
    root = registry.store.root
    return {"cache_dir": str(root),
            "models": {name: {"state": s.state, "load_seconds": s.load_seconds,
                              "reason": s.reason} for name, s in statuses.items()},
            "artifacts": {path.name: path.stat().st_size
                          for path in sorted(root.glob("*.artifact"))}}


CARD = {"name", "version", "task", "architecture", "data", "weights", "training", "source",
        "limits"}


def cards(registry: Registry) -> str:
    """Every model's card (its info()) as Markdown."""
    lines = ["# Model cards", "", "Generated by `python -m ml cards` from each model's "
             "`info()`; the same data `/api/models` serves.", ""]
    for name in registry.names():
        info = registry.get(name).info()
        lines += [f"## {name} ({info['version']})", "",
                  f"- **Task**: {info['task']}", f"- **Architecture**: {info['architecture']}",
                  f"- **Data / weights**: {info.get('data') or info.get('weights')}",
                  f"- **Training**: {info['training']}", f"- **Source**: `{info['source']}`",
                  f"- **Limits**: {info['limits']}"]
        lines += [f"- **{key.replace('_', ' ').capitalize()}**: {value}"  # a model's own fields
                  for key, value in info.items() if isinstance(value, str) and key not in CARD]
        lines += ["", "| evaluation | value |", "|---|---|"]
        lines += [f"| {key} | {value} |" for key, value in _flatten(info["evaluation"])]
        lines.append("")
    return "\n".join(lines)


def _flatten(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(tree, dict) and not (prefix.endswith("confusion_matrix")):
        rows: list[tuple[str, Any]] = []
        for key, value in tree.items():
            rows += _flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return rows
    return [(prefix, json.dumps(tree) if isinstance(tree, (dict, list)) else tree)]


if __name__ == "__main__":
    sys.exit(main())
