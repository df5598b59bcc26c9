"""BLAS thread limits: one pin, early, reaching numpy's and scipy's OpenBLAS alike."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# In a fresh process (this one is pinned already): the pin made from a worker thread, as a
# model that trains during warm-up does, before scipy's BLAS was even loaded.
PIN_FROM_A_THREAD = textwrap.dedent("""
    import threading
    import numpy
    from threadpoolctl import threadpool_info
    from ml.threads import single_threaded_blas

    worker = threading.Thread(target=single_threaded_blas)
    worker.start(); worker.join(30)
    pools = {p["filepath"]: p["num_threads"] for p in threadpool_info()
             if p["user_api"] == "blas"}
    print(pools)
    assert len(pools) >= 2 and set(pools.values()) == {1}, pools
""")


def test_the_pin_reaches_both_blas_libraries_from_any_thread() -> None:
    result = subprocess.run([sys.executable, "-c", PIN_FROM_A_THREAD], capture_output=True,
                            text=True, cwd=ROOT, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "2"})
    assert result.returncode == 0, result.stdout + result.stderr
