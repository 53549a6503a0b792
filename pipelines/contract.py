"""The data contract: a YAML file in include/contracts/ that names a dataset's columns and rules."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipelines.config_files import load_yaml_model

ColumnType = Literal["string", "int", "float", "category", "timestamp"]


class ContractError(ValueError):
    """The contract file itself is unreadable or inconsistent."""


class ColumnSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: ColumnType
    nullable: bool = False
    max_null_share: float | None = Field(default=None, ge=0, le=1)
    min: float | None = None
    max: float | None = None
    allowed: list[str | int] | None = None
    role: Literal["feature", "other"] = "other"
    log: bool = False


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str
    version: int = 1
    entity_id: str
    event_time: str
    label: str
    min_rows: int = 1
    splits: dict[Literal["train", "validation", "holdout"], int]
    columns: dict[str, ColumnSpec]

    @model_validator(mode="after")
    def _check(self) -> Contract:
        for role_name in ("entity_id", "event_time", "label"):
            column = getattr(self, role_name)
            if column not in self.columns:
                raise ValueError(f"{role_name} names column '{column}', which is not under columns")
        if sum(self.splits.values()) != 100 or set(self.splits) != {"train", "validation", "holdout"}:
            raise ValueError(
                f"splits must give train, validation and holdout percentages summing to 100: {self.splits}"
            )
        for name, spec in self.columns.items():
            if spec.type == "category" and not spec.allowed:
                raise ValueError(f"column '{name}' is a category and needs an 'allowed' list")
        if not self.feature_columns:
            raise ValueError("no column has role: feature")
        return self

    @property
    def feature_columns(self) -> list[str]:
        return [name for name, spec in self.columns.items() if spec.role == "feature"]

    @property
    def numeric_features(self) -> list[str]:
        return [n for n in self.feature_columns if self.columns[n].type in ("int", "float")]

    @property
    def categorical_features(self) -> list[str]:
        return [n for n in self.feature_columns if self.columns[n].type == "category"]


def load_contract(path: Path) -> Contract:
    """Read and check a contract file; errors name the file and the key."""
    return load_yaml_model(path, Contract, "contract file", ContractError)
