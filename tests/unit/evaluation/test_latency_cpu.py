"""The one-row latency verdict tells a slow model from a busy machine by the CPU time the calls took: another
process can make a call wait for the CPU, but cannot add to the CPU time the call itself spends."""

from __future__ import annotations

from pipelines.evaluation import latency
from pipelines.evaluation.evaluate import measure_latency
from pipelines.evaluation.policy import LatencyRule

MEASURE = latency.measure
RULE = LatencyRule(max_p99_ms=6.0, samples=20, rounds=3, attempts=3, max_ratio_to_champion=1.5)


class Machine:
    """A wall clock and the kernel's count of the time a thread waited for a busy CPU: a call of ``ms`` takes
    ``slowdown`` times as long, the rest spent waiting for the CPU; a call may also sleep (wait on I/O)."""

    def __init__(self, slowdown: float) -> None:
        self.slowdown, self.wall, self.waited = slowdown, 0.0, 0.0

    def call(self, ms: float, sleep_ms: float = 0.0):
        def run() -> None:
            self.wall += (ms * self.slowdown + sleep_ms) / 1000
            self.waited += ms * (self.slowdown - 1) / 1000

        return run


def _measure(
    monkeypatch, machine: Machine, model_ms: float, champion_ms: float | None, sleep_ms: float = 0.0
) -> dict:
    monkeypatch.setattr(
        latency,
        "measure",
        lambda *a, **k: MEASURE(*a, **k, clock=lambda: machine.wall, waited=lambda: machine.waited),
    )
    reference = machine.call(champion_ms) if champion_ms is not None else machine.call(0.005)
    return measure_latency(RULE, machine.call(model_ms, sleep_ms), reference)


def test_with_no_champion_a_busy_machine_does_not_fail_a_model_that_an_idle_one_passes(monkeypatch):
    """Timed beside the reference workload (microseconds), a 4 ms model passed a 6 ms budget on an idle
    machine and failed at once on one at half speed: the ratio to the workload is always far above 1.5."""
    idle = _measure(monkeypatch, Machine(1.0), 4.0, None)
    busy = _measure(monkeypatch, Machine(2.0), 4.0, None)
    assert idle["verdict"] == "pass"
    assert busy["verdict"] == "pass" and busy["p99"] == 8.0 and busy["own_p99"] == 4.0
    assert "less the time the calls waited for a busy CPU" in busy["why"]
    assert len(busy["attempts"]) == RULE.attempts  # measured again while inconclusive


def test_a_model_over_budget_by_its_own_time_fails_whatever_the_champion_or_the_load(monkeypatch):
    """With a champion as slow, a challenger over the budget passed 'relative to it', so each generation could
    be slower than the budget by up to the ratio again. A call that waits on I/O (a sleep) is slow itself: only
    a wait for the CPU is the machine's."""
    for slowdown in (1.0, 2.0):
        for champion in (9.0, None):
            for model_ms, sleep_ms in ((9.0, 0.0), (1.0, 8.0)):
                found = _measure(monkeypatch, Machine(slowdown), model_ms, champion, sleep_ms)
                assert found["verdict"] == "fail", (slowdown, champion, model_ms, found["why"])
                if champion is None:  # slower than the reference workload: at once
                    assert "the model, not the machine, is slow" in found["why"]
                else:  # as slow as the champion: measured again, then judged without the waits
                    assert (
                        len(found["attempts"]) == RULE.attempts
                        and "is over 6.0 ms: fail closed" in found["why"]
                    )


def test_the_kernel_counts_a_threads_wait_for_the_cpu_and_not_its_sleep():
    """On this project's Linux machines the waits are counted: a thread sharing its one CPU with a busy
    process waits for it, and one asleep does not."""
    import os
    import subprocess
    import sys
    import time

    with latency.runqueue_clock() as waited:
        assert waited is not None, (
            "the kernel keeps no scheduler statistics here: the rule would be wall-clock"
        )
        before = waited()
        time.sleep(0.05)
        assert waited() - before < 0.05  # asleep, not waiting for a CPU
        cpu = min(os.sched_getaffinity(0))
        mine = os.sched_getaffinity(0)
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            os.sched_setaffinity(busy.pid, {cpu})
            os.sched_setaffinity(0, {cpu})  # this thread now shares one CPU with a busy loop
            time.sleep(0.2)  # the loop starts
            before, until = waited(), time.monotonic() + 0.5
            while time.monotonic() < until:
                pass
            assert waited() - before > 0.05  # about half of the 0.5 s was spent waiting for the CPU
        finally:
            os.sched_setaffinity(0, mine)
            busy.kill()
            busy.wait()
