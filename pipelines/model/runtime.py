"""One loaded, verified, warmed model version, and how a batch of column arrays is scored on it.

The project's own models (:class:`pipelines.model.classifier.ChurnClassifier`) are scored on column
arrays directly: features into one float32 matrix, then ONNX Runtime, the torch MLP under
``inference_mode`` or the scikit-learn estimator. Any other pyfunc model goes through its ``predict`` on
a DataFrame and must return ``probability`` (and optionally ``label``) columns.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from mlflow.exceptions import MlflowException

from pipelines.host import usable_cores
from pipelines.model.classifier import OnnxRuntimeError, project_model
from pipelines.model.decision import labels
from pipelines.model.signature import InputSchema, RequestError

# What calling a loaded model raises when the model or its input is at fault: a pyfunc's own input checks
# (MlflowException), input it does not take (ValueError, KeyError: a missing column, another feature count
# for scikit-learn), torch and ONNX Runtime refusing a batch (RuntimeError, OnnxRuntimeError). Evaluation
# records it as that model's error; serving refuses the version while the old one keeps serving. Anything
# else (a TypeError, an AttributeError) is a bug, and fails the task or is logged with its trace.
SCORING_ERRORS: tuple[type[BaseException], ...] = (MlflowException, ValueError, KeyError, RuntimeError)


class ModelOutputError(RuntimeError):
    """A served model answered outside its contract (a probability outside [0, 1]): the server's 500, not the
    client's fault."""


