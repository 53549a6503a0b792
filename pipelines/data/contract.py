"""The data contract: a YAML file in include/contracts/ that names a dataset's columns and rules."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipelines.config_files import load_yaml_model
from pipelines.settings import FileFormat, Settings, check_dataset_name

if TYPE_CHECKING:
    import pyarrow as pa

ColumnType = Literal["string", "int", "float", "category", "timestamp"]
ValueType = Literal["string", "int", "float", "timestamp", "bool"]
DriftMethod = Literal["wasserstein", "jensenshannon"]
DRIFT_THRESHOLD = 0.1  # Evidently's default for both methods


#: The columns the prediction log (:mod:`pipelines.serving.predlog`) writes beside a model's inputs.
LOG_OWN_COLUMNS = (
    "served_at",
    "model_name",
    "model_version",
    "request_id",
    "entity_id",
    "event_time",
    "probability",
    "label",
)


class ContractError(ValueError):
    """The contract file itself is unreadable or inconsistent."""


class ColumnSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: ColumnType
    nullable: bool = False
    max_null_share: float | None = Field(default=None, ge=0, le=1)
    min: float | None = None
    max: float | None = None
    allowed: list[bool | int | str] | None = Field(
        default=None,
        description="The only values the column may hold. A category's values are all text, all integers or "
        "all booleans, and the column holds them with that type.",
    )
    role: Literal["feature", "other"] = "other"
    log: bool = False
    drift: DriftMethod | None = Field(
        default=None,
        description="The drift test of this column, fixed whatever the day's data: wasserstein (normed, numbers "
        "only; the default for numbers) or jensenshannon (the default for categories; right for a number with "
        "few values, such as a flag or a code).",
    )
    drift_threshold: float = Field(
        default=DRIFT_THRESHOLD, gt=0, description="The column drifts when its score reaches this."
    )

    @property
    def value_type(self) -> ValueType:
        """The type the column's values have once typed: a category's is that of its allowed values."""
        if self.type != "category":
            return self.type
        kinds = {_value_kind(value) for value in self.allowed or []}
        return kinds.pop() if len(kinds) == 1 else "string"


def _value_kind(value: bool | int | str) -> ValueType:
    if isinstance(value, bool):
        return "bool"
    return "int" if isinstance(value, int) else "string"


class SourceSpec(BaseModel):
    """Where a dataset's raw partitions come from: one folder, file or glob per day, on any fsspec URI."""

    model_config = ConfigDict(extra="forbid")

    uri: str = Field(
        description="URI template; {ds} is the day (YYYY-MM-DD), {data_root} and {dataset} the settings' "
        "values, ${VAR} an environment variable. A folder is read whole, a file or a glob as it is."
    )
    format: FileFormat = "parquet"
    csv_delimiter: str = Field(default=",", min_length=1, max_length=1)
    missing_days: Literal["fail", "skip"] = Field(
        default="fail",
        description="What a day with no data in the window means: fail (the run stops; upstream is late) or "
        "skip (a known gap: the run trains on the days that exist and records the gap).",
    )
    max_missing_days: int = Field(
        default=0,
        ge=0,
        description="With missing_days: skip, the most days of one window that may be missing.",
    )
    generator: Literal["transactions"] | None = Field(
        default=None, description="A built-in demo generator that writes this source (`pipelines generate`)."
    )


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(description="The dataset's name: the settings' dataset must be the same.")
    version: int = 1
    entity_id: str
    event_time: str
    label: str
    min_rows: int = Field(default=1, ge=0)
    unique: list[str] = Field(
        default_factory=list, description="Columns whose values, together, are unique within one day."
    )
    allow_duplicate_rows: bool = False
    event_time_within_partition: bool = Field(
        default=True, description="Every row's event time falls on the day of the partition it came in."
    )
    label_delay_hours: float = Field(
        default=24,
        ge=0,
        description="How long after an event its label is in the source: the monitor joins a day's served "
        "predictions to the source's labels once the day ended this many hours ago.",
    )
    source: SourceSpec
    splits: dict[Literal["train", "validation", "holdout"], int]
    columns: dict[str, ColumnSpec]

    @field_validator("dataset")
    @classmethod
    def _safe_dataset(cls, value: str) -> str:
        return check_dataset_name(value)

    @model_validator(mode="after")
    def _check(self) -> Contract:
        self._check_roles()
        self._check_columns()
        self._check_feature_roles()
        self._check_prepared_names()
        label = self.columns[self.label]
        if label.drift == "wasserstein":
            raise ValueError(
                f"label '{self.label}': its drift is a category's (jensenshannon), not wasserstein"
            )
        if label.type != "int" or sorted(label.allowed or []) != [0, 1]:
            raise ValueError(
                f"label '{self.label}' must be type int with allowed [0, 1] (binary classification)"
            )
        if not self.feature_columns:
            raise ValueError("no column has role: feature")
        if taken := [name for name in self.feature_columns if name in LOG_OWN_COLUMNS]:
            raise ValueError(
                f"feature(s) {', '.join(map(repr, taken))} have the name of a column the prediction log writes "
                f"beside a model's inputs ({', '.join(LOG_OWN_COLUMNS)}): the log would hold one of the two, and "
                "the monitor would judge the wrong one; rename the feature"
            )
        return self

    def _check_roles(self) -> None:
        for role_name in ("entity_id", "event_time", "label"):
            column = getattr(self, role_name)
            if column not in self.columns:
                raise ValueError(f"{role_name} names column '{column}', which is not under columns")
        for split, share in self.splits.items():
            if share <= 0:
                # Every split is read: training and early stopping read train and validation, evaluation the
                # holdout (a policy's holdout.latest_days holds out whole days instead, but the share stays
                # the fallback), and an empty split stops the run far from this file.
                raise ValueError(
                    f"splits.{split} is {share}: each of train, validation and holdout needs a positive "
                    "percentage of the entities"
                )
        if sum(self.splits.values()) != 100 or set(self.splits) != {"train", "validation", "holdout"}:
            raise ValueError(
                f"splits must give train, validation and holdout percentages summing to 100: {self.splits}"
            )

    def _check_columns(self) -> None:
        for name, spec in self.columns.items():
            if spec.type == "category":
                self._check_category(name, spec)
            if spec.drift == "wasserstein" and spec.type not in ("int", "float"):
                raise ValueError(f"column '{name}': drift wasserstein needs a number (int or float)")
            if spec.type == "int" and spec.nullable:
                raise ValueError(f"column '{name}': an int column cannot be nullable; declare it as float")
        for name in self.unique:
            if name not in self.columns:
                raise ValueError(f"unique names column '{name}', which is not under columns")

    def _check_feature_roles(self) -> None:
        """A key or the label marked as a feature: the model would read the answer (the label: target leakage)
        or learn the rows rather than the pattern (an id, a time), and prepare would write the column twice."""
        roles = {role_name: getattr(self, role_name) for role_name in ("entity_id", "event_time", "label")}
        for role_name, column in roles.items():
            if others := [other for other, named in roles.items() if named == column and other != role_name]:
                raise ValueError(
                    f"column '{column}' is both the {role_name} and the {others[0]}: each role needs its own column"
                )
        for role_name, why in (
            ("label", "the model would read the answer it is asked to predict"),
            ("entity_id", "a model that learns ids learns the rows, not the pattern"),
            ("event_time", "the prepared dataset keeps it as a key, not as a model input"),
        ):
            column = getattr(self, role_name)
            if self.columns[column].role == "feature":
                raise ValueError(
                    f"column '{column}' is the {role_name} and cannot be a feature: {why} (give it role: other)"
                )

    def _check_prepared_names(self) -> None:
        """Every column of a prepared dataset has one maker: two with one name broke prepare with "Duplicate
        column names found" (Dask) and left one feature overwriting the other in training and serving.

        The engineered names come from :func:`pipelines.data.features.feature_names`, one column at a time, so
        that this check and the features it guards cannot name them differently.
        """
        # Imported here: features imports this module at its top.
        from pipelines.data.features import SPLIT_COLUMN, feature_names, raw_columns

        makers: dict[str, list[str]] = {}
        for name in raw_columns(self):
            makers.setdefault(name, []).append(name)
        for name in self.feature_columns:
            alone = self.model_copy(update={"columns": {name: self.columns[name]}})
            for engineered in feature_names(alone):
                makers.setdefault(engineered, []).append(name)
        if SPLIT_COLUMN in makers:
            raise ValueError(
                f"column '{SPLIT_COLUMN}' has the name of the column prepare adds for each row's split "
                "(train, validation or holdout): rename it"
            )
        for made, columns in makers.items():
            if len(columns) > 1:
                raise ValueError(
                    f"columns {' and '.join(map(repr, columns))} would both make the prepared column '{made}' "
                    "(a feature is f_<column>, with f_<column>__missing beside a nullable number and "
                    "f_<column>__<value> for each value of a category): rename one"
                )

    @staticmethod
    def _check_category(name: str, spec: ColumnSpec) -> None:
        if not spec.allowed:
            raise ValueError(f"column '{name}' is a category and needs an 'allowed' list")
        kinds = sorted({_value_kind(value) for value in spec.allowed})
        if len(kinds) > 1:
            raise ValueError(
                f"column '{name}': allowed mixes {' and '.join(kinds)} values; a category's values are all text, "
                "all integers or all booleans"
            )
        if spec.nullable and kinds != ["string"]:
            raise ValueError(
                f"column '{name}': a category of {kinds[0]} values cannot be nullable; declare its values as "
                "text (quoted in YAML) to allow nulls"
            )
        if len(set(map(str, spec.allowed))) != len(spec.allowed):
            raise ValueError(f"column '{name}': allowed lists a value twice")

    @property
    def feature_columns(self) -> list[str]:
        return [name for name, spec in self.columns.items() if spec.role == "feature"]

    @property
    def numeric_features(self) -> list[str]:
        return [n for n in self.feature_columns if self.columns[n].type in ("int", "float")]

    @property
    def categorical_features(self) -> list[str]:
        return [n for n in self.feature_columns if self.columns[n].type == "category"]

    def drift_test(self, name: str) -> tuple[DriftMethod, float]:
        """The drift test and threshold of a column: the contract's, else by type."""
        spec = self.columns[name]
        numeric = spec.type in ("int", "float") and name != self.label
        return spec.drift or ("wasserstein" if numeric else "jensenshannon"), spec.drift_threshold

    def arrow_schema(self, columns: list[str] | None = None) -> pa.Schema:
        """The Arrow types of some columns (default: all) once typed: what raw partitions hold."""
        import pyarrow as pa

        types = {
            "string": pa.string(),
            "int": pa.int64(),
            "bool": pa.bool_(),
            "float": pa.float64(),
            "timestamp": pa.timestamp("us", tz="UTC"),
        }
        names = list(self.columns) if columns is None else columns
        return pa.schema([(name, types[self.columns[name].value_type]) for name in names])

    def fingerprint(self) -> str:
        """A hash of every rule about the data: raw data validated under one contract is re-validated under
        another, and the prepared window's version (the training's identity) follows it.

        What no rule about the rows is stays out (:data:`NOT_DATA_RULES`): the label delay (when the monitor reads
        labels), each column's drift test and threshold (how the gate and the monitor judge drift), and where the
        source is and what generates it (its files' own fingerprint notices other data). Tuning a drift threshold
        re-validated every raw day, re-reading a source whose old days upstream had dropped, and retrained on the
        same rows under a new dataset version.
        """
        return _short_hash(self.model_dump_json(exclude=NOT_DATA_RULES))

    def validated_under(self, fingerprint: object) -> bool:
        """Whether raw data validated under a contract of ``fingerprint`` was validated under these rules: this
        contract's fingerprint, or the same rules' as fingerprinted before 2026-12-06 (drift tests and the
        source's place in it), so that raw days validated then are not validated again for it."""
        legacy = _short_hash(self.model_dump_json(exclude={"label_delay_hours"}))
        return fingerprint in (self.fingerprint(), legacy)


