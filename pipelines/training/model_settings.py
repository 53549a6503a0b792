"""Model settings: the default family and each family's hyperparameters, read from include/models/.

``include/models/<dataset>.yaml`` when it exists, else ``include/models/default.yaml``
(``CT_MODEL_SETTINGS_PATH`` points elsewhere). Every key has a default that fits small and large data: early
stopping on the validation split makes the epoch (or boosting iteration) count a ceiling, not a guess.
This module is the one home of those keys; it imports no torch or scikit-learn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from pipelines.config_files import load_yaml_model
from pipelines.settings import ModelFamily, Settings


class ModelSettingsError(ValueError):
    """The model settings file is missing, unreadable or has a bad key."""


class TrainingConfigError(ValueError):
    """The training settings ask for what this host or the data cannot give (a device, a precision, ranks,
    nodes, a rendezvous endpoint): the message names the setting to change (the CLI exits 2)."""


class _Strict(BaseModel):
    # No infinite or NaN number: a learning rate of .inf was accepted and trained a model of NaN weights.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_yes_or_no_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        """YAML reads yes, no, on, off, true and false as booleans, and pydantic took one as 1 or 0:
        ``batch_size: yes`` trained with batches of one row."""
        if info.field_name is None or cls.model_fields[info.field_name].annotation is bool:
            return value
        items = value if isinstance(value, list | tuple) else [value]
        if any(isinstance(item, bool) for item in items):
            raise ValueError(f"{value!r} is a yes or no (YAML's true, false, yes, no, on, off), not a number")
        return value


class EarlyStopping(_Strict):
    patience: int = Field(
        default=10, ge=1, description="Epochs without a validation-loss improvement before training stops."
    )
    min_delta: float = Field(
        default=1e-4, ge=0, description="How much lower the validation loss must be to count as better."
    )
    restore_best: bool = Field(
        default=True, description="End with the weights of the epoch that had the lowest validation loss."
    )


class TorchHyperparameters(_Strict):
    hidden_sizes: tuple[Annotated[int, Field(ge=1)], ...] = Field(
        default=(64, 32), min_length=1, description="Width of each hidden layer of the MLP."
    )
    dropout: float = Field(default=0.1, ge=0, lt=1, description="Dropout after each hidden layer.")
    learning_rate: float = Field(default=2e-3, gt=0, description="AdamW learning rate.")
    weight_decay: float = Field(default=1e-4, ge=0, description="AdamW weight decay.")
    batch_size: int = Field(
        default=256, ge=1, description="Rows per step on each DDP rank (the global batch is this x ranks)."
    )
    max_epochs: int = Field(
        default=200, ge=1, description="Most epochs; CT_TRAIN_EPOCHS overrides it for every dataset."
    )
    early_stopping: EarlyStopping | None = Field(
        default=EarlyStopping(),
        description="Stop when the validation loss stops improving; null trains every epoch.",
    )
    strategy: Literal["ddp", "fsdp"] = Field(
        default="ddp",
        description="How several ranks hold the model: ddp = a whole copy on each; fsdp = parameters, gradients "
        "and optimiser state sharded over them (FSDP2), for a model bigger than one worker.",
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="The forward's dtype: auto = bfloat16 (autocast) on a GPU that supports it, float32 "
        "elsewhere; bf16 asks for it on any device; fp32 never. Weights and the logged model stay float32.",
    )


class SklearnHyperparameters(_Strict):
    max_iter: int = Field(default=300, ge=1, description="Most boosting iterations.")
    learning_rate: float = Field(
        default=0.08, gt=0, le=1, description="Shrinkage of each tree (1: none; more overshoots)."
    )
    max_leaf_nodes: int = Field(default=31, ge=2, description="Leaves of each tree.")
    max_depth: int | None = Field(default=None, ge=1, description="Depth limit of each tree; null = none.")
    min_samples_leaf: int = Field(default=20, ge=1, description="Fewest training rows in a leaf.")
    l2_regularization: float = Field(default=0.0, ge=0, description="L2 penalty on leaf values.")
    max_bins: int = Field(default=255, ge=2, le=255, description="Histogram bins per feature.")
    early_stopping: bool = Field(
        default=True,
        description="Stop when the validation split's loss stops improving (scikit-learn's n_iter_no_change "
        "and tol); false fits every iteration.",
    )
    n_iter_no_change: int = Field(
        default=10, ge=1, description="Iterations without improvement before boosting stops."
    )
    tol: float = Field(default=1e-7, ge=0, description="How much better the validation loss must be.")


class ModelSettings(_Strict):
    version: Literal[1] = Field(default=1, description="Schema version of this file.")
    family: ModelFamily = Field(
        default="torch",
        description="Family trained when neither the run (DAG param, --family) nor CT_MODEL_FAMILY picks one.",
    )
    torch: TorchHyperparameters = TorchHyperparameters()
    sklearn: SklearnHyperparameters = SklearnHyperparameters()


def load_model_settings(path: Path) -> ModelSettings:
    """Read a model settings file; an error names the file and the offending key."""
    return load_yaml_model(path, ModelSettings, "model settings file", ModelSettingsError)


def choose_family(settings: Settings, model_settings: ModelSettings, requested: str | None) -> str:
    """The family to train: the run's choice, else CT_MODEL_FAMILY when it is set, else the file's."""
    if requested:
        return requested
    if settings.model_family is not None:
        return settings.model_family
    return model_settings.family


def resolved_hyperparameters(
    settings: Settings, model_settings: ModelSettings, family: str
) -> dict[str, Any]:
    """One family's hyperparameters after the file's defaults and CT_TRAIN_EPOCHS: what the model is fitted with."""
    if family == "torch":
        torch_settings = model_settings.torch
        if settings.train_epochs is not None:
            torch_settings = torch_settings.model_copy(update={"max_epochs": settings.train_epochs})
        return torch_settings.model_dump(mode="json")
    if family == "sklearn":
        return model_settings.sklearn.model_dump(mode="json")
    raise ValueError(f"unknown model family '{family}'")