class ModelLoadError(RuntimeError):
    """A version that cannot be put in service; ``reason`` is the metrics label."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def set_threads(threads: int) -> int:
    """Threads for one model call (torch intra-op, OpenMP/BLAS); 0 means one per core."""
    from threadpoolctl import threadpool_limits

    count = threads or usable_cores()
    if (torch := sys.modules.get("torch")) is not None:  # loaded by a torch model; never imported for others
        torch.set_num_threads(count)
    threadpool_limits(limits=count)
    return count


@dataclass
class ServedModel:
    name: str
    version: int
    sha256: str
    run_id: str | None
    schema: InputSchema
    pyfunc: Any
    loaded_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    load_seconds: float = 0.0
    warmup_ms: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._fast = project_model(self.pyfunc)
        self.runtime = (
            f"{self._fast.config['family']} native (column arrays)" if self._fast else "pyfunc (DataFrame)"
        )

    @property
    def scores_inline(self) -> bool:
        """Whether a small batch may be scored on the event loop: the project's own models answer in a fraction of
        a millisecond; a pyfunc of its own kind runs code that may take any time, and would stall every route."""
        return self._fast is not None

    def use_runtime(self, wanted: str, threads: int) -> None:
        """``auto``: ONNX (float32) when the model carries it, else native; a named one must exist."""
        if self._fast is None:
            if wanted not in ("auto", "native"):
                raise ModelLoadError("runtime", f"runtime {wanted} needs a model with ONNX exports")
            return
        available = getattr(self._fast, "onnx_models", {})
        choice = ("onnx" if "onnx" in available else "native") if wanted == "auto" else wanted
        try:
            self._fast.use_runtime(choice, threads)
        except (ValueError, OnnxRuntimeError) as exc:
            raise ModelLoadError("runtime", f"CT_SERVE_RUNTIME={wanted}: {exc}") from exc
        family = self._fast.config["family"]
        self.runtime = (
            f"{family} {choice} (column arrays)" if choice != "native" else f"{family} native (column arrays)"
        )

    def predict(self, columns: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and labels for a batch of rows. A row the model gives no probability (NaN) is the
        request's 422: a value within float32 but far outside the training data (1e38 where features are
        scaled by their spread) overflowed in the model, and flag mode answered 200 with a null."""
        probability, label = self._scores(columns)
        # A pyfunc that drops a row (a dropna) or adds one: in a micro-batch, another client's answers would
        # shift onto this one's.
        sent = len(next(iter(columns.values()))) if columns else 0
        if len(probability) != sent or len(label) != sent:
            raise ModelOutputError(
                f"{self.name} v{self.version} gave {len(probability)} probabilities and {len(label)} labels for "
                f"{sent} rows"
            )
        if not np.isfinite(probability).all():
            rows = np.flatnonzero(~np.isfinite(probability))
            shown = ", ".join(str(row) for row in rows[:5]) + (", ..." if len(rows) > 5 else "")
            raise RequestError(
                422,
                f"row(s) {shown}: the model gave no probability for their values (not a number): they lie far "
                "outside what it was trained on",
            )
        if probability.min(initial=0.0) < 0 or probability.max(initial=1.0) > 1:
            raise ModelOutputError(
                f"{self.name} v{self.version} gave probabilities outside [0, 1] "
                f"({probability.min():g} to {probability.max():g})"
            )
        return probability, label

    def _scores(self, columns: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        if self._fast is not None:
            probability = self._fast.predict_proba_columns(columns)
            return probability, labels(probability)
        import pandas as pd

        output = self.pyfunc.predict(pd.DataFrame(self._pyfunc_columns(columns)))
        if not isinstance(output, pd.DataFrame) or "probability" not in output:
            raise ModelLoadError("signature", "the model's output has no 'probability' column")
        probability = output["probability"].to_numpy(dtype="float64")
        if "label" in output:
            return probability, output["label"].to_numpy(dtype="int64")
        return probability, labels(probability)

    def _pyfunc_columns(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The columns as MLflow's schema check takes them: it refuses a null (NaN) in an integer column,
        optional or not, so an optional integer field null in every row is left out (as if not sent), and
        one null in some rows is the request's 422, naming the field, not the model's 500. A field its
        signature gives 32 bits (``integer``, ``float``) is narrowed to them: MLflow refuses 64 bits there,
        and every such model was refused at its warm-up; an integer beyond int32 is the request's 422."""
        out = dict(columns)
        for found in self.schema.fields:
            values = columns.get(found.name)
            if values is None or found.kind not in ("integer", "number"):
                continue
            if found.kind == "integer" and values.dtype.kind == "f":
                nulls = int(np.isnan(values).sum())
                if nulls == len(values) and not found.required:
                    del out[found.name]
                    continue
                if nulls:
                    raise RequestError(
                        422,
                        f"{found.name}: null in {nulls} of {len(values)} rows; this model (an MLflow model "
                        "of its own kind) takes no null in an integer field: send a value, or leave the field "
                        "out",
                    )
            if found.narrow:
                out[found.name] = _narrowed(found.name, found.kind, values)
        return out

    def warm_up(self, max_rows: int, calls: int = 20) -> None:
        """Score neutral rows until the first-call costs are paid; a bad output refuses the model."""
        timings = {}
        # A model of its own kind (an MLflow pyfunc) runs its own code: whatever it raises (a TypeError in it
        # too) refuses the version. The project's own models run this project's code, where only the scoring
        # errors are the model's (its input, its weights); a TypeError there is a bug, which the holder counts as
        # one, logs with its trace and tries again with a backoff rather than refusing the version.
        refused: tuple[type[BaseException], ...] = (
            (*SCORING_ERRORS, ModelOutputError) if self._fast is not None else (Exception,)
        )
        for rows in (1, max_rows):
            columns = self.schema.example_columns(rows)
            started = time.perf_counter()
            for _ in range(calls if rows == 1 else 2):
                try:
                    probability, label = self.predict(columns)
                except ModelLoadError:
                    raise
                except refused as exc:
                    raise ModelLoadError("warmup", f"scoring a warm-up batch failed: {exc!r}") from exc
            timings[f"rows_{rows}"] = round((time.perf_counter() - started) * 1000, 3)
            if probability.shape != (rows,) or label.shape != (rows,):
                raise ModelLoadError("warmup", f"warm-up of {rows} rows returned shape {probability.shape}")
            if not np.all(np.isfinite(probability)) or probability.min() < 0 or probability.max() > 1:
                raise ModelLoadError("warmup", "warm-up probabilities are not all within [0, 1]")
        self.warmup_ms = timings

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "run_id": self.run_id,
            "loaded_at": self.loaded_at,
            "load_seconds": round(self.load_seconds, 3),
            "runtime": self.runtime,
            "inputs": [{"name": f.name, "type": f.kind, "required": f.required} for f in self.schema.fields],
        }


def _narrowed(name: str, kind: str, values: np.ndarray) -> np.ndarray:
    """A column in the 32 bits its signature gives it: float32, or int32 (a value beyond it: a 422)."""
    if kind == "number":
        return values.astype("float32")
    info = np.iinfo(np.int32)
    outside = values[(values < info.min) | (values > info.max)]
    if len(outside):
        raise RequestError(
            422,
            f"{name}: {int(outside[0])} is outside int32, the type this model's signature gives the field",
        )
    return values.astype("int32")
