"""Giving freed memory back to the operating system (glibc's allocator).

By default glibc raises its mmap threshold each time a large block is freed, up to 32 MiB,
so after a few large images have been decoded, later ones of that size come from the heap,
and when they are freed the memory stays with the process: resident memory ratchets up and
does not come down after a burst. `return_large_blocks()` pins the threshold, so that every
block of 1 MiB or more is mapped on its own and unmapped when freed; `trim()` hands back
what the heap holds free. Both are no-ops where glibc is not the allocator.

Measured with the red-team suite (one process, every attack class in a row): with both,
RSS 434 MiB after warm-up and 444 MiB after the attacks (+2%), and four concurrent 12 Mpx
PNGs raised the peak by 47 MiB; without them, 474 MiB, 585 MiB (+23%) and 186 MiB.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from functools import cache

logger = logging.getLogger(__name__)
M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
LARGE_BLOCK = 1 << 20


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both must exist (glibc)
    except (OSError, AttributeError):
        return None
    return libc


def return_large_blocks(threshold: int = LARGE_BLOCK) -> bool:
    """Map every allocation of `threshold` bytes or more on its own, so that freeing it
    returns it to the OS at once. Process-wide; call once at start-up. True if applied."""
    libc = _libc()
    if libc is None:
        return False
    applied = bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
    logger.debug("mmap threshold pinned at %d bytes: %s", threshold, applied)
    return applied


def trim() -> bool:
    """Return the free memory at the top of every heap to the OS. True if any was."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
