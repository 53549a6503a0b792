"""The gate's decision: every rule passing and failing, fail-closed on missing figures, the record's words."""

import pytest

from pipelines.evaluation import latency
from pipelines.evaluation.gate import decide, log_lines, outcome, to_markdown
from pipelines.evaluation.policy import Policy, rules_checked
from tests.unit.evaluation.sample_policy import POLICY

QUIET = {
    "drift_share": 0.1,
    "drifted_columns": 1,
    "columns": {"amount": {"drifted": True}},
    "reference": "champion",
}


def _slice(value, regression, rows=200):
    return {
        "value": value,
        "rows": rows,
        "challenger": 0.8,
        "champion": 0.8 + regression,
        "regression": regression,
    }


def _latency(mine=(5.0,) * 5, theirs=(5.0,) * 5):
    """Latency figures as evaluate records them: per-round [p50, p99] of challenger and champion."""
    raw = {
        "challenger": [[2.0, p99] for p99 in mine],
        "champion": [[2.0, p99] for p99 in theirs] if theirs else None,
    }
    figures = latency.summarise(raw)
    return figures | {"samples": 100, "attempts": [figures], "method": "5 rounds", "path": "native"}


def _evaluation(challenger=0.80, champion=0.75, rows=500):
    """Figures as evaluate returns them; the tests below break one at a time."""
    return {
        "holdout_rows": rows,
        "challenger": {
            "version": 2,
            "metrics": {"roc_auc": challenger} if challenger is not None else {},
            "latency_ms": _latency(),
            "size_bytes": 2 * 2**20,
            "data_end": "2026-11-20",
        },
        "champion": None
        if champion is False
        else {
            "version": 1,
            "metrics": {"roc_auc": champion} if champion else {},
            "data_end": "2026-11-19",
        },
        "comparison": {
            "ci_low": 0.02,
            "ci_high": 0.08,
            "confidence": 0.95,
            "resamples": 1000,
            "rows_resampled": rows,
            "improvement": 0.05,
        },
        "slices": [
            {
                "column": "channel",
                "min_rows": 50,
                "values": [
                    _slice("web", -0.01),
                    _slice("app", 0.015),
                    {"value": "store", "rows": 10, "skipped": "10 rows"},
                ],
            }
        ],
    }


def _failed(record):
    return {r["rule"] for r in record["rules"] if not r["passed"]}


def test_better_challenger_is_promoted_with_one_line_per_rule():
    record = decide(POLICY, _evaluation(), QUIET)
    assert record["decision"] == "promote" and not _failed(record)
    assert [r["rule"] for r in record["rules"]] == [
        "min_holdout_rows",
        "min_improvement",
        "confidence_interval",
        "challenger_is_new",
        "data_not_older",
        "slice:channel",
        "latency_p99",
        "model_size",
        "max_drifted_share",
        "critical_columns_stable",
    ]
    assert any("0.8000 vs champion v1 0.7500" in reason for reason in record["reasons"])
    slice_line = next(r for r in record["rules"] if r["rule"] == "slice:channel")
    assert (
        "channel=app" in slice_line["detail"]
        and "1 slice(s) below 50 rows not judged" in slice_line["detail"]
    )
    assert all(set(r) == {"rule", "passed", "value", "threshold", "detail"} for r in record["rules"])


def test_too_small_an_improvement_is_rejected():
    record = decide(POLICY, _evaluation(challenger=0.755), QUIET)
    assert record["decision"] == "reject" and _failed(record) == {"min_improvement"}


def test_an_interval_reaching_below_the_tolerance_is_rejected():
    evaluation = _evaluation()
    evaluation["comparison"]["ci_low"] = -0.001
    assert _failed(decide(POLICY, evaluation, QUIET)) == {"confidence_interval"}
    tolerant = POLICY.model_copy(
        update={"bootstrap": POLICY.bootstrap.model_copy(update={"tolerance": 0.002})}
    )
    assert not _failed(decide(tolerant, evaluation, QUIET))


