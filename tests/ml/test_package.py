"""`import ml` is cheap and silent: no web frameworks, no model libraries, no files, no output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
import ml
print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))
"""


def test_import_ml_pulls_in_no_web_or_model_library_and_writes_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "ML_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                            env=env, cwd=tmp_path, check=True, timeout=60)
    modules = set(json.loads(result.stdout))
    for heavy in ("streamlit", "starlette", "uvicorn", "torch", "sklearn", "implicit", "pandas"):
        assert heavy not in modules, f"import ml imported {heavy}"
    assert result.stderr == ""
    assert list(tmp_path.iterdir()) == [], "import ml created files"


def test_public_names() -> None:
    import ml

    assert {"Registry", "Settings", "get_model", "list_models", "MLError"} <= set(ml.__all__)


def test_importing_the_api_creates_no_registry(tmp_path: Path) -> None:
    probe = ("import api.app, ml.registry, os\n"
             "assert ml.registry._default is None\n"
             "print('ok')")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ML_DEVICE": "not-a-device"}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=120)
    assert result.stdout.strip() == "ok", result.stderr


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function."""
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


ML = {f"ml.{p.stem}": p for p in (ROOT / "ml").glob("*.py") if p.stem != "__init__"}


def test_ml_imports_nothing_from_the_http_layer_or_web_frameworks() -> None:
    for name, path in ML.items():
        outside = {m for m in imports_of(path) if m.split(".")[0] in {
            "api", "views", "benchmarks", "server", "app", "starlette", "streamlit",
            "uvicorn", "fastapi", "httpx", "h11", "httptools"}}
        assert not outside, f"{name} imports {sorted(outside)}"


def test_ml_has_no_import_cycle() -> None:
    graph = {name: {m for m in imports_of(path) if m in ML} - {name}
             for name, path in ML.items()}
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for child in sorted(graph[node]):
            assert state.get(child) != "open", " -> ".join([*trail, node, child])
            if child not in state:
                visit(child, [*trail, node])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_ml_settings_have_no_http_settings() -> None:
    from ml.config import Settings

    http = ("KEY", "CORS", "RATE", "PROXIES", "HEADER", "URL_FETCH", "UI_", "AUTH")
    assert not [row["env"] for row in Settings.describe()
                if any(word in row["env"] for word in http)]


SERVING_LAYERS = ("api", "views", "benchmarks")
MODEL_NAMES = ("sentiment", "image", "recommender", "recommend", "recommendations", "wine")


def test_no_layer_branches_on_a_model_s_name() -> None:
    """Layers learn about models from the contract: no `if name == "sentiment"` anywhere, and
    no table keyed by model names outside the registry (ml/registry.py)."""
    import ast

    for layer in SERVING_LAYERS:
        for path in (ROOT / layer).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Compare) and all(
                        isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
                    names = [c.value for c in [node.left, *node.comparators]
                             if isinstance(c, ast.Constant)]
                    assert not set(names) & set(MODEL_NAMES), \
                        f"{path.relative_to(ROOT)}:{node.lineno} compares with a model name"
                if isinstance(node, ast.Dict):
                    keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
                    assert len(keys & set(MODEL_NAMES)) < 2, \
                        f"{path.relative_to(ROOT)}:{node.lineno} keys a table by model names"


def test_ml_modules_stay_small() -> None:
    """One job a module: none of ml/ grows far past ~300 lines."""
    sizes = {name: len(path.read_text().splitlines()) for name, path in ML.items()}
    assert max(sizes.values()) <= 360, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
