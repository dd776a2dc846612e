"""Keeping freed memory in the process between jobs (glibc's ``malloc``), so jobs stop
page-faulting.

A 1 MP job allocates and frees ~20 MB of arrays. By default glibc gives the top of its heap
back to the kernel once more than ~2× its (adaptive) mmap threshold is free, so every job
asks for the same pages again: ~5,400 minor page faults per 1 MP job, each one the kernel
zeroing a fresh page, ~10 ms of system time on a ~100 ms job (measured, README "Benchmarks").
:func:`retain_freed_memory` raises the trim threshold so up to ``retain_bytes`` of free heap
stay in the process for the next job. Allocations larger than ``MMAP_THRESHOLD`` (a 12 MP
image's big arrays) still get their own mappings and go back to the kernel when freed.

The cost: a process's resident memory stays near its high-water mark of the jobs it has run
(up to ``retain_bytes`` above what it is using), instead of falling back after each job.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["MMAP_THRESHOLD", "retain_freed_memory"]

#: Allocations at least this big get their own mapping (glibc's ``M_MMAP_THRESHOLD``): 32 MiB,
#: the largest glibc accepts on 64-bit and the value its adaptive threshold climbs to anyway.
MMAP_THRESHOLD = 32 * 1024 * 1024

# mallopt(3) parameter numbers, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


@functools.cache
def _libc_mallopt() -> Any:
    # The process's own symbols, where the C library's are: no library search (ctypes.util's
    # find_library runs a subprocess, ~3 ms).
    try:
        process = ctypes.CDLL(None)
    except (OSError, TypeError):  # no dlopen(NULL) on this platform
        return None
    mallopt = getattr(process, "mallopt", None)  # glibc's; musl and macOS have none
    if mallopt is not None:
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        mallopt.restype = ctypes.c_int
    return mallopt


def retain_freed_memory(retain_bytes: int) -> bool:
    """Keep up to ``retain_bytes`` of freed heap in this process (and in children it forks
    later) instead of returning it to the kernel after every job.

    ``retain_bytes`` ≤ 0 leaves glibc's defaults alone. Returns whether the settings took
    effect: False where the C library is not glibc (there is nothing to tune).
    """
    if retain_bytes <= 0:
        return False
    mallopt = _libc_mallopt()
    if mallopt is None:
        return False
    retain = min(retain_bytes, 2**31 - 1)  # mallopt takes an int
    # Setting either one turns glibc's adaptive thresholds off, so both are set: the mmap
    # threshold where the adaptive one would have settled, the trim threshold above it.
    if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 or mallopt(_M_TRIM_THRESHOLD, retain) != 1:
        log.warning("mallopt refused the allocator settings; glibc's defaults stay")
        return False
    return True