def test_a_figure_is_judged_as_its_record_shows_it_not_on_its_last_bit():
    """AUCs of 100 positives and 400 negatives exactly 0.005 apart: their float difference is
    0.004999999999999893, recorded as 0.005; judged raw it failed a min_improvement of 0.005."""
    gap = 30020 / 40000 - 29820 / 40000
    assert gap < 0.005  # the last bit this test is about
    at_bar = POLICY.model_copy(update={"min_improvement": 0.005})
    record = decide(at_bar, _evaluation(challenger=30020 / 40000, champion=29820 / 40000), QUIET)
    rule = next(r for r in record["rules"] if r["rule"] == "min_improvement")
    assert rule["passed"] and rule["value"] == rule["threshold"] == 0.005
    for low in (
        1e-16,
        -1e-16,
        4e-7,
    ):  # a lower bound recorded as 0.0 is not above a floor of 0.0, either side
        evaluation = _evaluation()
        evaluation["comparison"]["ci_low"] = low
        interval = next(
            r for r in decide(POLICY, evaluation, QUIET)["rules"] if r["rule"] == "confidence_interval"
        )
        assert not interval["passed"] and interval["value"][0] == 0.0 and str(interval["threshold"]) == "0.0"


def test_with_no_champion_the_floor_is_judged_on_the_figure_the_record_shows():
    """The record showed 0.6499996 against a floor of 0.65 and said passed: judged on a rounded difference."""
    policy = POLICY.model_copy(
        update={"no_champion": POLICY.no_champion.model_copy(update={"min_primary_metric": 0.65})}
    )
    for value, passed in ((0.6499996, True), (0.6499994, False)):
        evaluation = {"challenger": {"version": 1, "metrics": {"roc_auc": value}}, "champion": None}
        record = decide(policy, evaluation, QUIET)
        rule = next(r for r in record["rules"] if r["rule"] == "no_champion_threshold")
        assert rule["passed"] is passed and rule["passed"] == (rule["value"] >= rule["threshold"])
        assert rule["value"] == round(value, 6)
        assert f"roc_auc {round(value, 6)} vs floor 0.65" in rule["detail"]  # not 0.6500 vs 0.65, refused


def test_drift_measured_against_another_champion_than_evaluates_fails_closed():
    measured = QUIET | {"reference_version": 7}  # a rollback landed between drift and evaluate
    record = decide(POLICY, _evaluation(), measured)
    assert _failed(record) == {"max_drifted_share", "critical_columns_stable"}
    assert "measured against v7's reference profile, but evaluate compared with v1" in str(record["rules"])
    assert not _failed(decide(POLICY, _evaluation(), QUIET | {"reference_version": 1}))
    first = _evaluation(champion=False)  # no champion: drift against the challenger's own profile
    assert "max_drifted_share" not in _failed(decide(POLICY, first, QUIET | {"reference_version": 2}))


def test_too_few_holdout_rows_is_rejected():
    assert _failed(decide(POLICY, _evaluation(rows=50), QUIET)) == {"min_holdout_rows"}


def test_a_slice_regression_beyond_the_limit_is_rejected():
    evaluation = _evaluation()
    evaluation["slices"][0]["values"][1] = _slice("app", 0.03)
    record = decide(POLICY, evaluation, QUIET)
    assert _failed(record) == {"slice:channel"}
    assert next(r for r in record["rules"] if r["rule"] == "slice:channel")["value"] == 0.03


def test_latency_and_size_budgets():
    slow = _evaluation()
    slow["challenger"]["latency_ms"] = _latency(mine=(25.0,) * 5)
    assert _failed(decide(POLICY, slow, QUIET)) == {"latency_p99"}
    big = _evaluation()
    big["challenger"]["size_bytes"] = 11 * 2**20
    assert _failed(decide(POLICY, big, QUIET)) == {"model_size"}
    big["challenger"]["size_bytes"] = 10 * 2**20 + 400  # 10.000 MiB to 3 decimals: passed
    assert _failed(decide(POLICY, big, QUIET)) == {"model_size"}
    big["challenger"]["size_bytes"] = 10 * 2**20
    assert _failed(decide(POLICY, big, QUIET)) == set()
    unbudgeted = POLICY.model_copy(update={"latency": None, "max_model_size_mb": None})
    rules = {r["rule"] for r in decide(unbudgeted, slow, QUIET)["rules"]}
    assert "latency_p99" not in rules and "model_size" not in rules


