"""What this host lets the process use."""

from __future__ import annotations


def usable_cores() -> int:
    """The cores this process may run on: the fewest of the machine's, its CPU affinity's and a container's CPU
    quota (cgroup v1 ``cpu.cfs_quota_us`` or v2 ``cpu.max``, rounded up), as joblib counts them;
    ``LOKY_MAX_CPU_COUNT`` lowers it further.

    ``os.cpu_count()`` counts the machine's: a pod limited to 2 CPUs on a 16-core node would start 16 threads or
    ranks, which the quota then throttles to 2 cores' time.
    """
    from joblib import cpu_count

    return max(1, int(cpu_count()))
