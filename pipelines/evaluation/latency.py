"""One-row latency that a busy neighbour cannot decide: interleaved rounds, a robust statistic, a re-measure.

A process sharing the cores can only add time to a call, never remove it, and it adds it in bursts: one
stall of a second among 200 calls is the whole p99 of that sample. So the challenger is timed in several
rounds, each round alternating a challenger call with a call of a reference timed under exactly the same
conditions (the champion; with no champion, the fixed :func:`reference_workload`), and the figure judged
against the budget is the **median over rounds of each round's p99**: a stall spoils one round, not the
median.

:func:`verdict` is pure and shared by evaluate (which re-measures while a verdict is ``inconclusive``) and
the gate (which judges the figures evaluate recorded):

- ``pass``: the robust p99 is within the budget;
- ``fail``: over the budget in every round, and slower than the reference by more than the policy's ratio
  (or with nothing to compare with): a really slow model;
- ``inconclusive``: over the budget, but not in every round, or no slower than the reference measured in
  the same rounds (the machine, not the model, is slow). Evaluate measures again; after the last attempt
  an inconclusive verdict passes when the median over every round of every attempt is within the budget,
  or when the reference, timed side by side, was as slow (within the ratio); otherwise it fails closed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

Call = Callable[[], Any]
_MATRIX = np.random.default_rng(0).normal(size=(64, 64))


def reference_workload() -> float:
    """A fixed small computation timed in the champion's place when there is none: it meets the same load
    as the challenger in each round, so a busy machine shows in it, and a slow model does not."""
    return float(np.linalg.norm(_MATRIX @ _MATRIX[0]))


def _timed(call: Call, clock: Callable[[], float]) -> float:
    started = clock()
    call()
    return (clock() - started) * 1000


def measure(
    challenger: Call,
    champion: Call | None,
    *,
    rounds: int,
    samples: int,
    warmup: int,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """One attempt: ``rounds`` rounds of ``samples`` calls of each model, interleaved call by call, in ms."""
    for _ in range(warmup):
        challenger()
        if champion is not None:
            champion()
    per_round: dict[str, list[list[float]]] = {"challenger": [], "champion": []}
    for _ in range(rounds):
        mine, theirs = np.empty(samples), np.empty(samples)
        for i in range(samples):
            mine[i] = _timed(challenger, clock)
            if champion is not None:
                theirs[i] = _timed(champion, clock)
        per_round["challenger"].append(_percentiles(mine))
        if champion is not None:
            per_round["champion"].append(_percentiles(theirs))
    return {"challenger": per_round["challenger"], "champion": per_round["champion"] or None}


def _percentiles(timings: np.ndarray) -> list[float]:
    return [round(float(np.percentile(timings, 50)), 4), round(float(np.percentile(timings, 99)), 4)]


def summarise(attempt: dict[str, Any]) -> dict[str, Any]:
    """The robust figures of one attempt: medians over rounds of the per-round p50 and p99, and the ratio."""
    mine = np.array(attempt["challenger"])
    out: dict[str, Any] = {
        "p50": round(float(np.median(mine[:, 0])), 4),
        "p99": round(float(np.median(mine[:, 1])), 4),
        "round_p99s": [round(float(v), 4) for v in mine[:, 1]],
        "rounds": len(mine),
    }
    if attempt.get("champion"):
        theirs = np.array(attempt["champion"])
        out["champion_p50"] = round(float(np.median(theirs[:, 0])), 4)
        out["champion_p99"] = round(float(np.median(theirs[:, 1])), 4)
        # Per round, so a burst of load that slows both in one round cancels out of the ratio.
        out["ratio_p99"] = round(float(np.median(mine[:, 1] / np.maximum(theirs[:, 1], 1e-6))), 4)
    return out


def verdict(figures: dict[str, Any], budget_ms: float, max_ratio: float) -> tuple[str, str]:
    """(``pass`` | ``fail`` | ``inconclusive``, why) for one attempt's :func:`summarise` figures."""
    p99, best, rounds = figures["p99"], min(figures["round_p99s"]), figures["rounds"]
    ratio = figures.get("ratio_p99")
    if p99 <= budget_ms:
        return "pass", f"median of {rounds} rounds' p99 {p99:.3f} ms is within {budget_ms} ms"
    slower = ratio is None or ratio > max_ratio
    compared = "nothing to compare with" if ratio is None else f"{ratio:.2f}x the reference's p99"
    if best > budget_ms and slower:
        return (
            "fail",
            f"p99 over {budget_ms} ms in every one of {rounds} rounds (best {best:.3f} ms), {compared}",
        )
    return (
        "inconclusive",
        f"median p99 {p99:.3f} ms over {budget_ms} ms, but best round {best:.3f} ms, {compared}: "
        "the machine, not the model, may be slow",
    )


def final_verdict(attempts: list[dict[str, Any]], budget_ms: float, max_ratio: float) -> tuple[str, str]:
    """The verdict after the last attempt; an inconclusive one is judged on every round of every attempt.

    The median over all rounds (up to ``rounds x attempts``) is within the budget: pass. Otherwise it passes
    only when the champion, timed in the same rounds, was as slow; with no champion it fails closed.
    """
    figures = attempts[-1]
    found, why = verdict(figures, budget_ms, max_ratio)
    tries = f"{len(attempts)} attempt(s)"
    if found != "inconclusive":
        return found, f"{why} ({tries})"
    pooled = [p99 for attempt in attempts for p99 in attempt["round_p99s"]]
    median = float(np.median(pooled))
    if median <= budget_ms:
        return "pass", (
            f"inconclusive after {tries} ({why}); the median over all {len(pooled)} rounds, {median:.3f} ms, "
            f"is within {budget_ms} ms"
        )
    ratio = figures.get("ratio_p99")
    if ratio is not None and ratio <= max_ratio:
        return "pass", (
            f"inconclusive after {tries} ({why}); the reference, timed in the same rounds, was as slow "
            f"({ratio:.2f}x, at most {max_ratio}x allowed): judged relative to it"
        )
    return "fail", (
        f"inconclusive after {tries} ({why}); the median over all {len(pooled)} rounds, {median:.3f} ms, is "
        f"over {budget_ms} ms and nothing as slow to compare with: fail closed"
    )
