"""One typed, immutable settings object for every stage.

Every field reads the environment variable ``CT_<FIELD>`` (for example ``CT_ENGINE=spark``) and has an
embedded default that runs on one laptop. Nothing here touches the disk, a network or a tracking URI:
settings are built on demand with :func:`get_settings`, and derived paths are computed on every read, so
a copy with another dataset (:meth:`Settings.replace`) resolves that dataset's files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
INCLUDE_DIR = PROJECT_ROOT / "include"

EngineName = Literal["dask", "spark"]
ENGINE_NAMES: tuple[str, ...] = get_args(EngineName)
ModelFamily = Literal["torch", "sklearn"]
FAMILY_NAMES: tuple[str, ...] = get_args(ModelFamily)
#: Customers of the demo dataset; its generator writes at most one row per customer a day.
DEMO_CUSTOMERS = 200_000
MODEL_FAMILIES: tuple[str, ...] = get_args(ModelFamily)
Device = Literal["auto", "cpu", "cuda"]
FileFormat = Literal["parquet", "csv"]  # what a source (and an engine) reads
ServeRuntime = Literal["auto", "native", "onnx", "onnx-int8"]
# Bounds of the settings that become a timedelta or a timer: far beyond any real use, well inside what
# datetime and threading take (a timedelta of 10**10 days, or a timer of 10**12 s, overflows).
MAX_DAYS = 36_500  # a century; the keep-days settings take 0 for "kept"
MAX_TIMEOUT_S = 30 * 86_400  # thirty days
DATASET_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def check_dataset_name(name: str) -> str:
    """``name`` if it is a safe dataset name (it becomes part of paths and model names); else ValueError."""
    if not DATASET_NAME.fullmatch(name):
        raise ValueError(
            f"dataset name {name!r} may hold only letters, digits, '_' and '-' (it names folders, files "
            "and the registered model)"
        )
    return name


class Settings(BaseSettings):
    """Runtime configuration; see the README's configuration table for every variable."""

    # hide_input_in_errors: a refused value can hold a secret (a token in CT_SPARK_REMOTE); errors name the key.
    # allow_inf_nan=False: "inf" is no "no limit" (a timer or a timedelta of it overflows far from the setting)
    # and NaN passes every bound; both are refused here, naming the setting.
    model_config = SettingsConfigDict(
        env_prefix="CT_", extra="ignore", frozen=True, hide_input_in_errors=True, allow_inf_nan=False
    )

    state_dir: Path = Field(
        default=PROJECT_ROOT / ".state",
        description="Folder for all embedded state: data, MLflow store, Airflow home.",
    )
    data_root: str | None = Field(
        default=None,
        description="Where datasets, features and reports live (any fsspec URI). Default: <state_dir>/data.",
    )
    dataset: str = Field(
        default="transactions",
        description="Dataset name (letters, digits, _ and -); its contract is include/contracts/<dataset>.yaml.",
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
    monitoring_policy_path: Path | None = Field(
        default=None,
        description="Monitoring policy file. Default: include/monitoring/<dataset>.yaml when it exists, "
        "else include/monitoring_policy.yaml.",
    )
    window_days: int = Field(
        default=1,
        ge=1,
        le=MAX_DAYS,
        description="Days of data, ending on the logical date, that one run trains on.",
    )
    rows_per_day: int = Field(
        default=20_000,
        ge=100,
        le=DEMO_CUSTOMERS,
        description="Rows per day written by the demo generator (one per customer a day, of 200,000).",
    )
    seed: int = Field(
        default=7,
        ge=0,
        # scikit-learn's random_state and numpy's RandomState take at most 2^32 - 1: a larger seed passed
        # generate, validate and prepare, then failed training with scikit-learn's error, naming no setting
        le=2**32 - 1,
        description="Seed of the demo generator and of training; data is deterministic for (seed, date).",
    )

    engine: EngineName = Field(default="dask", description="Data preparation engine.")
    spark_master: str = Field(
        default="local[2]", description="Spark master URL (spark://host:7077 for a cluster)."
    )
    spark_remote: str | None = Field(
        default=None,
        description="A Spark Connect server (sc://host:15002): the data stages' sessions connect to it as thin "
        "clients, with no JVM in the task; CT_SPARK_MASTER then only serves the spark training launcher.",
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
    monitor_dask_processes_from_mb: int = Field(
        default=1024,
        ge=0,
        description="The same for the monitor's pass over the prediction log: its work per row is light (a "
        "read and counts), so threads beat the seconds worker processes take to start on larger inputs too.",
    )
    monitor_in_task_below_mb: int = Field(
        default=64,
        ge=0,
        description="The monitor's pass over an interval's prediction log smaller than this runs in the task's own "
        "threads whatever the engine: on Spark, or a Dask scheduler, a job's fixed cost is more than the pass "
        "(2.3-2.9 s through a Spark Connect server for 1M logged rows, 29 MiB, against 0.3 s in the task). "
        "0 = always on the engine.",
    )
    monitor_label_lookback_days: int = Field(
        default=7,
        ge=0,
        le=MAX_DAYS,
        description="Live quality joins a served event to the labels of its event day's validated partition, back "
        "to this many days before the day it was served (a client scoring an older event); older events count "
        "as unlabelled.",
    )
    dask_scheduler: str | None = Field(
        default=None,
        description="Dask scheduler address (tcp://host:8786). Default: embedded (threads in the process for "
        "small inputs, a LocalCluster of worker processes from CT_DASK_PROCESSES_FROM_MB).",
    )

    mlflow_tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI. Default: sqlite:///<state_dir>/mlflow/mlflow.db."
    )
    mlflow_artifact_root: str | None = Field(
        default=None,
        description="Artifact location for new experiments. Default: <state_dir>/mlflow/artifacts, or the "
        "tracking server's own (mlflow-artifacts:/, its artifact proxy) when the tracking URI is http(s).",
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
    mlflow_ui_url: str = Field(
        default="http://127.0.0.1:5000",
        description="Address of the MLflow UI people open (`make mlflow`, or the team's MLflow server); "
        "Airflow's links to runs, artifacts and model versions point there.",
    )
    experiment: str = Field(default="continuous-training", description="MLflow experiment name.")
    model_name: str = Field(
        default="", validate_default=True, description="Registered model name. Default: ct-<dataset>."
    )

    model_family: ModelFamily | None = Field(
        default=None,
        description="Model family to train; unset = the model settings file's family (the DAG's model_family "
        "param and the CLI's --family choose per run).",
    )
    train_world_size: int | Literal["auto"] = Field(
        default="auto",
        description="DDP ranks for the torch family; auto = one in-process rank below "
        "CT_TRAIN_PROCESSES_FROM_ROWS training rows; from there one per GPU on CUDA, and one per core on the CPU "
        "for a model of CT_TRAIN_PROCESSES_FROM_PARAMETERS or more. With CT_TRAIN_LAUNCHER=spark, a number.",
    )
    train_processes_from_rows: int = Field(
        default=1_000_000,
        ge=0,
        description="Training rows from which world size auto launches several ranks (see "
        "CT_TRAIN_PROCESSES_FROM_PARAMETERS for the CPU).",
    )
    train_processes_from_parameters: int = Field(
        default=100_000,
        ge=0,
        description="MLP parameters from which world size auto runs one rank per core on the CPU (with at least "
        "CT_TRAIN_PROCESSES_FROM_ROWS training rows; below that, one in-process rank on every core's threads): a "
        "smaller model's step is too short to pay for its all-reduce or for threads, and trains on one thread.",
    )
    train_device: Device = Field(
        default="auto",
        description="Torch device; auto picks cuda when present and the MLP's step is big enough for it "
        "(CT_TRAIN_GPU_FROM_STEP_WORK), else the CPU.",
    )
    train_gpu_from_step_work: int = Field(
        default=16_000_000,
        ge=0,
        description="An MLP's parameters times its batch size from which CT_TRAIN_DEVICE=auto trains on a GPU: a "
        "smaller step runs faster on one CPU thread than a GPU step's fixed cost (the demo MLP, 3,201 parameters "
        "at batch 256: 113,800 samples/s on an H200, 327,000 on one CPU thread); 0 = always the GPU when present.",
    )
    train_epochs: int | None = Field(
        default=None,
        ge=1,
        description="Overrides the model settings' maximum epochs (torch) for every dataset; unset = the "
        "model settings decide.",
    )
    train_launcher: Literal["local", "torchrun", "spark"] = Field(
        default="local",
        description="How DDP ranks start: local = torchrun on this host; torchrun = this host as one node of "
        "CT_TRAIN_NNODES meeting at CT_TRAIN_RDZV_ENDPOINT (other hosts run python -m pipelines.training.node); "
        "spark = TorchDistributor on CT_SPARK_MASTER, one rank per executor task.",
    )
    train_rdzv_endpoint: str | None = Field(
        default=None,
        description="host:port of the c10d rendezvous every node reaches (CT_TRAIN_LAUNCHER=torchrun).",
    )
    train_nnodes: str = Field(
        default="1",
        description="Nodes of a torchrun launch: N, or MIN:MAX for an elastic one (CT_TRAIN_LAUNCHER=torchrun).",
    )
    train_procs_per_node: int = Field(
        default=1, ge=1, description="Ranks each node starts (CT_TRAIN_LAUNCHER=torchrun): one per GPU, or 1."
    )
    train_timeout_s: float = Field(
        default=3 * 3600,
        gt=0,
        le=MAX_TIMEOUT_S,
        description="Seconds a launched (multi-rank) training may take in all; past it the ranks are stopped and "
        "the task fails, naming each rank's host and last position.",
    )
    train_rendezvous_timeout_s: float = Field(
        default=120,
        gt=0,
        le=MAX_TIMEOUT_S,
        description="Seconds ranks wait to join the group, and for any one collective: a missing or hung rank "
        "fails the launch within it.",
    )
    train_max_restarts: int = Field(
        default=2,
        ge=0,
        description="Times torchrun restarts the ranks after one fails, within one task attempt; each restart "
        "resumes from the last checkpoint.",
    )
    train_checkpoint_every_steps: int | None = Field(
        default=None,
        ge=1,
        description="Also checkpoint every N optimiser steps; unset = at the end of every epoch only.",
    )
    train_keep_checkpoints: bool = Field(
        default=False,
        description="Keep a training's checkpoints and job folder (<data_root>/training/...) after its model is "
        "logged; by default they are removed then.",
    )
    prepared_keep_days: int = Field(
        default=30,
        ge=0,
        le=MAX_DAYS,
        description="Days a prepared window (<data_root>/features/<dataset>/ds=<day>) is kept: the retrain's prune "
        "task removes those of days more than this before its logical date, except the windows of model versions "
        "holding an alias or once champion, and any written in the last 4 days (a re-run of an old date prepares "
        "its window again); 0 = kept.",
    )
    training_jobs_keep_days: float = Field(
        default=7,
        ge=0,
        le=MAX_DAYS,
        description="Days a training job folder (<data_root>/training/...) that no run finished is kept after its "
        "last write, for a retry to resume from; the retrain's prune task removes it then (and at once one whose "
        "model is logged, unless CT_TRAIN_KEEP_CHECKPOINTS); 0 = kept.",
    )
    model_settings_path: Path | None = Field(
        default=None,
        description="Model settings file (family, hyperparameters). Default: include/models/<dataset>.yaml "
        "when it exists, else include/models/default.yaml.",
    )

    serve_host: str = Field(default="127.0.0.1", description="Serving bind address.")
    # 0: any free port. Above 65535 the socket layer took it modulo 2^16: 99999 served on 34463.
    serve_port: int = Field(default=8000, ge=0, le=65535, description="Serving port.")
    serve_urls: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Base URLs of the serving replicas, comma-separated (http://serving-a:8000,"
        "http://serving-b:8000). Promote and rollback call each one's POST /admin/reload so it swaps at once; "
        "every replica also polls the registry on its own.",
    )
    serve_admin_token: SecretStr | None = Field(
        default=None,
        description="Bearer token of the serving app's admin endpoints (POST /admin/reload); without one "
        "they are refused. Promote and rollback send it.",
    )
    serve_poll_seconds: float = Field(
        default=10.0,
        ge=0,
        le=MAX_TIMEOUT_S,
        description="How often serving checks the champion alias; 0 turns polling off.",
    )
    serve_max_batch_rows: int = Field(
        default=256, ge=1, description="Most rows scored in one model call when requests are micro-batched."
    )
    serve_batch_wait_ms: float = Field(
        default=1.0,
        ge=0,
        le=100,
        description="Longest a request waits for others to join its batch; it only waits while other "
        "requests are arriving, so a lone client never pays it.",
    )
    serve_max_body_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="Largest request body; anything bigger gets 413."
    )
    serve_max_rows: int = Field(default=10_000, ge=1, description="Most rows in one prediction request.")
    serve_out_of_domain: Literal["reject", "flag"] = Field(
        default="reject",
        description="A value the contract forbids (unknown category, below min or above max): reject = 422 "
        "naming the field and what is allowed; flag = score it and mark the row out_of_domain.",
    )
    serve_threads: int = Field(
        default=1,
        ge=0,
        description="Threads of one model call (torch, OpenMP); 0 = one per core. Micro-batches are small, "
        "so one thread is fastest on the shipped models.",
    )
    serve_runtime: ServeRuntime = Field(
        default="auto",
        description="How a torch model is scored: native torch, its ONNX export on ONNX Runtime (float32), "
        "or the int8 dynamic quantization. auto = onnx when the model has it, else native.",
    )
    prediction_log: bool = Field(
        default=True,
        description="Append every served prediction to Parquet under <data_root>/predictions/<model name>/"
        "ds=<day>/, for drift checks of live traffic.",
    )
    prediction_log_flush_rows: int = Field(
        default=5_000, ge=1, description="Rows buffered before the prediction log writes a Parquet file."
    )
    prediction_log_flush_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="Longest a served prediction waits in memory before it is written (the monitor judges an "
        "interval this long, and 5 s, after its end).",
    )
    prediction_log_max_buffer_rows: int = Field(
        default=200_000,
        ge=1,
        description="Rows held while the sink is failing; beyond it rows are dropped and counted.",
    )
    prediction_log_max_buffer_bytes: int = Field(
        default=256 * 2**20,
        ge=1,
        description="Bytes held while the sink is failing (arrays and strings: long entity ids or text fields "
        "fill it before the row bound); beyond it rows are dropped and counted.",
    )

    @field_validator("dataset")
    @classmethod
    def _safe_dataset(cls, value: str) -> str:
        return check_dataset_name(value)

    @field_validator("serve_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        import httpx  # promote's client, here only to parse the URLs as it will

        for url in value:
            if not re.match(r"^https?://[^/\s]+", str(url)):
                raise ValueError(f"serving replica URL {url!r} is not http(s)://host[:port]")
            try:  # as promote will call it: a port like 80x passed the pattern and failed after the alias moved
                port = httpx.URL(str(url)).port
            except httpx.InvalidURL as exc:
                raise ValueError(f"serving replica URL {url!r} is not a valid URL: {exc}") from None
            # httpx keeps a port of 80000, which the socket would wrap to 14464
            if port is not None and not 1 <= port <= 65535:
                raise ValueError(f"serving replica URL {url!r} has port {port}, not 1 to 65535")
        return tuple(str(url).rstrip("/") for url in value)

    @field_validator("spark_remote", mode="before")
    @classmethod
    def _connect_url(cls, value: Any) -> Any:
        url = "" if value is None else str(value).strip()
        if not url:
            return None  # CT_SPARK_REMOTE= (empty): a driver in the task
        if not re.match(r"^sc://(\[[0-9A-Fa-f:.]+\]|[^/\s:;\[\]]+)(:\d+)?(/(;\S*)?)?$", url):
            shown = re.sub(r"(token=)[^;]*", r"\1***", url)  # a secret is not echoed into logs
            raise ValueError(
                f"Spark Connect URL {shown!r} is not sc://host[:port][/;param=value...] (e.g. sc://host:15002)"
            )
        return url

    @field_validator("promotion_db")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        """A SQLAlchemy URL, refused here (naming CT_PROMOTION_DB) rather than by the first command that opens the
        history, with SQLAlchemy's traceback naming no setting."""
        if not value:
            return None
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(value)
        except ArgumentError:
            raise ValueError(
                "not a database URL (SQLAlchemy's form: postgresql+psycopg://user:password@host:5432/db, "
                "sqlite:////path/promotions.db)"
            ) from None
        return value

    @field_validator("model_name")
    @classmethod
    def _default_model_name(cls, value: str, info: ValidationInfo) -> str:
        if value:
            return value
        return f"ct-{info.data['dataset']}" if "dataset" in info.data else value

    def replace(self, **changes: Any) -> Settings:
        """A validated copy with ``changes``; whatever was derived (the model name) is derived again."""
        fields = type(self).model_fields
        if unknown := sorted(set(changes) - set(fields)):
            raise ValueError(f"unknown settings: {', '.join(unknown)}")
        derived = "model_name" not in self.model_fields_set and "model_name" not in changes
        values = {name: getattr(self, name) for name in fields} | changes
        if derived:
            values["model_name"] = ""  # derived again from the (new) dataset, never read from the environment
        copy = type(self)(**values)
        if derived:
            copy.__pydantic_fields_set__.discard("model_name")
        return copy

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Settings:
        """Like :meth:`replace` when ``update`` is given: pydantic's own copy would skip validation."""
        return self.replace(**update) if update else super().model_copy(deep=deep)

    @property
    def resolved_data_root(self) -> str:
        return self.data_root or str(self.state_dir / "data")

    @property
    def resolved_contract_path(self) -> Path:
        return self.contract_path or INCLUDE_DIR / "contracts" / f"{self.dataset}.yaml"

    @property
    def resolved_policy_path(self) -> Path:
        if self.policy_path:
            return self.policy_path
        per_dataset = INCLUDE_DIR / "policies" / f"{self.dataset}.yaml"
        return per_dataset if per_dataset.exists() else INCLUDE_DIR / "promotion_policy.yaml"

    @property
    def resolved_monitoring_policy_path(self) -> Path:
        if self.monitoring_policy_path:
            return self.monitoring_policy_path
        per_dataset = INCLUDE_DIR / "monitoring" / f"{self.dataset}.yaml"
        return per_dataset if per_dataset.exists() else INCLUDE_DIR / "monitoring_policy.yaml"

    @property
    def monitoring_uri(self) -> str:
        """Where the monitor writes its reports, figures and trigger records: <data_root>/monitoring/<dataset>."""
        return f"{self.resolved_data_root.rstrip('/')}/monitoring/{self.dataset}"

    @property
    def monitoring_experiment(self) -> str:
        """The MLflow experiment of the monitor's runs, one per interval and dataset (every dataset's in one)."""
        return f"{self.experiment}-monitoring"

    @property
    def resolved_model_settings_path(self) -> Path:
        if self.model_settings_path:
            return self.model_settings_path
        per_dataset = INCLUDE_DIR / "models" / f"{self.dataset}.yaml"
        return per_dataset if per_dataset.exists() else INCLUDE_DIR / "models" / "default.yaml"

    @property
    def prediction_log_uri(self) -> str:
        return f"{self.resolved_data_root.rstrip('/')}/predictions/{self.model_name}"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.state_dir / 'mlflow' / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str | None:
        """Where new experiments keep their artifacts; None on a tracking server, which decides (its proxy)."""
        if self.mlflow_artifact_root:
            return self.mlflow_artifact_root
        if self.tracking_uri.startswith(("http://", "https://")):
            return None
        return str(self.state_dir / "mlflow" / "artifacts")


def get_settings(**overrides: Any) -> Settings:
    """Build settings from the environment, with explicit keyword overrides on top."""
    return Settings(**overrides)
