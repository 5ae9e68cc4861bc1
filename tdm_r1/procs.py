"""Worker processes that die with the process that started them.

A pool worker (OCR engines: ~300 MB each) blocked on its task queue does not notice that the main
process was killed with SIGKILL: it is re-parented to init and lives on. :func:`die_with_parent`,
run first in a worker's initializer, makes that impossible twice over: the kernel sends SIGKILL
when the worker's parent exits (Linux ``PR_SET_PDEATHSIG``; with ``forkserver`` the parent is the
fork server, which itself exits when the main process dies), and a daemon thread exits the worker
once the sentinel of the process that requested it closes (any platform, any start method).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading

#: ``<linux/prctl.h>``: deliver a signal to this process when its parent dies.
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Call in a child process: it ends as soon as its parent (or requesting process) is gone."""
    parent_pid = os.getppid()
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - a libc without prctl
            pass
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)
    parent = multiprocessing.parent_process()
    if parent is not None and getattr(parent, "_sentinel", None) is not None:

        def watch() -> None:
            parent.join()  # returns when the requesting process's end of the sentinel pipe closes
            os._exit(1)

        threading.Thread(target=watch, name="die-with-parent", daemon=True).start()
