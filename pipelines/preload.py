"""The libraries the stages use, imported ahead by a long-lived worker so that its tasks start warm.

Airflow's LocalExecutor forks each task from a worker process, and a fork inherits every module its parent
has imported. Imported once before the workers fork (``plugins/ct_executor.py``), torch, MLflow, Evidently,
Dask, pandera and scikit-learn cost each task nothing; imported by each task, they cost it seconds (in a
fresh interpreter on 2 cores: torch with the compiler stack its optimisers load 6.9 s, MLflow with its SQL
stores 7.0 s, Evidently 9.4 s, scikit-learn's metrics 3.0 s). Celery workers are not wired to this yet.

What is imported here, and what is not:

- Third-party libraries only. The ``pipelines`` modules are not preloaded (they import in milliseconds), so a
  task always runs the project's code as it is on disk, the code its lineage tags name. A library upgraded
  while the scheduler runs is seen after the scheduler restarts, as with any long-lived Python process.
- Only imports: no Python thread, file or network connection is opened (``tests/integration/test_preload.py``).
  Plotly imports a module per figure property when a figure first sets it, so one throwaway figure of the
  kinds Evidently draws is built after the imports (:func:`warm_plotly`): a task's first report imports none.
  Arrow, OpenBLAS and jemalloc start native thread pools at import and re-create them in a forked child.
  Evidently creates one asyncio event loop at import (``evidently.legacy.utils.sync``: an epoll and its
  self-pipe), which only its UI workspace runs; no stage does.
- A fork clears the ``atexit`` handlers its parent registered (Airflow's task runner does, so that a task
  runs only its own): whatever a library would do at exit, a task must do itself. The stages close their
  MLflow runs, Dask clusters and Spark sessions explicitly. :data:`NOT_PRELOADED` says why each library the
  stages import is left to the task.
"""

from __future__ import annotations

import importlib
import logging
import time

log = logging.getLogger(__name__)

# In the order the stages of one run need them; each entry is what a stage imports on its first call.
MODULES: tuple[str, ...] = (
    "pyarrow.parquet",
    "pyarrow.dataset",
    "pandas",
    "scipy.stats",
    "dask.dataframe",
    "pandera.pandas",
    "pyspark.sql",
    "mlflow",
    "mlflow.pyfunc",
    "mlflow.models",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    # what MLflow imports when a task first opens its stores and starts a run (0.04 s)
    "mlflow.store.tracking.sqlalchemy_workspace_store",
    "mlflow.store.model_registry.sqlalchemy_workspace_store",
    "mlflow.tracing.processor.otel",
    "sqlalchemy.dialects.sqlite",
    "alembic.command",
    "torch",
    "torch.distributed",
    # torch's optimisers import the compiler stack on their first step (2.3 s on its own).
    "torch._dynamo",
    "sklearn.metrics",
    "sklearn.ensemble",
    "evidently",
    "evidently.presets",
    "evidently.legacy.calculations.stattests",
)

# Libraries the stages import that are left to the task, and why (the test checks that every library the
# package imports is in MODULES or here).
NOT_PRELOADED: dict[str, str] = {
    "distributed": "registers atexit handlers at import, which a forked task would lose; 0.14 s",
    "onnxruntime": "opens a SQLite file of its own at import, which forked tasks must not share; 0.12 s",
    "httpx": "telling serving replicas of a promotion; 0.02 s",
    "filelock": "milliseconds",
    "pydantic_settings": "milliseconds",
    "prometheus_client": "serving's metrics; no stage imports it",
}


def preload(modules: tuple[str, ...] = MODULES, *, strict: bool = True) -> dict[str, float]:
    """Import ``modules``; the seconds each took (0 for one already imported).

    A module that cannot be imported raises, naming it; with ``strict=False`` it is logged as a warning and
    left to the tasks (which then fail on it themselves, in their own logs, if they need it).
    """
    seconds: dict[str, float] = {}
    for name in modules:
        started = time.perf_counter()
        try:
            importlib.import_module(name)
        except ImportError as exc:
            if strict:
                raise
            log.warning("not preloaded: %s (%s); the tasks that need it will import it", name, exc)
            continue
        seconds[name] = round(time.perf_counter() - started, 3)
    log.info("preloaded %d modules in %.1f s", len(seconds), sum(seconds.values()))
    if "evidently" in seconds:
        try:
            log.info("warmed plotly's figures in %.2f s", warm_plotly())
        except (ImportError, ValueError) as exc:  # plotly missing, or a property it no longer takes
            if strict:
                raise
            log.warning("plotly's figures not warmed (%s); each task's first report imports them", exc)
    return seconds


def warm_plotly() -> float:
    """Build one throwaway figure of the kinds Evidently's reports draw; the seconds it took.

    Plotly imports the validator of a figure property the first time any figure sets it: about 200 modules,
    0.08 s of the monitor's 0.3 s report on 2 cores, paid by every task that renders a report. Bars and lines
    on subplots, a menu of buttons, titles, legends and axes import most of them here. Nothing is drawn to a
    file, and no thread or socket is opened.
    """
    started = time.perf_counter()
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=1, cols=2, shared_yaxes=True, subplot_titles=["current", "reference"])
    figure.add_trace(go.Bar(x=[0.0], y=[1.0], marker_color="#000", name="current", visible=True), 1, 1)
    figure.add_trace(
        go.Scatter(
            x=[0.0],
            y=[1.0],
            mode="lines+markers",
            line={"dash": "dash", "color": "#000", "width": 1},
            marker={"color": "#000", "size": 1},
            fill="tonexty",
            fillcolor="#000",
            opacity=1.0,
            hoverinfo="skip",
            legendgroup="g",
            showlegend=True,
            name="mean",
        ),
        1,
        2,
    )
    figure.update_xaxes(title_text="x", row=1, col=1)
    figure.update_layout(
        yaxis_title="count",
        showlegend=True,
        legend={"orientation": "h"},
        title={"text": "t", "font": {"size": 12}},
        updatemenus=[
            {
                "type": "buttons",
                "direction": "right",
                "x": 1.0,
                "y": 1.0,
                "yanchor": "top",
                "buttons": [{"label": "abs", "method": "update", "args": [{"visible": [True]}]}],
            }
        ],
    )
    figure.to_plotly_json()
    return time.perf_counter() - started
