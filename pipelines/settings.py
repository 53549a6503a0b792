"""One typed settings object for every stage.

Every field reads the environment variable ``CT_<FIELD>`` (for example ``CT_ENGINE=spark``) and has an
embedded default that runs on one laptop. Nothing here touches the disk, a network or a tracking URI:
settings are built on demand with :func:`get_settings`, and derived paths are computed, not created.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
INCLUDE_DIR = PROJECT_ROOT / "include"

Engine = Literal["dask", "spark"]
ModelFamily = Literal["torch", "sklearn"]
Device = Literal["auto", "cpu", "cuda"]


class Settings(BaseSettings):
    """Runtime configuration; see the README's configuration table for every variable."""

    model_config = SettingsConfigDict(env_prefix="CT_", extra="ignore")

    state_dir: Path = Field(
        default=PROJECT_ROOT / ".state",
        description="Folder for all embedded state: data, MLflow store, Airflow home.",
    )
    data_root: str | None = Field(
        default=None,
        description="Where datasets, features and reports live (any fsspec URI). Default: <state_dir>/data.",
    )
    dataset: str = Field(
        default="transactions", description="Dataset name; its contract is include/contracts/<dataset>.yaml."
    )
    contract_path: Path | None = Field(
        default=None, description="Data contract file. Default: include/contracts/<dataset>.yaml."
    )
    source_uri: str | None = Field(
        default=None,
        description="Overrides the contract's source.uri: where the dataset's daily partitions are read "
        "({ds} is the day, e.g. s3://bucket/tx/ds={ds}).",
    )
    policy_path: Path | None = Field(
        default=None,
        description="Promotion policy file. Default: include/policies/<dataset>.yaml when it exists, "
        "else include/promotion_policy.yaml.",
    )
    window_days: int = Field(
        default=1, ge=1, description="Days of data, ending on the logical date, that one run trains on."
    )
    rows_per_day: int = Field(
        default=20_000, ge=100, description="Rows per day written by the demo generator."
    )
    seed: int = Field(
        default=7, description="Seed of the demo generator; data is deterministic for (seed, date)."
    )

    engine: Engine = Field(default="dask", description="Data preparation engine.")
    spark_master: str = Field(
        default="local[2]", description="Spark master URL (spark://host:7077 for a cluster)."
    )
    spark_driver_memory: str = Field(default="2g", description="Spark driver memory (spark.driver.memory).")
    spark_shuffle_partitions: int = Field(
        default=8, ge=1, description="spark.sql.shuffle.partitions; raise it for large windows."
    )
    dask_workers: int = Field(
        default=0,
        ge=0,
        description="Workers of the embedded Dask cluster; 0 = one per core.",
    )
    dask_processes_from_mb: int = Field(
        default=64,
        ge=0,
        description="Input size from which the embedded Dask cluster uses worker processes, not threads.",
    )
    dask_scheduler: str | None = Field(
        default=None,
        description="Dask scheduler address (tcp://host:8786). Default: an in-process LocalCluster.",
    )

    mlflow_tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI. Default: sqlite:///<state_dir>/mlflow/mlflow.db."
    )
    mlflow_artifact_root: str | None = Field(
        default=None,
        description="Artifact location for new experiments. Default: <state_dir>/mlflow/artifacts.",
    )
    promotion_db: str | None = Field(
        default=None,
        description="Database of the promotion history (SQLAlchemy URL). Default: promotions.db beside "
        "the SQLite registry, or the registry's PostgreSQL database.",
    )
    promotion_dry_run: bool = Field(
        default=False,
        description="Gate and record every decision, but move nothing: a passing challenger is logged as "
        "'would promote' (the policy's dry_run does the same for one dataset).",
    )
    experiment: str = Field(default="continuous-training", description="MLflow experiment name.")
    model_name: str = Field(default="", description="Registered model name. Default: ct-<dataset>.")

    model_family: ModelFamily = Field(default="torch", description="Model family trained by default.")
    train_world_size: int = Field(default=2, ge=1, description="DDP processes for the torch family.")
    train_device: Device = Field(default="auto", description="Torch device; auto picks cuda when present.")
    train_epochs: int = Field(default=8, ge=1, description="Torch training epochs.")

    serve_host: str = Field(default="127.0.0.1", description="Serving bind address.")
    serve_port: int = Field(default=8000, description="Serving port.")

    @model_validator(mode="after")
    def _default_model_name(self) -> Settings:
        if not self.model_name:
            self.model_name = f"ct-{self.dataset}"
        return self

    @cached_property
    def resolved_data_root(self) -> str:
        return self.data_root or str(self.state_dir / "data")

    @cached_property
    def resolved_contract_path(self) -> Path:
        return self.contract_path or INCLUDE_DIR / "contracts" / f"{self.dataset}.yaml"

    @cached_property
    def resolved_policy_path(self) -> Path:
        if self.policy_path:
            return self.policy_path
        per_dataset = INCLUDE_DIR / "policies" / f"{self.dataset}.yaml"
        return per_dataset if per_dataset.exists() else INCLUDE_DIR / "promotion_policy.yaml"

    @cached_property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.state_dir / 'mlflow' / 'mlflow.db'}"

    @cached_property
    def artifact_root(self) -> str:
        return self.mlflow_artifact_root or str(self.state_dir / "mlflow" / "artifacts")


def get_settings(**overrides: object) -> Settings:
    """Build settings from the environment, with explicit keyword overrides on top."""
    return Settings(**overrides)  # type: ignore[arg-type]
