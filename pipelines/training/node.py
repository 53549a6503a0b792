"""A training node: on a host besides the task's, join every torchrun launch of one dataset as it is published.

With ``CT_TRAIN_LAUNCHER=torchrun`` the train task writes its launch to
``<data_root>/training/<dataset>/_launch.json`` (job folder, rendezvous endpoint, nodes, ranks per node,
restarts, timeouts) and starts its own torchrun as one node. Each other host runs::

    CT_DATA_ROOT=s3://bucket/ct CT_DATASET=transactions python -m pipelines.training.node

which waits for a launch it has not run, whose job has no result yet and which is younger than its
``CT_TRAIN_TIMEOUT_S``, and runs the very same torchrun command; then waits for the next. ``--once`` returns
after one launch (a Slurm step, a Kubernetes Job); the exit status is torchrun's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import subprocess
import sys
import time

from pipelines.host import die_with_parent
from pipelines.settings import Settings, get_settings
from pipelines.training import job as jobs
from pipelines.training.launchers import LAUNCH_ENVIRONMENT, Launch, read_launch

log = logging.getLogger("pipelines.training.node")


def pending(settings: Settings, done: set[str]) -> Launch | None:
    """The published launch, when this node should join it."""
    launch = read_launch(settings)
    if launch is None or launch.launch_id in done:
        return None
    age = (dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(launch.started)).total_seconds()
    if age > launch.timeout_s or jobs.read_history(launch.job_uri) is not None:
        return None  # over, one way or the other
    return launch


def join(launch: Launch) -> int:
    """Run the launch's torchrun command on this host; its exit status."""
    import os

    jobs.report_node(launch.job_uri, "node agent")
    log.info("joining launch %s of %s at %s", launch.launch_id, launch.job_uri, launch.rdzv_endpoint)
    completed = subprocess.run(
        launch.command(), env={**os.environ, **LAUNCH_ENVIRONMENT}, check=False, preexec_fn=die_with_parent
    )
    log.info("launch %s ended with exit status %d", launch.launch_id, completed.returncode)
    return completed.returncode


def serve(settings: Settings, once: bool = False, poll_seconds: float = 1.0) -> int:
    done: set[str] = set()
    while True:
        launch = pending(settings, done)
        if launch is not None:
            done.add(launch.launch_id)
            status = join(launch)
            if once:
                return status
        time.sleep(poll_seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--once", action="store_true", help="return after one launch, with torchrun's status")
    parser.add_argument("--poll-seconds", type=float, default=1.0, help="how often to look for a launch")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = get_settings()
    log.info("waiting for torchrun launches of %s under %s", settings.dataset, settings.resolved_data_root)
    return serve(settings, once=args.once, poll_seconds=args.poll_seconds)


if __name__ == "__main__":
    sys.exit(main())
