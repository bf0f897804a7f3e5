"""Process settings for long-running calibration processes (CLI, workers, benchmarks).

A 4k×4k plane is 64 MB; glibc returns such blocks to the kernel when freed,
so every exposure pays first-touch page faults again (measured here: ~2 ms
per MB inside the VM, about a third of a whole exposure's measurement time).
Keeping freed blocks in the heap lets the next exposure reuse them.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
KEEP_BYTES = 1 << 30


def reuse_freed_memory() -> bool:
    """Ask glibc to keep freed large blocks for reuse; False where that is not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(
            libc.mallopt(M_TRIM_THRESHOLD, 2 * KEEP_BYTES - 1)
        )
    except (OSError, AttributeError):
        return False