def test_onnx_runtime_is_required_and_its_accuracy_loss_bounded():
    policy = Policy.model_validate(
        POLICY.model_dump() | {"onnx": {"runtime": "onnx-int8", "max_metric_loss": 0.002}}
    )
    evaluation = _evaluation()
    evaluation["challenger"]["runtimes"] = {
        "onnx": {"metrics": {"roc_auc": 0.80}, "max_abs_diff": 0.0},
        "onnx-int8": {"metrics": {"roc_auc": 0.799}, "max_abs_diff": 0.01},
    }
    record = decide(policy, evaluation, QUIET)
    line = next(r for r in record["rules"] if r["rule"] == "onnx_runtime")
    assert record["decision"] == "promote" and line["value"] == pytest.approx(0.001)
    assert "onnx-int8 roc_auc 0.7990 vs native 0.8000" in line["detail"]
    evaluation["challenger"]["runtimes"]["onnx-int8"]["metrics"]["roc_auc"] = 0.79
    assert _failed(decide(policy, evaluation, QUIET)) == {"onnx_runtime"}
    for runtimes in (None, {"onnx-int8": {"error": "InvalidGraph: bad export"}}):  # fail closed
        evaluation["challenger"]["runtimes"] = runtimes
        record = decide(policy, evaluation, QUIET)
        line = next(r for r in record["rules"] if r["rule"] == "onnx_runtime")
        assert _failed(record) == {"onnx_runtime"} and line["detail"].endswith("fail closed")
    lower = Policy.model_validate(
        policy.model_dump() | {"primary_metric": "log_loss", "higher_is_better": False}
    )
    evaluation = _evaluation()
    evaluation["challenger"]["metrics"] = {"log_loss": 0.50}
    evaluation["challenger"]["runtimes"] = {"onnx-int8": {"metrics": {"log_loss": 0.503}}}
    line = next(r for r in decide(lower, evaluation, QUIET)["rules"] if r["rule"] == "onnx_runtime")
    assert not line["passed"] and line["value"] == pytest.approx(0.003)
    assert "onnx_runtime" not in {r["rule"] for r in decide(POLICY, evaluation, QUIET)["rules"]}


def test_missing_figures_fail_closed():
    assert _failed(decide(POLICY, _evaluation(challenger=None), QUIET)) == {"challenger_metric_present"}
    assert "champion_metric_present" in _failed(decide(POLICY, _evaluation(champion={}), QUIET))
    for key in ("comparison", "slices"):
        evaluation = _evaluation()
        evaluation[key] = None
        assert (
            _failed(decide(POLICY, evaluation, QUIET))
            == {"comparison": {"confidence_interval"}, "slices": {"slice:channel"}}[key]
        )
    evaluation = _evaluation()
    evaluation["comparison"] = {"error": "ValueError: boom"}
    assert "boom" in next(r["detail"] for r in decide(POLICY, evaluation, QUIET)["rules"] if not r["passed"])
    evaluation = _evaluation()
    evaluation["comparison"]["ci_low"] = float("nan")
    assert _failed(decide(POLICY, evaluation, QUIET)) == {"confidence_interval"}
    evaluation = _evaluation()
    evaluation["slices"][0]["values"] = [{"value": "web", "rows": 3, "skipped": "3 rows"}]
    assert _failed(decide(POLICY, evaluation, QUIET)) == {"slice:channel"}
    evaluation = _evaluation()
    del evaluation["challenger"]["latency_ms"], evaluation["challenger"]["size_bytes"]
    assert _failed(decide(POLICY, evaluation, QUIET)) == {"latency_p99", "model_size"}
    assert _failed(decide(POLICY, _evaluation(), {})) == {"max_drifted_share", "critical_columns_stable"}


def test_a_crashed_evaluation_or_unreadable_champion_means_no_promotion():
    crashed = _evaluation()
    crashed["challenger"] = {"version": 2, "error": "could not score ct v2: RuntimeError: boom"}
    record = decide(POLICY, crashed, QUIET)
    assert record["decision"] == "reject" and "challenger_evaluated" in _failed(record)
    unreadable = _evaluation()
    unreadable["champion"] = {
        "version": 1,
        "error": "ct v1 does not match its sha256 manifest: missing: MLmodel",
    }
    record = decide(POLICY, unreadable, QUIET)
    assert _failed(record) == {"champion_evaluated"} and "MLmodel" in record["reasons"][1]


