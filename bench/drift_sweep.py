"""A sweep of generated changes, each a column of a reference and a current window, for checking this
project's drift against plain Evidently on the raw rows (tests/integration/test_drift_sweep.py, bench/drift.py).

Every change is one column ``c<i>`` of both windows: a base distribution (normal, across zero, lognormal
like an amount, exponential, gamma, heavy-tailed t, uniform, integer ages, a flag, a four-valued code, a
near-constant column, a category), changed in one way: a mean shift or a scale change of a given size, the
values above the 99th percentile stretched, one outlier row in either window, a changed share of a value,
a new category, more nulls. Unchanged twins are in the sweep too, so false drift shows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipelines.data.contract import Contract

Sampler = Callable[[np.random.Generator, int], np.ndarray]
CONTINUOUS: dict[str, Sampler] = {
    "normal": lambda r, n: r.normal(100, 15, n),
    "across_zero": lambda r, n: r.normal(0, 1, n),
    "lognormal": lambda r, n: r.lognormal(4, 1, n),
    "exponential": lambda r, n: r.exponential(50, n),
    "gamma": lambda r, n: r.gamma(2, 30, n),
    "heavy_t": lambda r, n: 50 + 5 * r.standard_t(3, n),
    "uniform": lambda r, n: r.uniform(0, 1000, n),
}
SHIFTS = (0.0, 0.02, 0.04, 0.06, 0.08, 0.09, 0.1, 0.11, 0.12, 0.15, 0.2, 0.3)
SCALES = (1.05, 1.1, 1.2, 1.4)
CATEGORIES = ["a", "b", "c", "d", "e"]
CATEGORY_SHARES = np.array([0.4, 0.25, 0.15, 0.12, 0.08])


@dataclass(frozen=True)
class Change:
    column: str
    base: str
    kind: str  # shift | scale | tail | outlier_current | outlier_reference | share | new_category | nulls
    size: float
    spec: dict[str, Any]  # the contract's column spec


def _outlier(base: str, values: np.ndarray) -> float:
    """One row far out: the issue's amount of 50,000, else a thousand standard deviations above the mean."""
    return 50_000.0 if base == "lognormal" else float(values.mean() + 1_000 * values.std())


class _Sweep:
    """The two windows being built, one column per change."""

    def __init__(self, rows: int, seed: int):
        self.rows, self.rng = rows, np.random.default_rng(seed)
        self.reference: dict[str, np.ndarray] = {}
        self.current: dict[str, np.ndarray] = {}
        self.changes: list[Change] = []

    def add(
        self, base: str, kind: str, size: float, ref: np.ndarray, cur: np.ndarray, spec: dict[str, Any]
    ) -> None:
        name = f"c{len(self.changes):03d}"
        self.reference[name], self.current[name] = ref, cur
        self.changes.append(Change(name, base, kind, size, spec))

    def continuous(self, base: str, sample: Sampler) -> None:
        rng, rows, number = self.rng, self.rows, {"type": "float", "nullable": True}
        for shift in SHIFTS:
            ref, cur = sample(rng, rows), sample(rng, rows)
            self.add(base, "shift", shift, ref, cur + shift * ref.std(), number)
        for scale in SCALES:
            ref, cur = sample(rng, rows), sample(rng, rows)
            self.add(base, "scale", scale, ref, cur.mean() + (cur - cur.mean()) * scale, number)
        for stretch in (1.75, 2.0):
            ref, cur = sample(rng, rows), sample(rng, rows)
            top = np.percentile(cur, 99)
            self.add(base, "tail", stretch, ref, np.where(cur > top, cur * stretch, cur), number)
        for side in ("current", "reference"):
            ref, cur = sample(rng, rows), sample(rng, rows)
            far = _outlier(base, ref)
            (cur if side == "current" else ref)[7] = far
            self.add(base, f"outlier_{side}", far, ref, cur, number)
        ref, cur = sample(rng, rows), sample(rng, rows)  # a real shift, with an outlier in the reference
        ref[7] = _outlier(base, ref)
        self.add(base, "shift_outlier_reference", 0.2, ref, cur + 0.2 * ref.std(), number)
        ref, cur = sample(rng, rows), sample(rng, rows)
        cur[rng.random(rows) < 0.05] = np.nan
        self.add(base, "nulls", 0.05, ref, cur, number)

    def ages(self) -> None:
        rng, rows, number = self.rng, self.rows, {"type": "float", "nullable": True}
        for years in (0, 1, 2, 3, 4, 5, 8):
            ref, cur = rng.integers(18, 90, rows).astype(float), rng.integers(18, 90, rows).astype(float)
            self.add("age", "shift", years, ref, cur + years, number)
        ref, cur = rng.integers(18, 90, rows).astype(float), rng.integers(18, 90, rows).astype(float)
        cur[7] = 120.0
        self.add("age", "outlier_current", 120.0, ref, cur, number)

    def few_values(self) -> None:
        rng, rows = self.rng, self.rows
        spec = {"type": "float", "nullable": True, "drift": "jensenshannon"}
        for rate in (0.1, 0.105, 0.11, 0.12, 0.13, 0.15, 0.2, 0.3):
            ref, cur = (rng.random(rows) < 0.1).astype(float), (rng.random(rows) < rate).astype(float)
            self.add("flag", "share", rate, ref, cur, spec)
        for moved in (0.0, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15):
            ref = rng.choice([1.0, 2.0, 3.0, 4.0], rows, p=[0.4, 0.3, 0.2, 0.1])
            cur = rng.choice([1.0, 2.0, 3.0, 4.0], rows, p=[0.4 - moved, 0.3, 0.2, 0.1 + moved])
            self.add("code", "share", moved, ref, cur, spec)
        for rare in (0.005, 0.006, 0.01, 0.02, 0.05, 0.1):
            ref = np.where(rng.random(rows) < 0.005, rng.integers(1, 4, rows), 0).astype(float)
            cur = np.where(rng.random(rows) < rare, rng.integers(1, 4, rows), 0).astype(float)
            self.add("near_constant", "share", rare, ref, cur, spec)

    def categories(self) -> None:
        rng, rows = self.rng, self.rows
        spec = {"type": "category", "nullable": True, "allowed": [*CATEGORIES, "new"]}

        def draw(shares: np.ndarray = CATEGORY_SHARES) -> np.ndarray:
            return rng.choice(CATEGORIES, rows, p=shares).astype(object)

        for moved in (0.0, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3):
            shares = np.clip(CATEGORY_SHARES + np.array([-moved, 0, 0, 0, moved]), 0, None)
            self.add("category", "share", moved, draw(), draw(shares / shares.sum()), spec)
        for share in (0.001, 0.01, 0.02, 0.05, 0.1):
            cur = draw()
            cur[rng.random(rows) < share] = "new"
            self.add("category", "new_category", share, draw(), cur, spec)
        cur = draw()
        cur[7] = "new"
        self.add("category", "outlier_current", 1, draw(), cur, spec)


