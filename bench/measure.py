"""Run a benchmark child process and sample the peak resident memory of its whole process tree."""

from __future__ import annotations

import subprocess
import threading
import time


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its children (a JVM and its Python workers, Dask's workers)."""
    import psutil

    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_sampled(command: list[str], what: str) -> tuple[str, int]:
    """(stdout, peak resident bytes) of a child, sampled every 50 ms; a failing child raises, naming ``what``."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak = 0

    def sample() -> None:
        nonlocal peak
        while process.poll() is None:
            peak = max(peak, tree_rss(process.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = process.communicate()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {process.returncode}): {stdout[-2000:]}")
    return stdout, peak