def test_no_champion_uses_the_absolute_floor():
    assert decide(POLICY, _evaluation(champion=False), QUIET)["decision"] == "promote"
    low = decide(POLICY, _evaluation(challenger=0.6, champion=False), QUIET)
    assert _failed(low) == {"no_champion_threshold"}
    reject_policy = POLICY.model_copy(
        update={"no_champion": POLICY.no_champion.model_copy(update={"action": "reject"})}
    )
    assert decide(reject_policy, _evaluation(champion=False), QUIET)["decision"] == "reject"


def test_drift_rules_block():
    broad = {**QUIET, "drift_share": 0.9}
    assert _failed(decide(POLICY, _evaluation(), broad)) == {"max_drifted_share"}
    critical = {**QUIET, "columns": {"age": {"drifted": True}}}
    assert _failed(decide(POLICY, _evaluation(), critical)) == {"critical_columns_stable"}
    # The label's drift is reported apart from the features', but a policy may name the label as critical:
    # it was accepted, and then never judged.
    on_label = POLICY.model_copy(
        update={"drift": POLICY.drift.model_copy(update={"critical_columns": ["churned"]})}
    )
    label = {**QUIET, "label_column": "churned", "label": {"drifted": True}}
    assert _failed(decide(on_label, _evaluation(), label)) == {"critical_columns_stable"}
    assert _failed(decide(POLICY, _evaluation(), label)) == set()  # not critical: reported, not judged
    assert _failed(decide(on_label, _evaluation(), {**label, "label": {"drifted": False}})) == set()


def test_same_version_is_not_promoted_again():
    evaluation = _evaluation()
    evaluation["champion"]["version"] = 2
    assert "challenger_is_new" in _failed(decide(POLICY, evaluation, QUIET))


def test_lower_is_better_metrics():
    policy = POLICY.model_copy(update={"primary_metric": "log_loss", "higher_is_better": False})
    evaluation = _evaluation()
    evaluation["challenger"]["metrics"] = {"log_loss": 0.40}
    evaluation["champion"]["metrics"] = {"log_loss": 0.45}
    assert decide(policy, evaluation, QUIET)["decision"] == "promote"


def test_dry_run_and_approval_say_what_will_happen():
    assert outcome(decide(POLICY, _evaluation(), QUIET)) == "promote"
    dry = decide(POLICY.model_copy(update={"dry_run": True}), _evaluation(), QUIET)
    assert dry["decision"] == "promote" and dry["dry_run"] and outcome(dry).startswith("would promote")
    asked = decide(POLICY.model_copy(update={"approval": "required"}), _evaluation(), QUIET)
    assert asked["approval"] == "required" and "approves" in outcome(asked)
    assert outcome(decide(POLICY, _evaluation(challenger=0.7), QUIET)).startswith("reject")


def test_markdown_lists_every_rule():
    record = decide(POLICY, _evaluation(), QUIET)
    text = to_markdown(record)
    assert all(r["rule"] in text for r in record["rules"]) and "PROMOTE" in text and "Outcome" in text


@pytest.mark.parametrize("onnx", [None, {"runtime": "onnx", "max_metric_loss": 0.01}])
def test_the_record_names_exactly_the_rules_the_policy_module_lists(onnx):
    policy = Policy.model_validate(POLICY.model_dump() | {"onnx": onnx})
    with_champion = decide(policy, _evaluation() | {"policy_sha256": "a"}, QUIET, "a")
    assert [r["rule"] for r in with_champion["rules"]] == rules_checked(policy, champion=True)
    first = decide(policy, _evaluation(champion=False), QUIET, "a")
    assert [r["rule"] for r in first["rules"]] == rules_checked(policy, champion=False)
    never = POLICY.model_copy(
        update={"no_champion": POLICY.no_champion.model_copy(update={"action": "reject"})}
    )
    assert [
        r["rule"] for r in decide(never, _evaluation(champion=False), QUIET, "a")["rules"]
    ] == rules_checked(never, champion=False)


