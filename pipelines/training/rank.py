"""A rank's entry point under torchrun: ``python -m pipelines.training.rank JOB_URI``.

It binds the rank to its launcher before anything slow is imported. torch takes seconds to import, and the
kernel's parent-death signal covers only a parent alive when it is asked for: a launcher killed in those seconds
would otherwise leave the rank to train on beside the task's retry.
"""

from __future__ import annotations

import sys

from pipelines.host import die_with_parent


def main(argv: list[str]) -> None:
    die_with_parent()
    from pipelines.training import ddp_worker  # torch: seconds

    ddp_worker.run(argv[0])


if __name__ == "__main__":
    main(sys.argv[1:])
