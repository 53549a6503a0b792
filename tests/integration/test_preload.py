"""What a warm worker imports before it forks: every library the stages use, and nothing a fork cannot copy."""

from __future__ import annotations

import ast
import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipelines import preload

pytestmark = pytest.mark.slow  # a fresh interpreter importing torch, MLflow and Evidently: seconds

PACKAGE = Path(__file__).resolve().parents[2] / "pipelines"


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


def _libraries_the_package_imports() -> set[str]:
    """Top-level names of what ``pipelines`` imports (at the top of a file or inside a function), its CLI
    aside, less the standard library and itself."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        if "cli" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
    return found - set(sys.stdlib_module_names) - {"pipelines", "__future__"}


@pytest.fixture(scope="module")
def preloaded() -> dict:
    """A fresh interpreter's state after :func:`preload`: what it imported and what it opened."""
    return _fresh_interpreter(
        """
        import json, os, sys, threading
        import psutil
        fds = set(os.listdir("/proc/self/fd"))
        from pipelines.preload import preload
        seconds = preload()
        opened = [os.readlink(f"/proc/self/fd/{fd}") for fd in set(os.listdir("/proc/self/fd")) - fds
                  if os.path.exists(f"/proc/self/fd/{fd}")]
        found = {
            "timed": sorted(seconds),
            "loaded": sorted({name.split(".")[0] for name in sys.modules}),
            "project": sorted(name for name in sys.modules if name.startswith("pipelines.")),
            "threads": [t.name for t in threading.enumerate()],
            "files": [path for path in opened if path.startswith("/")],
            "connections": [str(c) for c in psutil.Process().net_connections(kind="inet")],
        }
        # What a task's first report still imports: Evidently's drift widgets, as the monitor draws them.
        import numpy as np, pandas as pd
        from evidently import DataDefinition, Dataset, Report
        from evidently.metrics import DriftedColumnsCount, ValueDrift
        rng = np.random.default_rng(0)
        frames = [pd.DataFrame({"x": rng.normal(shift, 1, 500), "c": rng.choice(["a", "b"], 500)})
                  for shift in (1, 0)]
        definition = DataDefinition(numerical_columns=["x"], categorical_columns=["c"])
        from plotly.basedatatypes import BaseFigure
        figures, init = [], BaseFigure.__init__
        BaseFigure.__init__ = lambda self, *a, **k: (figures.append(1), init(self, *a, **k))[1]
        before = set(sys.modules)
        report = Report([DriftedColumnsCount(), ValueDrift(column="x"), ValueDrift(column="c")])
        report.run(*(Dataset.from_pandas(f, data_definition=definition) for f in frames)).get_html_str(False)
        found["report_imported"] = sorted(n for n in set(sys.modules) - before if n.startswith("plotly"))
        found["report_figures"] = len(figures)
        print(json.dumps(found))
        """
    )


def test_every_library_the_stages_import_is_preloaded_or_left_out_with_a_reason(preloaded):
    assert preloaded["timed"] == sorted(set(preload.MODULES))
    libraries = _libraries_the_package_imports()
    not_covered = libraries - set(preloaded["loaded"]) - set(preload.NOT_PRELOADED)
    assert not not_covered, (
        f"add them to pipelines/preload.py (MODULES or NOT_PRELOADED): {sorted(not_covered)}"
    )
    # The reasons stay true: what is left out is neither loaded nor gone from the package.
    assert not set(preload.NOT_PRELOADED) & set(preloaded["loaded"])
    assert set(preload.NOT_PRELOADED) <= libraries


def test_the_project_s_own_code_is_left_to_the_task(preloaded):
    # A task runs the pipelines code on disk (the code its lineage tags name), not a copy the scheduler
    # imported when it started; only this module is loaded.
    assert preloaded["project"] == ["pipelines.preload"]


def test_nothing_a_fork_cannot_copy_is_opened(preloaded):
    # A fork copies only the thread that forks: a Python thread started here would be missing in every task.
    assert preloaded["threads"] == ["MainThread"]
    # An open file or connection would be shared by every task forked from the worker.
    assert preloaded["files"] == []
    assert preloaded["connections"] == []


def test_a_task_s_first_report_finds_plotly_s_figures_warm(preloaded):
    # Plotly imports a module per figure property on first use: about 200 for this report when cold.
    assert preloaded["report_figures"] > 0, "the report drew no plotly figure: nothing to warm"
    assert preloaded["report_imported"] == []


def test_preload_names_the_module_it_cannot_import():
    with pytest.raises(ModuleNotFoundError, match="pipelines.no_such_stage"):
        preload.preload(("json", "pipelines.no_such_stage"))


def test_a_worker_preloads_what_it_can_and_warns_of_the_rest(caplog):
    with caplog.at_level(logging.WARNING, logger="pipelines.preload"):
        seconds = preload.preload(("json", "pipelines.no_such_stage", "csv"), strict=False)
    assert list(seconds) == ["json", "csv"]
    assert "not preloaded: pipelines.no_such_stage" in caplog.text
