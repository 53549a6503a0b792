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
- ``fail``: over the budget in every round even less the time each call waited for a busy CPU (Linux counts
  it per thread: ``/proc/thread-self/schedstat``): the model's own time, computing or waiting on I/O, is over;
- ``inconclusive``: over the budget, but within it in some round once those waits are taken out (the machine,
  not the model, is slow). Evaluate measures again; after the last attempt an inconclusive verdict passes when
  the median over every round of every attempt is within the budget, with or without the waits; otherwise it
  fails closed.

Where the kernel does not count the waits (not Linux), and for figures recorded before it was counted, the
reference timed in the same rounds stands in: over the budget in every round and slower than the reference by
more than the policy's ratio fails, and an inconclusive verdict also passes when the reference was as slow.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

Call = Callable[[], Any]
_MATRIX = np.random.default_rng(0).normal(size=(64, 64))


def reference_workload() -> float:
    """A fixed small computation timed in the champion's place when there is none: it meets the same load
    as the challenger in each round, so a busy machine shows in it, and a slow model does not."""
    return float(np.linalg.norm(_MATRIX @ _MATRIX[0]))


Clock = Callable[[], float]


@contextlib.contextmanager
def runqueue_clock() -> Iterator[Clock | None]:
    """The seconds this thread has spent runnable but waiting for a CPU (Linux's ``/proc/thread-self/schedstat``,
    its second field): the time another process can add to a call. None where the kernel does not say."""
    try:
        fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
    except OSError:  # not Linux, or a kernel without scheduler statistics
        yield None
        return
    try:
        # A kernel that keeps no statistics (schedstats off) reads 0 for this thread's time on a CPU too, which
        # has run all along: the waits it would read as none are then unknown.
        yield (
            None
            if int(os.pread(fd, 128, 0).split()[0]) == 0
            else lambda: int(os.pread(fd, 128, 0).split()[1]) / 1e9
        )
    finally:
        os.close(fd)


def _timed(call: Call, clock: Clock, waited: Clock | None) -> tuple[float, float | None]:
    """One call's wall time, and that time less what the thread spent waiting for a busy CPU, in ms."""
    started = clock()
    wait_started = waited() if waited else 0.0  # read inside the wall time: no wait outside it is taken off
    call()
    wait = waited() - wait_started if waited else 0.0
    wall = clock() - started
    if waited is None:
        return wall * 1000, None
    return wall * 1000, max(wall - wait, 0.0) * 1000


def measure(
    challenger: Call,
    champion: Call | None,
    *,
    rounds: int,
    samples: int,
    warmup: int,
    clock: Clock = time.perf_counter,
    waited: Clock | None = None,
) -> dict[str, Any]:
    """One attempt: ``rounds`` rounds of ``samples`` calls of each model, interleaved call by call, in ms; the
    challenger's calls also less the time they waited for a busy CPU (``waited``, default
    :func:`runqueue_clock`'s), where the kernel tells it."""
    with contextlib.ExitStack() as stack:
        if waited is None:
            waited = stack.enter_context(runqueue_clock())  # this thread's: the one that times the calls
        return _measure(challenger, champion, rounds, samples, warmup, clock, waited)


def _measure(
    challenger: Call,
    champion: Call | None,
    rounds: int,
    samples: int,
    warmup: int,
    clock: Clock,
    waited: Clock | None,
) -> dict[str, Any]:
    for _ in range(warmup):
        challenger()
        if champion is not None:
            champion()
    per_round: dict[str, list[list[float]]] = {"challenger": [], "challenger_own": [], "champion": []}
    for _ in range(rounds):
        mine, own, theirs = np.empty(samples), np.empty(samples), np.empty(samples)
        for i in range(samples):
            mine[i], own_ms = _timed(challenger, clock, waited)
            own[i] = np.nan if own_ms is None else own_ms
            if champion is not None:
                theirs[i] = _timed(champion, clock, None)[0]
        per_round["challenger"].append(_percentiles(mine))
        if waited is not None:
            per_round["challenger_own"].append(_percentiles(own))
        if champion is not None:
            per_round["champion"].append(_percentiles(theirs))
    return {
        "challenger": per_round["challenger"],
        "challenger_own": per_round["challenger_own"] or None,
        "champion": per_round["champion"] or None,
    }


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
    if attempt.get("challenger_own"):  # less the waits for a busy CPU: what another process cannot add to
        own = np.array(attempt["challenger_own"])
        out["own_p99"] = round(float(np.median(own[:, 1])), 4)
        out["own_round_p99s"] = [round(float(v), 4) for v in own[:, 1]]
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
    if figures.get("own_round_p99s"):  # less the waits for a busy CPU: the model's time, not the machine's
        own_best = min(figures["own_round_p99s"])
        # Slower than the reference too: some of a busy machine's cost is not a wait (a neighbour on the same
        # core's other hyperthread, a VM's stolen time, a throttled clock), and slows the reference alike; a
        # challenger as slow as the champion is measured again, and judged on every round without the waits.
        if own_best > budget_ms and (ratio is None or ratio > max_ratio):
            return "fail", (
                f"p99 {p99:.3f} ms over {budget_ms} ms, and over it in every one of {rounds} rounds less the time "
                f"the calls waited for a busy CPU (best round's p99 {own_best:.3f} ms): the model, not the "
                "machine, is slow"
            )
        if own_best > budget_ms:
            return "inconclusive", (
                f"median p99 {p99:.3f} ms over {budget_ms} ms, in every round even less the time the calls waited "
                f"for a busy CPU (best round's p99 {own_best:.3f} ms), but no slower than the reference "
                f"({ratio:.2f}x): the machine may be slow in a way that is not a wait"
            )
        return "inconclusive", (
            f"median p99 {p99:.3f} ms over {budget_ms} ms, but within it in some round less the time the calls "
            f"waited for a busy CPU (median {figures['own_p99']:.3f} ms): the machine may be slow"
        )
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

    The median over all rounds (up to ``rounds x attempts``) is within the budget: pass. Otherwise, where the
    calls' waits for a busy CPU were counted, it passes when that median without them is within the budget, and
    fails closed when not; where they were not, it passes only when the champion, timed in the same rounds, was
    as slow, and with no champion fails closed.
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
    if all(attempt.get("own_round_p99s") for attempt in attempts):
        own = float(np.median([p99 for attempt in attempts for p99 in attempt["own_round_p99s"]]))
        if own <= budget_ms:
            return "pass", (
                f"inconclusive after {tries} ({why}); less the time the calls waited for a busy CPU, the median "
                f"over all {len(pooled)} rounds of each round's p99, {own:.3f} ms, is within {budget_ms} ms"
            )
        return "fail", (
            f"inconclusive after {tries} ({why}); less the time the calls waited for a busy CPU, the median over "
            f"all {len(pooled)} rounds of each round's p99, {own:.3f} ms, is over {budget_ms} ms: fail closed"
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