#: The contract's keys that are no rule about the rows (:meth:`Contract.fingerprint` leaves them out).
NOT_DATA_RULES: dict[str, Any] = {
    "label_delay_hours": True,
    "source": {"uri", "generator"},
    "columns": {"__all__": {"drift", "drift_threshold"}},
}


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_contract(path: Path) -> Contract:
    """Read and check a contract file; errors name the file and the key."""
    contract = load_yaml_model(path, Contract, "contract file", ContractError)
    # Checked on the file, not in the model: a model logged under a contract that allowed it still loads.
    for name in contract.feature_columns:
        kind = contract.columns[name].type
        if kind in ("string", "timestamp"):
            # Feature engineering reads numbers and categories only: such a column was accepted and then left
            # out of every model without a word.
            raise ContractError(
                f"contract file {path}: column '{name}' ({kind}) cannot be a feature: only numbers (int, float) "
                "and categories (booleans included, as a category of true and false) can; give it role: other, "
                "or declare it a category with its allowed values"
            )
    for role in ("entity_id", "event_time"):
        column = getattr(contract, role)
        if contract.columns[column].nullable:
            # A row with no event time passed the within-day check and went to train past a holdout of the
            # latest days; one with no entity id is split, joined and made unique by nothing.
            raise ContractError(
                f"contract file {path}: column '{column}' is the {role} and cannot be nullable: every row needs "
                "one (declare it nullable: false)"
            )
    return contract


def dataset_contract(settings: Settings) -> Contract:
    """The contract of the settings' dataset; one that declares another dataset is refused, naming both."""
    path = settings.resolved_contract_path
    contract = load_contract(path)
    if contract.dataset != settings.dataset:
        raise ContractError(
            f"contract file {path} declares dataset '{contract.dataset}', but the settings name dataset "
            f"'{settings.dataset}' (CT_DATASET, or the DAG's dataset param): make them the same"
        )
    return contract
