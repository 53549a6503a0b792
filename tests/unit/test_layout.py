"""The house's rules, checked on the code: imports run one way between folders, and pure cores stay light."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pipelines"
GROUND = {"settings", "config_files", "host"}
# Each folder and what it may import besides the ground floor (docs/architecture.md has the same table).
ALLOWED = {
    "engines": set(),
    "data": {"engines"},
    "model": {"data", "engines"},
    "release": {"data", "engines"},
    "evaluation": {"data", "engines", "model", "release"},
    "training": {"data", "engines", "model", "evaluation", "release"},
    "serving": {"data", "engines", "model", "release"},
    "monitoring": {"data", "engines", "model", "release", "evaluation", "serving"},
    "cli": {"data", "engines", "model", "release", "evaluation", "training", "serving", "monitoring"},
}


def _imports(path: Path) -> set[str]:
    """The ``pipelines`` folders a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "pipelines" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_imports_point_down_the_layers(folder):
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        wrong = _imports(path) - ALLOWED[folder] - GROUND - {folder}
        assert not wrong, f"{path.relative_to(PACKAGE.parent)} imports {sorted(wrong)}, above {folder}/"


def test_the_ground_floor_imports_nothing_of_the_project():
    for name in GROUND:
        assert _imports(PACKAGE / f"{name}.py") <= GROUND - {name}, name


def test_every_folder_has_a_place_in_the_table():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert folders == set(ALLOWED)


@pytest.mark.parametrize(
    "module",
    [
        "pipelines.evaluation.gate",
        "pipelines.evaluation.policy",
        "pipelines.evaluation.metrics",
        "pipelines.data.contract",
        "pipelines.data.features",
        "pipelines.data.validation",
        "pipelines.model.signature",
        "pipelines.model",
        "pipelines.monitoring.policy",
        "pipelines.monitoring.verdict",
        "pipelines.monitoring.served",
    ],
)
def test_pure_cores_import_no_engine_framework_or_registry(module):
    heavy = ["torch", "mlflow", "pyspark", "dask", "distributed", "evidently", "sklearn"]
    script = (
        f"import sys, json; import {module}; print(json.dumps([m for m in {heavy!r} if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(done.stdout) == [], f"{module} imports {done.stdout.strip()}"
