"""What machine a benchmark ran on, recorded with every result."""

from __future__ import annotations

import os
import platform
import sys
from datetime import UTC, datetime
from importlib import metadata
from typing import Any


def cpu_model() -> str:
    """The CPU's marketing name, where the OS tells it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU, cores, load, and library versions, for the record."""
    versions = {}
    for package in ("torch", "scikit-learn", "implicit", "numpy", "starlette", "streamlit",
                    "uvicorn"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    cores = os.cpu_count() or 1
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": cores,
        "load_average": [round(x, 2) for x in load],
        "busy": load[0] > 0.5 * cores,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": versions,
    }
