"""What a warm worker imports before it forks: every stage's libraries, and nothing a fork cannot copy."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from pipelines import preload

pytestmark = pytest.mark.slow  # a fresh interpreter importing torch, MLflow and Evidently: seconds


def _fresh_interpreter(code: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_preload_imports_what_each_stage_imports_and_starts_no_python_thread():
    found = _fresh_interpreter(
        """
        import json, sys, threading
        from pipelines.preload import MODULES, preload
        seconds = preload()
        # The heavy libraries a stage reaches on its first call, so a task forked from here imports none.
        heavy = ["torch", "torch._dynamo", "mlflow", "mlflow.store.tracking.sqlalchemy_store", "evidently",
                 "dask.dataframe", "pandera.pandas", "sklearn.metrics", "scipy.stats", "pyarrow.parquet"]
        print(json.dumps({
            "timed": sorted(seconds),
            "listed": sorted(MODULES),
            "missing": [name for name in heavy if name not in sys.modules],
            "threads": [t.name for t in threading.enumerate()],
        }))
        """
    )
    assert found["timed"] == found["listed"]
    assert found["missing"] == []
    # A fork copies only the thread that forks: a Python thread started here would be missing in every task.
    assert found["threads"] == ["MainThread"]


def test_preload_names_the_module_it_cannot_import():
    with pytest.raises(ModuleNotFoundError, match="pipelines.no_such_stage"):
        preload.preload(("json", "pipelines.no_such_stage"))
