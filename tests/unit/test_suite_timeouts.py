"""The suite's own rule for tests that run Airflow tasks in their process (``dag.test``).

Airflow's task runner times a task with ``SIGALRM`` (``setitimer``) and cancels the timer when the task ends,
which cancels pytest-timeout's alarm too: a test that hangs after its first task with a timeout was never ended,
and a hung run waited for CI's own limit, saying nothing of where. pytest-timeout's thread method does not use
the signal: such a test's timeout must name it (``method="thread"``), in the module's ``pytestmark`` and in every
timeout marker of its own.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
RUNS_TASKS = re.compile(r"\b\w*dag\.test\(")


def _timeout_markers(tree: ast.Module) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "pytest.mark.timeout"
    ]


def _thread_method(marker: ast.Call) -> bool:
    return any(
        k.arg == "method" and isinstance(k.value, ast.Constant) and k.value.value == "thread"
        for k in marker.keywords
    )


def _module_markers(tree: ast.Module) -> list[ast.Call]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
        ):
            return _timeout_markers(ast.Module(body=[node], type_ignores=[]))
    return []


def _modules_running_tasks() -> list[Path]:
    return sorted(p for p in TESTS.rglob("test_*.py") if RUNS_TASKS.search(p.read_text()))


def test_the_rule_finds_the_modules_that_run_dags_in_process():
    names = {p.name for p in _modules_running_tasks()}
    assert {"test_retrain_dag.py", "test_bikeshare.py"} <= names


@pytest.mark.parametrize("module", _modules_running_tasks(), ids=lambda p: p.name)
def test_a_module_that_runs_airflow_tasks_in_process_times_its_tests_by_a_thread(module):
    tree = ast.parse(module.read_text())
    own = _module_markers(tree)
    assert own and all(_thread_method(m) for m in own), (
        f"{module.name} runs DAGs in its process: its pytestmark needs pytest.mark.timeout(..., method='thread')"
    )
    wrong = [m.lineno for m in _timeout_markers(tree) if not _thread_method(m)]
    assert not wrong, f"{module.name}: the timeout markers on lines {wrong} need method='thread'"


def test_the_rule_tells_a_signal_timeout_from_a_thread_one():
    signal = ast.parse("import pytest\npytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]\n")
    thread = ast.parse(
        "import pytest\npytestmark = [pytest.mark.slow, pytest.mark.timeout(900, method='thread')]\n"
    )
    assert not all(_thread_method(m) for m in _module_markers(signal))
    assert _module_markers(thread) and all(_thread_method(m) for m in _module_markers(thread))
