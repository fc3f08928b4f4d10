"""Child processes that die with their parent: a supervised ComfyUI, the embedded worker of ``serve``.

On Linux the child asks the kernel for a signal when its parent dies (``PR_SET_PDEATHSIG``), so a parent
killed outright (SIGKILL, the OOM killer) leaves no child behind. The kernel sends it when the *thread* that
started the child ends, so start children from a thread that lives as long as the parent (the main thread).
A child that must also survive a missed signal watches its parent's pid (``exit_when_orphaned``).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable

__all__ = ["die_with_parent", "started_to_die_with_parent", "exit_when_orphaned"]

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # prctl options (linux/prctl.h)
PR_GET_PDEATHSIG = 2


def die_with_parent(signum: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen`` that makes the child get ``signum`` when this process dies;
    None off Linux (no such kernel feature)."""
    if sys.platform != "linux":
        return None
    parent = os.getpid()

    def in_child() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signum)
        # The parent may have died between fork and prctl: then no signal would ever come.
        if os.getppid() != parent:
            os._exit(1)

    return in_child


def started_to_die_with_parent() -> bool:
    """Whether this process was started by ``die_with_parent`` (the setting survives exec)."""
    if sys.platform != "linux":
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    value = ctypes.c_int(0)
    libc.prctl(PR_GET_PDEATHSIG, ctypes.byref(value))
    return value.value != 0


def exit_when_orphaned(on_orphaned: Callable[[], None], interval: float = 1.0) -> threading.Thread:
    """Check every ``interval`` s whether the parent changed (it died and we were re-parented) and then call
    ``on_orphaned`` once; for when the death signal was missed or blocked."""
    parent = os.getppid()
    stop = threading.Event()  # never set: the thread lives as long as the process

    def watch() -> None:
        while not stop.wait(interval):
            if os.getppid() != parent:
                log.warning("parent process %d is gone; this process stops too", parent)
                on_orphaned()
                return

    thread = threading.Thread(target=watch, name="parent-watch", daemon=True)
    thread.start()
    return thread
