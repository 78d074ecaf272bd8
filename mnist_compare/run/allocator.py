"""glibc's allocator tuned for a training process that frees and re-allocates the same large
buffers every step."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_MAX_THRESHOLD = 32 * 1024 * 1024  # glibc's upper limit on 64-bit systems


@functools.cache
def keep_freed_memory() -> bool:
    """Serve buffers up to 32 MiB from the heap and never hand freed memory back to the kernel.

    By default glibc maps each large buffer (a ConvNet's activations on 1000 evaluation pairs:
    ~25 MB) freshly from the kernel and unmaps it when freed, so every epoch pays the page faults
    and zeroing again: on the 2-core VM that made the ConvNet's per-epoch evaluation 1.6x slower
    and its 50-epoch run ~13% slower (docs/study.md, Performance). Only where memory comes from
    changes, never a number. Returns False where the C library is not glibc (nothing done)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_MAX_THRESHOLD)
    ok &= mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    ok &= mallopt(_M_TOP_PAD, 64 * 1024 * 1024)
    return bool(ok)
