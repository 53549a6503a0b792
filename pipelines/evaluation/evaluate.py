"""Evaluate: challenger and current champion scored on the same fresh holdout, with every figure the gate needs.

Both models are loaded from copies that passed their sha256 manifest (:mod:`pipelines.release.integrity`) and score
the same holdout rows. From the two sets of predictions come the primary metric of each, the paired bootstrap
interval of their difference, and the metric per slice the policy names; the challenger's one-row latency
(timed in rounds interleaved with the champion's, :mod:`pipelines.evaluation.latency`) and its size come from
the model itself, and each version's data end (the last day it was trained on) from its lineage tags. The
predictions are kept beside the reports so a decision can be re-derived.

A model that cannot be loaded, verified or scored is not an exception here: it is recorded as that model's
``error``, and the gate fails closed on it with the reason in the decision record. Any other exception is a
bug in this project, and fails the task.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import tempfile
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from pipelines.data import datasets, runlog, storage
from pipelines.data.contract import Contract, dataset_contract
from pipelines.data.features import holdout_label
from pipelines.evaluation import latency, stats
from pipelines.evaluation.metrics import classification_metrics
from pipelines.evaluation.policy import (
    LatencyRule,
    Policy,
    check_against_contract,
    load_policy,
    policy_sha256,
)
from pipelines.model.classifier import project_model
from pipelines.model.runtime import SCORING_ERRORS
from pipelines.release import audit, history, integrity, tracking
from pipelines.settings import Settings

log = logging.getLogger(__name__)

LATENCY_WARMUP = 20


class EvaluationError(RuntimeError):
    """A model could not be scored; the gate treats this as 'do not promote'."""


class UnknownVersionError(EvaluationError):
    """The challenger version asked for is not in the registry: the caller's mistake (the CLI exits 2)."""


class HoldoutError(ValueError):
    """The holdout is empty or holds one class: no metric can compare models on it (the CLI exits 2)."""


class ChampionCallError(EvaluationError):
    """The champion's one-row call failed while it was timed beside the challenger."""


def score_version(
    client: Any, name: str, version: int, holdout: pd.DataFrame, contract: Contract
) -> tuple[Any, np.ndarray, dict[str, Any]]:
    """Load one registered version from its verified files and predict the holdout's probabilities."""
    with tempfile.TemporaryDirectory(prefix="ct-evaluate-") as tmp:
        try:
            model, manifest = integrity.load_verified(client, name, version, tmp)
        except (integrity.IntegrityError, integrity.UnloadableModelError) as exc:
            raise EvaluationError(str(exc)) from exc
        except MlflowException as exc:  # the registry could not say what the version holds
            raise EvaluationError(f"could not load {name} v{version}: {type(exc).__name__}: {exc}") from exc
    try:
        probability = model.predict(holdout[contract.feature_columns])["probability"].to_numpy("float64")
    except SCORING_ERRORS as exc:
        raise EvaluationError(f"could not score {name} v{version}: {type(exc).__name__}: {exc}") from exc
    if len(probability) != len(holdout) or not np.isfinite(probability).all():
        raise EvaluationError(f"{name} v{version} returned {len(probability)} probabilities, not all finite")
    outside = int(np.count_nonzero((probability < 0) | (probability > 1)))
    if (
        outside
    ):  # serving answers these with a 500 (ModelOutputError): a model it cannot serve is not promoted
        raise EvaluationError(
            f"{name} v{version} gave probabilities outside [0, 1] on {outside} of {len(probability)} holdout "
            f"rows ({probability.min():g} to {probability.max():g})"
        )
    return model, probability, manifest


def serving_call(
    model: Any, row: pd.DataFrame, settings: Settings, error: type[EvaluationError] = EvaluationError
) -> tuple[latency.Call, str]:
    """One row scored the way serving scores it, as a call to time, and what that path is.

    Serving's model call is timed: the row as column arrays, through the runtime ``CT_SERVE_RUNTIME``
    picks (ONNX for a torch model by default). A model without a usable signature, which serving would
    refuse anyway, is timed on its pyfunc ``predict`` of a one-row DataFrame.
    """
    call, path = _serving_call(model, row, settings)

    def checked() -> Any:
        try:
            return call()
        except SCORING_ERRORS as exc:
            raise error(f"one-row prediction failed: {type(exc).__name__}: {exc}") from exc

    return checked, path


