"""A container's CPU quota bounds the ranks, threads and Dask workers this project starts, as it bounds the time
they get: a process sees the quota as a container does, its cgroup's files where the host's were."""

import json
import os
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

CPU_V1 = Path("/sys/fs/cgroup/cpu")

PROBE = """
import json, os
from pipelines.engines.dask_engine import dask_cores
from pipelines.host import usable_cores
from pipelines.model.runtime import set_threads
from pipelines.settings import get_settings
from pipelines.training.train import resolve_world_size

print(json.dumps({
    "machine": os.cpu_count(),
    "cores": usable_cores(),
    "ranks": resolve_world_size("auto", 0, 10_000, "cpu", 10**9, 1),
    "dask_workers": dask_cores(get_settings()),
    "model_threads": set_threads(0),
}))
"""


def _quota_writable() -> str | None:
    """Why a cgroup of one CPU cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root, to make a cgroup and a mount namespace"
    if not (CPU_V1 / "cpu.cfs_quota_us").exists():
        return "needs the cgroup v1 cpu controller at /sys/fs/cgroup/cpu"
    return None


@pytest.mark.skipif(_quota_writable() is not None, reason=str(_quota_writable()))
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="a quota of one CPU changes nothing on one core")
def test_a_quota_of_one_cpu_gives_one_rank_one_thread_and_one_dask_worker(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    group = CPU_V1 / f"ct-test-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    try:
        (group / "cpu.cfs_period_us").write_text("100000")
        (group / "cpu.cfs_quota_us").write_text("100000")  # one CPU's time
        # The shell joins the cgroup, then, in a mount namespace of its own, sees the cgroup's files where the
        # controller's root was: what a container (Podman, Kubernetes) shows the processes in it.
        inner = (
            f"mount --bind {group} {CPU_V1} && exec {shlex.quote(sys.executable)} {shlex.quote(str(probe))}"
        )
        script = f"echo $$ > {group}/cgroup.procs && exec unshare --mount bash -c {shlex.quote(inner)}"
        done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        seen = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        group.rmdir()
    assert seen["machine"] >= 2  # os.cpu_count() still counts the machine's
    assert seen == {**seen, "cores": 1, "ranks": 1, "dask_workers": 1, "model_threads": 1}
