"""glibc's allocator tuned for a training process that frees and re-allocates the same large
buffers every step."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4


@functools.cache
def keep_freed_memory() -> bool:
    """Serve every buffer from the heap and never hand freed memory back to the kernel.

    By default glibc maps each large buffer freshly from the kernel and unmaps it when freed
    (ConvNet evaluation on 1000 pairs: 25 MB after the first convolution, 37 MB after the second
    with WS on), so every epoch pays the page faults and zeroing again: on the 2-core VM the
    per-epoch evaluation took 0.10-0.15 s instead of 0.09-0.11 s (mnist_compare/accel/README.md). A
    training process reuses the same sizes every step, so its heap stays at the first epoch's
    peak. Only where memory comes from changes, never a number. Returns False where the C
    library is not glibc (nothing done)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    ok = mallopt(_M_MMAP_MAX, 0)  # no buffer gets a mapping of its own, whatever its size
    ok &= mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    ok &= mallopt(_M_TOP_PAD, 64 * 1024 * 1024)
    return bool(ok)