def measure_latency(
    rule: LatencyRule, challenger: latency.Call, champion: latency.Call | None
) -> dict[str, Any]:
    """Interleaved rounds (:mod:`pipelines.evaluation.latency`), measured again while inconclusive."""
    attempts = []
    for _ in range(rule.attempts):
        raw = latency.measure(
            challenger, champion, rounds=rule.rounds, samples=rule.samples, warmup=LATENCY_WARMUP
        )
        attempts.append(latency.summarise(raw) | {"raw": raw})
        found, why = latency.verdict(attempts[-1], rule.max_p99_ms, rule.max_ratio_to_champion)
        if found != "inconclusive":
            break
        log.warning("latency inconclusive, measuring again: %s", why)
    found, why = latency.final_verdict(attempts, rule.max_p99_ms, rule.max_ratio_to_champion)
    last = attempts[-1]
    return {k: v for k, v in last.items() if k != "raw"} | {
        "samples": rule.samples,
        "attempts": attempts,
        "verdict": found,
        "why": why,
        "method": (
            f"{rule.rounds} rounds of {rule.samples} one-row calls, "
            + ("interleaved with the reference's, " if champion is not None else "")
            + "judged on the median over rounds of each round's p99"
        ),
    }


def _serving_call(model: Any, row: pd.DataFrame, settings: Settings) -> tuple[Any, str]:
    from pipelines.model.runtime import ModelLoadError, ServedModel, set_threads
    from pipelines.model.signature import InputSchema, RequestError

    # The threads serving gives a model call (CT_SERVE_THREADS): left at one per core, scikit-learn's OpenMP
    # threads stall behind any other work on the cores, and a one-row call's p99 measured the neighbours.
    set_threads(settings.serve_threads)
    try:
        schema = InputSchema.from_signature(model.metadata.signature)
        served = ServedModel(name="", version=0, sha256="", run_id=None, schema=schema, pyfunc=model)
        served.use_runtime(settings.serve_runtime, settings.serve_threads)
        columns, _ = schema.parse({"rows": json.loads(row.to_json(orient="records"))}, 1)
    except (ValueError, ModelLoadError, RequestError) as exc:
        path = f"pyfunc predict of a one-row DataFrame (not the serving path: {exc})"
        return (lambda: model.predict(row)), path
    return (lambda: served.predict(columns)), f"serving's model call on one row: {served.runtime}"


def data_end(client: Any, name: str, version: int) -> str | None:
    """The last day of the data a version was trained on (its window ends on its run's logical date)."""
    tags = client.get_model_version(name, str(version)).tags
    return tags.get("logical_date")


def score_runtimes(
    model: Any, holdout: pd.DataFrame, contract: Contract, native: np.ndarray
) -> dict[str, Any]:
    """The holdout scored through each ONNX export the model carries, against the native predictions."""
    inner = project_model(model)
    if inner is None:
        return {}
    paths = inner.onnx_models
    labels = holdout[contract.label].to_numpy()
    out: dict[str, Any] = {}
    for runtime in paths:
        try:
            inner.use_runtime(runtime)
            probability = inner.predict_proba_columns(holdout[contract.feature_columns])
            out[runtime] = {
                "metrics": classification_metrics(labels, probability),
                "max_abs_diff": round(float(np.max(np.abs(probability - native))), 6),
            }
        except SCORING_ERRORS as exc:  # a broken export is reported, and fails a policy that requires it
            out[runtime] = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            inner.use_runtime("native")
    return out