def test_figures_evaluated_under_another_policy_file_are_not_judged():
    """evaluate and the gate each read the policy file: one edited between them gave figures (the interval's
    confidence, resamples, slices) computed under one policy and a record carrying the other's hash."""
    evaluation = _evaluation() | {"policy_sha256": "1" * 64}
    assert not _failed(decide(POLICY, evaluation, QUIET, "1" * 64))
    changed = decide(POLICY, evaluation, QUIET, "2" * 64)
    assert changed["decision"] == "reject" and _failed(changed) == {"same_policy"}
    assert (
        "evaluate ran under policy sha256 111111111111, the gate's is 222222222222" in changed["reasons"][-1]
    )
    unknown = decide(POLICY, _evaluation(), QUIET, "2" * 64)  # an evaluation that does not say
    assert _failed(unknown) == {"same_policy"} and "run evaluate again" in unknown["reasons"][-1]


def test_latency_is_judged_on_rounds_so_one_stall_or_a_busy_machine_does_not_decide():
    def line(measured, champion=True):
        evaluation = _evaluation(champion=0.75 if champion else False)
        evaluation["challenger"]["latency_ms"] = measured
        return next(r for r in decide(POLICY, evaluation, QUIET)["rules"] if r["rule"] == "latency_p99")

    stalled = line(_latency(mine=(5.0, 1747.0, 5.0, 5.0, 5.0)))  # one stall of 1.7 s in one round
    assert stalled["passed"] and stalled["value"] == 5.0 and "median of 5 rounds' p99" in stalled["detail"]
    busy = line(_latency(mine=(30.0,) * 5, theirs=(28.0,) * 5))  # everything slow, the champion too
    assert busy["passed"] and "judged relative to it" in busy["detail"]
    assert "champion p99 28.0000 ms in the same rounds" in busy["detail"]
    slower = line(_latency(mine=(60.0,) * 5, theirs=(5.0,) * 5))  # really slower than the champion
    assert not slower["passed"] and "in every one of 5 rounds" in slower["detail"]
    alone = line(_latency(mine=(25.0, 25.0, 10.0, 25.0, 25.0), theirs=None), champion=False)
    assert not alone["passed"] and "median over all 5 rounds, 25.000 ms" in alone["detail"]
    assert "fail closed" in alone["detail"]
    stuck = line(_latency(mine=(25.0,) * 5, theirs=None), champion=False)
    assert not stuck["passed"] and "in every one of 5 rounds" in stuck["detail"]


def test_an_older_challenger_cannot_replace_a_newer_champion():
    backfill = _evaluation()
    backfill["challenger"]["data_end"] = "2026-06-30"
    record = decide(POLICY, backfill, QUIET)
    line = next(r for r in record["rules"] if r["rule"] == "data_not_older")
    assert _failed(record) == {"data_not_older"}
    assert line["detail"] == (
        "older than the champion: the challenger's data ends 2026-06-30, the champion's 2026-11-19"
    )
    same_day = _evaluation()
    same_day["challenger"]["data_end"] = "2026-11-19"
    assert not _failed(decide(POLICY, same_day, QUIET))
    unknown = _evaluation()
    del unknown["champion"]["data_end"]
    assert _failed(decide(POLICY, unknown, QUIET)) == {"data_not_older"}
    assert "data_not_older" not in {
        r["rule"] for r in decide(POLICY.model_copy(update={"time_order": False}), backfill, QUIET)["rules"]
    }


def test_the_task_log_shows_the_verdict_first_and_every_rule_within_the_width():
    record = decide(POLICY, _evaluation(), QUIET)
    record["outcome"] = outcome(record)
    long_rule = record["reasons"][0] + " " + "x" * 30 + " a detail that runs on" * 12
    record["reasons"] = [*record["reasons"], long_rule]
    lines = log_lines(record, width=100)
    assert lines[0] == "gate decision: PROMOTE (promote)"
    assert lines[1].startswith("  challenger v") and "primary metric roc_auc" in lines[1]
    assert all(len(line) <= 100 for line in lines[2:])
    # Every rule starts a line of its own, and its wrapped rest is indented under it.
    starts = [line.strip() for line in lines[2:] if not line.startswith("      ")]
    assert [s.split(":")[0] for s in starts] == [r.split(":")[0] for r in record["reasons"]]
    assert " ".join(line.strip() for line in lines[2:]).split() == " ".join(record["reasons"]).split()
