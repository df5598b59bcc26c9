"""The Kubernetes and KubeRay manifests under deploy/, loaded as plain data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
KUBERAY = ROOT / "deploy" / "kuberay"
SERVE_CONFIG = ROOT / "deploy" / "ray" / "serve.yaml"


def documents(path: Path) -> list[dict[str, Any]]:
    """The YAML documents of `path` (empty ones dropped)."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def resources(folder: Path = KUBERNETES) -> dict[tuple[str, str], dict[str, Any]]:
    """Every resource under `folder` by (kind, name), kustomization.yaml aside."""
    found = {}
    for path in sorted(folder.glob("*.yaml")):
        for doc in documents(path):
            if doc["kind"] != "Kustomization":
                found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def one(kind: str, folder: Path = KUBERNETES) -> dict[str, Any]:
    """The only resource of `kind` under `folder`."""
    [doc] = [d for (k, _), d in resources(folder).items() if k == kind]
    return doc


def containers(pod_spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Init containers and containers of a pod spec."""
    yield from pod_spec.get("initContainers", [])
    yield from pod_spec["containers"]


def probes(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The container's probes by kind (startupProbe, livenessProbe, readinessProbe)."""
    return {k: v for k, v in container.items() if k.endswith("Probe")}