def _compare(
    policy: Policy, holdout: pd.DataFrame, contract: Contract, challenger: np.ndarray, champion: np.ndarray
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    labels = holdout[contract.label].to_numpy("float64")
    metric = policy.primary_metric
    bootstrap = policy.bootstrap
    try:
        comparison = stats.paired_bootstrap(
            metric,
            labels,
            challenger,
            champion,
            resamples=bootstrap.resamples,
            confidence=bootstrap.confidence,
            seed=bootstrap.seed,
            max_rows=bootstrap.max_rows,
        )
    except ValueError as exc:  # a bootstrap that cannot run (too few rows) is a failed rule, not a crash
        comparison = {"metric": metric, "error": f"{type(exc).__name__}: {exc}"}
    slices = []
    for rule in policy.slices:
        values = stats.slice_metrics(
            metric, labels, challenger, champion, holdout[rule.column].astype(str).to_numpy(), rule.min_rows
        )
        slices.append({"column": rule.column, "min_rows": rule.min_rows, "values": values})
    return comparison, slices


def _score(
    client: Any, name: str, version: int, holdout: pd.DataFrame, contract: Contract
) -> tuple[dict[str, Any], Any, np.ndarray | None]:
    """One model's figures (metrics, size, digest), the loaded model and its predictions.

    Only the failures of the model under test (load, verify, score) become its ``error``; anything else is a
    bug in this project and fails the task.
    """
    figures: dict[str, Any] = {"version": version}
    try:
        model, probability, manifest = score_version(client, name, version, holdout, contract)
    except EvaluationError as exc:
        figures["error"] = str(exc)
        log.error("%s v%s could not be evaluated: %s", name, version, exc)
        return figures, None, None
    figures["metrics"] = classification_metrics(holdout[contract.label].to_numpy(), probability)
    figures["size_bytes"] = manifest["total_bytes"]
    figures["sha256"] = integrity.digest(manifest)
    return figures, model, probability


def _latency(
    settings: Settings, policy: Policy, challenger: Any, champion: Any, row: pd.DataFrame
) -> dict[str, Any]:
    """The challenger's one-row latency, timed in rounds interleaved with the champion's when there is one."""
    # No budget: timed all the same (the figures are recorded), never judged. Constructed, not validated: a
    # policy's numbers must be finite, this one is not.
    rule = policy.latency or LatencyRule.model_construct(max_p99_ms=float("inf"))
    try:
        mine, path = serving_call(challenger, row, settings)
        if champion is None:  # a fixed workload meets the same load, so a busy machine shows
            return measure_latency(rule, mine, latency.reference_workload) | {
                "path": path,
                "reference": "a fixed reference workload (no champion)",
            }
        theirs = serving_call(champion, row, settings, ChampionCallError)[0]
        try:
            return measure_latency(rule, mine, theirs) | {"path": path, "reference": "the champion"}
        except ChampionCallError as exc:  # the champion's fault: time against the reference workload
            log.error("the champion's one-row call failed; timing against a reference workload: %s", exc)
            return measure_latency(rule, mine, latency.reference_workload) | {
                "path": path,
                "reference": "a fixed reference workload (the champion's call failed)",
                "champion_error": str(exc),
            }
    except EvaluationError as exc:
        return {"error": str(exc)}
    finally:
        for model in (challenger, champion):
            if model is not None and (inner := project_model(model)) is not None:
                inner.use_runtime("native")


def canonical_order(holdout: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """The holdout's rows sorted by their raw values (entity id, event time, then the features and label).

    The bootstrap resamples and subsamples rows by position, and a sum's last bits follow its order: on rows in
    the order their files happen to hold them (another engine, or cluster, cuts them otherwise), the same rows
    and seed gave another interval, and the decision moved with it.
    """
    keys = [contract.entity_id, contract.event_time, *contract.feature_columns, contract.label]
    return holdout.sort_values(keys, kind="stable", na_position="last", ignore_index=True)


def check_holdout(holdout: pd.DataFrame, contract: Contract, dataset_uri: str) -> None:
    """A holdout no metric can be computed on is the data's fault: say so before any model is blamed."""
    if not len(holdout):
        raise HoldoutError(
            f"the holdout of {dataset_uri} has no rows: no metric can compare models on it; widen the window or "
            "change the policy's holdout"
        )
    classes = holdout[contract.label].nunique()
    if classes < 2:
        raise HoldoutError(
            f"the holdout of {dataset_uri} has {len(holdout)} rows of one class only: no metric can compare "
            "models on it; widen the window or change the policy's holdout"
        )


def check_prepared_holdout(
    settings: Settings, policy: Policy, logical_date: dt.date, dataset_uri: str
) -> None:
    """The dataset's holdout is the one the policy asks for: a policy whose ``holdout`` changed after prepare ran
    would otherwise be recorded as judging on its newest days while the figures came from a hash share of the
    entities (or the other way round)."""
    asked = holdout_label(logical_date, policy.holdout.latest_days, settings.window_days)
    prepared = datasets.read_manifest(dataset_uri).extra.get("holdout")
    if prepared != asked:
        raise HoldoutError(
            f"the holdout of {dataset_uri} was prepared as {prepared or 'unrecorded'}, but the policy "
            f"({settings.resolved_policy_path}) asks for {asked} on {logical_date}: re-run prepare for that date "
            "with this policy, then evaluate"
        )


@runlog.stage("evaluate")
def evaluate(
    settings: Settings, logical_date: dt.date, dataset_uri: str, challenger_version: int
) -> dict[str, Any]:
    """Score challenger and champion on the run's holdout; log the figures to the challenger's MLflow run."""
    client = tracking.configure(settings)
    contract = dataset_contract(settings)
    # Hashed before it is read: a file changed in between is judged by the gate under another hash, and fails.
    policy_sha = policy_sha256(settings.resolved_policy_path)
    policy = load_policy(settings.resolved_policy_path)
    check_against_contract(policy, contract, settings.resolved_policy_path)
    name = settings.model_name
    try:
        run_id = tracking.run_of(client.get_model_version(name, str(challenger_version)))
    except MlflowException as exc:  # a wrong version number is the caller's mistake: say so, do not score
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise  # the registry failed (unreachable, refused): the task fails, and its retry asks again
        raise UnknownVersionError(
            f"{name} version {challenger_version} does not exist: {exc.message}"
        ) from exc
    check_prepared_holdout(settings, policy, logical_date, dataset_uri)
    holdout = canonical_order(datasets.read_split(dataset_uri, "holdout"), contract)
    check_holdout(holdout, contract, dataset_uri)
    result: dict[str, Any] = {
        "policy_sha256": policy_sha,  # the gate checks that it judges with the same policy
        "holdout_uri": storage.split_uri(dataset_uri, "holdout"),
        "holdout_rows": len(holdout),
        "champion": None,
        "comparison": None,
        "slices": [],
    }
    predictions: dict[str, Any] = {contract.label: holdout[contract.label].to_numpy()}
    challenger, challenger_model, challenger_p = _score(client, name, challenger_version, holdout, contract)
    challenger["data_end"] = data_end(client, name, challenger_version)
    result["challenger"] = challenger
    champion_model = champion_p = None
    champion_version = audit.champion(settings, client)  # the history's; a moved alias is refused
    if champion_version is not None:
        champion, champion_model, champion_p = _score(client, name, champion_version, holdout, contract)
        champion["data_end"] = data_end(client, name, champion_version)
        result["champion"] = {
            k: champion[k] for k in ("version", "metrics", "error", "data_end") if k in champion
        }
        if champion_p is not None:
            predictions["champion"] = champion_p
    if challenger_p is not None:
        predictions["challenger"] = challenger_p
        row = holdout[contract.feature_columns].head(1)
        challenger["latency_ms"] = _latency(settings, policy, challenger_model, champion_model, row)
        challenger["runtimes"] = score_runtimes(challenger_model, holdout, contract, challenger_p)
        if champion_p is not None:
            result["comparison"], result["slices"] = _compare(
                policy, holdout, contract, challenger_p, champion_p
            )

    for column in {rule.column for rule in policy.slices} | {contract.entity_id}:
        predictions[column] = holdout[column].astype(str).to_numpy()
    report_dir = storage.reports_uri(settings.resolved_data_root, settings.dataset, logical_date)
    result["predictions_uri"] = storage.join(report_dir, f"evaluation-v{challenger_version}")
    if history.was_champion(settings, name, challenger_version):
        # A re-run of its day after it was made champion: judged against another champion (or itself), these
        # figures are not the ones that made it champion, which stay on its run and in its predictions file
        # (as its gate record does); this run's are in the task's log and go to its gate.
        log.info(
            "%s v%s was champion: the evaluation that made it champion stays on its run; this one is not "
            "written on it",
            name,
            challenger_version,
        )
    else:
        datasets.write_parquet_frame(pd.DataFrame(predictions), result["predictions_uri"])
        _log_figures(client, run_id, result)
    log.info(
        "holdout (%d rows): challenger %s; champion %s; comparison %s",
        len(holdout),
        result["challenger"],
        result["champion"],
        result["comparison"],
    )
    return result


def _log_figures(client: Any, run_id: str, result: dict[str, Any]) -> None:
    figures = {f"holdout_{k}": v for k, v in (result["challenger"].get("metrics") or {}).items()}
    if result["champion"] and result["champion"].get("metrics"):
        figures |= {f"champion_holdout_{k}": v for k, v in result["champion"]["metrics"].items()}
    comparison = result["comparison"] or {}
    if comparison.get("ci_low") is not None:
        figures["improvement"] = comparison["improvement"]
        figures["improvement_ci_low"], figures["improvement_ci_high"] = (
            comparison["ci_low"],
            comparison["ci_high"],
        )
    latency = result["challenger"].get("latency_ms") or {}
    if "p99" in latency:  # not {"error": ...}: a one-row call that failed (the gate fails closed on it)
        figures |= {"latency_p50_ms": latency["p50"], "latency_p99_ms": latency["p99"]}
    if "size_bytes" in result["challenger"]:
        figures["model_size_bytes"] = result["challenger"]["size_bytes"]
    for runtime, scored in (result["challenger"].get("runtimes") or {}).items():
        prefix = runtime.replace("-", "_")
        figures |= {f"{prefix}_holdout_{k}": v for k, v in (scored.get("metrics") or {}).items()}
        if "max_abs_diff" in scored:
            figures[f"{prefix}_max_abs_diff"] = scored["max_abs_diff"]
    for key, value in figures.items():
        if value is not None and np.isfinite(value):
            client.log_metric(run_id, key, float(value))