def build(rows: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, list[Change]]:
    """The two windows (one column per change) and what each column's change is."""
    sweep = _Sweep(rows, seed)
    for base, sample in CONTINUOUS.items():
        sweep.continuous(base, sample)
    sweep.ages()
    sweep.few_values()
    sweep.categories()
    keys = {"id": np.arange(rows).astype(str), "ts": pd.Timestamp("2026-11-01", tz="UTC")}
    return (
        pd.DataFrame(keys | sweep.reference).assign(y=sweep.rng.integers(0, 2, rows)),
        pd.DataFrame(keys | sweep.current).assign(y=sweep.rng.integers(0, 2, rows)),
        sweep.changes,
    )


def contract(changes: list[Change]) -> Contract:
    return contract_of({change.column: change.spec for change in changes})


def contract_of(features: dict[str, dict[str, Any]], dataset: str = "drift_sweep") -> Contract:
    """A contract of these feature columns (name -> spec), a string id, a timestamp and a binary label."""
    specs: dict[str, Any] = {"id": {"type": "string"}, "ts": {"type": "timestamp"}}
    specs["y"] = {"type": "int", "allowed": [0, 1]}
    specs |= {name: {"role": "feature"} | spec for name, spec in features.items()}
    return Contract.model_validate(
        {
            "dataset": dataset,
            "entity_id": "id",
            "event_time": "ts",
            "label": "y",
            "source": {"uri": "unused"},
            "splits": {"train": 70, "validation": 15, "holdout": 15},
            "columns": specs,
        }
    )


def evidently_scores(reference: pd.DataFrame, current: pd.DataFrame, chosen: Contract) -> dict[str, float]:
    """Plain Evidently: its stat test of each column (the contract's method) on the raw rows, nulls dropped."""
    from evidently.legacy.calculations.stattests import jensenshannon_stat_test, wasserstein_stat_test
    from evidently.legacy.core import ColumnType

    tests = {"wasserstein": wasserstein_stat_test, "jensenshannon": jensenshannon_stat_test}
    scores = {}
    for name in chosen.feature_columns:
        method, threshold = chosen.drift_test(name)
        kind = ColumnType.Categorical if chosen.columns[name].type == "category" else ColumnType.Numerical
        result = tests[method](reference[name].dropna(), current[name].dropna(), kind, threshold)
        scores[name] = float(result.drift_score)
    return scores


def agreement(
    ours: dict[str, Any], theirs: dict[str, float], changes: list[Change], margin: float = 0.005
) -> dict[str, Any]:
    """Verdicts and scores against Evidently's, and whether one outlier row changed a verdict."""
    verdict_differs, score_differs, near = [], [], 0
    differences = []
    for change in changes:
        mine, score = ours["columns"][change.column], theirs[change.column]
        threshold = mine["threshold"]
        close = abs(score - threshold) <= margin
        near += close
        differences.append(abs(mine["score"] - score))
        if mine["drifted"] != (score >= threshold) and not close:
            verdict_differs.append((change, mine["score"], score))
        if abs(mine["score"] - score) > margin and not close:
            score_differs.append((change, mine["score"], score))
    twins = {(c.base, c.kind, c.size): c for c in changes}
    outlier_flips = []
    for change in changes:
        if change.kind in ("outlier_current", "outlier_reference"):  # the twin: the same base, unchanged
            twin = twins.get((change.base, "shift", 0.0)) or twins.get((change.base, "share", 0.0))
            if twin and ours["columns"][change.column]["drifted"] != ours["columns"][twin.column]["drifted"]:
                outlier_flips.append(change)
        if change.kind == "shift_outlier_reference":
            twin = twins[(change.base, "shift", 0.2)]
            if ours["columns"][change.column]["drifted"] != ours["columns"][twin.column]["drifted"]:
                outlier_flips.append(change)
    return {
        "changes": len(changes),
        "verdicts_agree": len(changes) - len(verdict_differs),
        "within_margin_of_threshold": near,
        "max_score_difference": float(max(differences)),
        "verdict_differs": verdict_differs,
        "score_differs": score_differs,
        "outlier_flips": outlier_flips,
    }
