"""What this host lets the process use."""

from __future__ import annotations

import ctypes
import os
import signal
import sys


def usable_cores() -> int:
    """The cores this process may run on: the fewest of the machine's, its CPU affinity's and a container's CPU
    quota (cgroup v1 ``cpu.cfs_quota_us`` or v2 ``cpu.max``, rounded up), as joblib counts them;
    ``LOKY_MAX_CPU_COUNT`` lowers it further.

    ``os.cpu_count()`` counts the machine's: a pod limited to 2 CPUs on a 16-core node would start 16 threads or
    ranks, which the quota then throttles to 2 cores' time.
    """
    from joblib import cpu_count

    return max(1, int(cpu_count()))


_PR_SET_PDEATHSIG = 1
# Looked up once, here: in a child between fork and exec (a preexec_fn) an import or a dlopen could wait for a
# lock another thread of the parent held at the fork, for ever.
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when the process that started it dies (Linux's
    ``PR_SET_PDEATHSIG``), however that one dies: SIGKILL, or SIGTERM with Python's default handler, run no
    cleanup of their own. Used as the ``preexec_fn`` of a launcher (torchrun) and at the start of each rank, so
    that a killed training task takes its launcher and ranks with it: a retry would otherwise train beside them
    in the same job folder. Does nothing where the kernel has no such call."""
    if _PRCTL is None:
        return
    parent = os.getppid()
    if _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent died before the call: no signal will come
        os.kill(os.getpid(), signal.SIGKILL)
