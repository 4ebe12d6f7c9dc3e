"""Keep child processes (mosquitto, the service) from outliving the process that started them."""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import sys

_PR_SET_PDEATHSIG = 1

# Looked up before any fork: the child only makes one libc call (async-signal-safe enough
# for preexec_fn even in a threaded parent).
_libc = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        _libc = None


def child_preexec() -> None:
    """In the child: ask Linux to send SIGTERM when the parent thread dies.

    A safety net for a test run killed with SIGKILL, where ``atexit`` never runs. Linux ties
    this to the thread that forked, so start children from a long-lived thread (the main one).
    """
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
