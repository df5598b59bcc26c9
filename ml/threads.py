"""Thread pools of numeric libraries in a serving process.

BLAS thread limits are process-wide state, so they are set in one place, once: a serving
process, and any process that trains a model, runs numpy's and scipy's BLAS on one thread.

A served model gets its parallelism from concurrent requests; a multi-threaded GEMV per
request oversubscribes the cores (measured on 2 cores, 32 concurrent in-process
recommendations: 25 req/s with OpenBLAS's default threads, 2,492 req/s single-threaded).
Training wants one thread too: implicit parallelises ALS itself, and the sentiment solver's
path (so the artifact) is then the same whatever the machine.

Why not a scoped limit around training: a limit's restore is process-wide and lands under
another thread still training; and with the OpenBLAS that numpy and scipy bundle (0.3.31,
pthreads), once the main thread has set a limit, a limit set from another thread is ignored
(measured: main 2, then a worker 1 -> still 2). So the pin happens early, in the main thread
where it can (the engine is made at import by server.py; the test session pins at start),
and is never undone. torch's and ONNX Runtime's own pools are separate and untouched.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_pinned = False


def single_threaded_blas() -> None:
    """Pin the BLAS pools of numpy and scipy to one thread, for the rest of the process."""
    global _pinned
    with _lock:
        if _pinned:
            return
        # numpy and scipy each bundle an OpenBLAS; a limit reaches only libraries loaded
        import numpy  # noqa: F401
        import scipy.linalg  # noqa: F401
        from threadpoolctl import ThreadpoolController

        ThreadpoolController().select(user_api="blas").limit(limits=1)
        _pinned = True
