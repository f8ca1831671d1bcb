"""Keeping freed memory for the next large message.

glibc hands back to the kernel what a multi-MB buffer held as soon as it is freed (it is
mapped on its own, or trimmed off the heap's top), so the next message of that size
faults every page in again: about 3 us a page on this project's VMs, over 3 ms for each
4 MiB result copied twice. Raising the two thresholds keeps such buffers in the heap to be
reused. Done once, when the first large message arrives, so that a session of small
messages never loads ctypes; on a C library without mallopt (musl) nothing changes.
"""

from __future__ import annotations

import contextlib
import threading

# Buffers up to this size come from the heap, not from a mapping of their own (glibc's
# upper bound for the setting on 64-bit).
MMAP_THRESHOLD = 32 << 20
# A heap keeps up to this much free memory at its top before giving it back: at most a
# few large messages' worth, so a burst does not leave the relay holding more for good.
TRIM_THRESHOLD = 32 << 20
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_done = threading.Event()
_lock = threading.Lock()


def keep_large_buffers() -> None:
    """Make freed multi-MB buffers reusable without faulting them in again; idempotent."""
    if _done.is_set():
        return
    with _lock:
        if _done.is_set():
            return
        _done.set()
        import ctypes  # only here: ~2 ms to import, paid once a large message arrives

        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None)
            libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
