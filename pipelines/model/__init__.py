"""The model a registered version holds, and how it is scored on column arrays.

Training writes it, evaluation scores it, serving serves it; it imports only the data layer.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # Versions registered before the layout by folders pickled their model class as
    # ``pipelines.model.ChurnClassifier``; this keeps them loadable, without importing MLflow here.
    if name == "ChurnClassifier":
        from pipelines.model.classifier import ChurnClassifier

        return ChurnClassifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
