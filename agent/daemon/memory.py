"""Giving the heap's free pages back to the OS after each check run (glibc only).

A run allocates a few MiB for a moment (six checks' sockets, TLS handshakes, DNS
messages, the report and its JSON) and frees them. glibc keeps what is freed inside its
heaps, scattered between the blocks that stay, so without help the daemon's RSS creeps
up for the first thousands of runs (bench/daemon_footprint.py, docs/performance.md).
``malloc_trim(0)`` hands every whole free page back (it also releases pages in the
middle of a heap, not only at its top) and takes well under a millisecond here. Where
the C library has no ``malloc_trim`` (musl), :func:`trim` does nothing.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

_trim: Callable[[int], int] | None = None
_loaded = False


def _load() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None)  # the C library the interpreter runs on
        fn = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def trim() -> bool:
    """Return the heap's free pages to the OS; False when the C library cannot."""
    global _trim, _loaded
    if not _loaded:
        _trim, _loaded = _load(), True
    if _trim is None:
        return False
    _trim(0)
    return True
