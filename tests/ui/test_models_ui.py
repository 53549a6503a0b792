"""The platform in a real browser, as a person uses it: Chromium (Debian's, driven by Playwright) against
``airflow standalone`` on PostgreSQL (tests/scheduler.py) and an MLflow UI server on the same store.

One journey, each step screenshotted under the test's tmp_path (``NN-step.png``; a failing step leaves
``NN-step-FAILED.png`` of every open page): sign in on Airflow's login page, trigger ``retrain`` from its
trigger form (scikit-learn, small data), wait for the run to succeed through the scheduler and the
LocalExecutor, open the ``train`` task instance and follow its "MLflow run" link to the run's page in the MLflow
UI, open the Models view from Airflow's navigation, roll back from it with a reason, and see the rollback's
history row and the champion change.

A champion is registered before Airflow starts (one real scikit-learn model, outside Airflow), so that after
the retrain run there is a version other than the champion to roll back to, whatever the gate decided.
Needs /usr/bin/chromium: ``scripts/install-chromium.sh`` installs it (``make test`` runs it first).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.net import answers, free_port
from tests.scheduler import Airflow

pytestmark = pytest.mark.slow

log = logging.getLogger(__name__)

CHROMIUM = Path("/usr/bin/chromium")
MLFLOW = str(Path(sys.executable).parent / "mlflow")
USER, PASSWORD = "admin", "admin"
# Small data: a retrain run takes under a minute through the scheduler. (Its holdout is then below the
# policy's min_holdout_rows, so the gate rejects the challenger: the rollback goes to it, as it may to any
# verified version. With more rows the gate may promote it; the rollback then goes back to the seed.)
ROWS_PER_DAY = 1500
# The seeded champion's data day: before the day the form triggers (today), as an earlier run's would be.
SEED_DAY = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=7)
STEP_TIMEOUT_MS = 120_000  # one browser action or page on a busy two-core machine
RUN_TIMEOUT_S = 1800  # one whole retrain run through the scheduler (a task process per task)


class MlflowUi:
    """``mlflow server`` (its UI and REST API) on a free port over the store the pipelines write."""

    def __init__(self, settings: Any, folder: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [
            MLFLOW,
            "server",
            "--backend-store-uri",
            settings.tracking_uri,  # the runs' artifacts are where their experiment says, as for `make mlflow`
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",  # one person's browser; more workers only compete for the two cores
        ]
        self.folder = folder
        self.log_path = folder / "mlflow-server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(
                self.command, cwd=self.folder, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def up(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"mlflow server exited ({self.process.returncode}):\n{self.log_tail()}")
        return answers(f"{self.url}/health")

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        """End the server and its workers: its own process group, started above."""
        if self.process is None:
            return
        for sig, wait_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 30)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        self.process = None


def _seed_champion(state: Path) -> int:
    """One real scikit-learn model version on ``SEED_DAY``, made champion; its version number."""
    from pipelines.data.generate import generate
    from pipelines.data.prepare import prepare
    from pipelines.data.validate import validate
    from pipelines.release import tracking
    from pipelines.release.promote import move_champion
    from pipelines.release.register import register
    from pipelines.settings import get_settings
    from pipelines.training.train import train

    settings = get_settings(state_dir=state, rows_per_day=ROWS_PER_DAY)
    generate(settings, SEED_DAY, "none")
    validate(settings, SEED_DAY)
    dataset_uri = prepare(settings, SEED_DAY, "dask")["uri"]
    trained = train(settings, SEED_DAY, dataset_uri, tracking.RunContext("test/ui-seed"), "sklearn")
    version = int(register(settings, SEED_DAY, trained["run_id"])["version"])
    move_champion(settings, version, None, trigger="test seed", reason="the browser test's first champion")
    return version


@pytest.fixture
def platform(tmp_path, postgres) -> Iterator[tuple[Airflow, MlflowUi, Any]]:
    """A seeded registry, then the MLflow UI on it and ``airflow standalone`` pointing its links there."""
    from pipelines.settings import get_settings

    state = tmp_path / "state"
    _seed_champion(state)
    settings = get_settings(state_dir=state, rows_per_day=ROWS_PER_DAY)
    mlflow_ui = MlflowUi(settings, tmp_path)
    airflow = Airflow(
        tmp_path / "airflow",
        postgres.database("airflow_ui"),
        {
            "CT_STATE_DIR": str(state),
            "CT_ROWS_PER_DAY": str(ROWS_PER_DAY),
            "CT_SERVE_POLL_SECONDS": "0",
            "CT_MLFLOW_UI_URL": mlflow_ui.url,
        },
    )
    # The simple auth manager's password file, as `airflow standalone` would generate it, but known.
    airflow.home.mkdir(parents=True, exist_ok=True)  # scripts/env.sh, read by Airflow(), made it
    (airflow.home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps({USER: PASSWORD}))
    try:
        mlflow_ui.start()
        airflow.start()
        airflow.wait_for("the MLflow UI server", mlflow_ui.up, timeout=300)
        airflow.wait_for("Airflow's API server", airflow.api_server_ready, timeout=600)
        for dag_id in ("retrain", "rollback"):
            airflow.wait_for(f"the {dag_id} DAG to be parsed", lambda d=dag_id: airflow.dag_parsed(d), 600)
        yield airflow, mlflow_ui, settings
    finally:
        airflow.stop()
        mlflow_ui.stop()


@pytest.fixture
def browser_context(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-chromium.sh (make test runs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--disable-dev-shm-usage"]
        )
        context = browser.new_context(viewport={"width": 1440, "height": 900}, timezone_id="UTC")
        context.set_default_timeout(STEP_TIMEOUT_MS)
        context.set_default_navigation_timeout(STEP_TIMEOUT_MS)
        # expect() has its own default (5 s), too short for a form that submits on busy cores.
        expect.set_options(timeout=STEP_TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()
            browser.close()


class Steps:
    """Named steps of the journey: a full-page screenshot of each when it ends (``NN-name.png``), and of
    every open page when it fails (``NN-name-FAILED[-k].png``), before the error goes on."""

    def __init__(self, context: Any, folder: Path):
        self.context = context
        self.folder = folder
        self.count = 0
        self.page: Any = None  # the page the step ends on, the one screenshotted

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.count += 1
        stem = f"{self.count:02d}-{name}"
        started = time.monotonic()
        try:
            yield
        except BaseException:
            from playwright.sync_api import Error as PlaywrightError

            for k, page in enumerate(self.context.pages):
                suffix = f"-{k}" if k else ""
                with contextlib.suppress(PlaywrightError):  # a closed page: the step's error goes on below
                    page.screenshot(path=self.folder / f"{stem}-FAILED{suffix}.png", full_page=True)
            log.error("step %s failed; screenshots in %s", stem, self.folder)
            raise
        self.page.screenshot(path=self.folder / f"{stem}.png", full_page=True)
        log.info("step %s took %.1f s", stem, time.monotonic() - started)


def _follow(context: Any, page: Any, link: Any) -> Any:
    """Click ``link`` and return the page it opens: a new tab for ``target=_blank``, else the same page."""
    if link.get_attribute("target") == "_blank":
        with context.expect_page() as opened:
            link.click()
        new_page = opened.value
        new_page.wait_for_load_state("domcontentloaded")
        return new_page
    link.click()
    return page


def _newest_manual_run(airflow: Airflow) -> dict[str, Any] | None:
    runs = [r for r in airflow.runs("retrain") if r["run_type"] == "manual"]
    return runs[-1] if runs else None


def _paused(airflow: Airflow, dag_id: str) -> bool:
    (paused,) = airflow.query("SELECT is_paused FROM dag WHERE dag_id = :dag", dag=dag_id)[0]
    return bool(paused)


def _finished(airflow: Airflow, dag_id: str, run_id: str) -> str | None:
    (state,) = airflow.query(
        "SELECT state FROM dag_run WHERE dag_id = :dag AND run_id = :run", dag=dag_id, run=run_id
    )[0]
    return state if state in ("success", "failed") else None


@pytest.mark.timeout(3600)  # Airflow's start, a whole retrain run and a rollback run, on 2 busy cores
def test_a_person_retrains_follows_the_link_to_mlflow_and_rolls_back_from_the_models_view(
    platform, browser_context, tmp_path
):
    from playwright.sync_api import expect

    airflow, mlflow_ui, settings = platform
    shots = tmp_path / "screenshots"
    shots.mkdir()
    steps = Steps(browser_context, shots)
    page = steps.page = browser_context.new_page()
    timings: dict[str, float] = {}

    with steps.step("sign-in"):
        page.goto(f"{airflow.url}/dags/retrain")
        expect(page.get_by_text("Sign into Airflow")).to_be_visible()
        page.get_by_label("Username").fill(USER)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{airflow.url}/dags/retrain")  # back where the sign-in was asked for
        expect(page.get_by_role("button", name=re.compile(r"^Trigger")).first).to_be_visible()

    with steps.step("trigger-form"):
        page.get_by_role("button", name=re.compile(r"^Trigger")).first.click()
        dialog = page.get_by_role("dialog")
        # The params' fields are named by their titles; the run's conf shows what was chosen (below).
        family = dialog.get_by_role("combobox", name="Model family")
        expect(family).to_be_visible()
        family.click()
        page.get_by_role("option", name="sklearn", exact=True).click()
        expect(dialog.get_by_role("option")).to_have_count(0)  # the dropdown closed on the choice
        # A paused DAG runs nothing: the form's "Unpause retrain on trigger" is ticked by default.
        expect(dialog.get_by_role("checkbox", name="Unpause retrain on trigger")).to_be_checked()

    with steps.step("triggered"):
        started = time.monotonic()
        dialog.get_by_role("button", name="Trigger", exact=True).click()
        expect(dialog).to_be_hidden()
        run = airflow.wait_for("the triggered retrain run", lambda: _newest_manual_run(airflow), 120)
        run_id = run["run_id"]
        assert run["conf"]["model_family"] == "sklearn", run["conf"]
        airflow.wait_for("the form to unpause retrain", lambda: not _paused(airflow, "retrain"), 60)

    with steps.step("retrain-succeeded"):
        # The UI polls while a run is active; a blank page spares the two cores while the run works.
        page.goto("about:blank")
        state = airflow.wait_for(
            f"retrain run {run_id} to finish", lambda: _finished(airflow, "retrain", run_id), RUN_TIMEOUT_S
        )
        timings["retrain run"] = time.monotonic() - started
        assert state == "success", airflow.task_states("retrain", run_id)
        # A run that worked shows no error lines (Airflow records a task's stderr as errors).
        logs = sorted((airflow.home / "logs" / "dag_id=retrain").glob(f"run_id={run_id}/task_id=*/*.log"))
        assert logs, "no task logs"
        errors = [
            f"{log.parent.name}: {line[:300]}"
            for log in logs
            for line in log.read_text().splitlines()
            if '"level":"error"' in line
        ]
        assert errors == [], "\n".join(errors)
        page.goto(f"{airflow.url}/dags/retrain/runs/{quote(run_id, safe='')}")
        expect(page.get_by_text(run_id).first).to_be_visible()

    # The version this run registered, and the MLflow run it came from (its lineage tags).
    from pipelines.release import tracking

    client = tracking.configure(settings)
    made = [
        v
        for v in client.search_model_versions(f"name = '{settings.model_name}'")
        if v.tags.get("airflow.run_id") == run_id
    ]
    assert len(made) == 1, f"run {run_id} registered {len(made)} versions"
    version = made[0]
    mlflow_run = client.get_run(version.run_id)

    with steps.step("train-task-instance"):
        page.goto(f"{airflow.url}/dags/retrain/runs/{quote(run_id, safe='')}/tasks/train")
        page.get_by_role("link", name="Details", exact=True).click()  # the tab with the extra links
        link = page.get_by_role("link", name="MLflow run", exact=True)
        expect(link).to_be_visible()
        expected = f"{mlflow_ui.url}/#/experiments/{mlflow_run.info.experiment_id}/runs/{version.run_id}"
        assert link.get_attribute("href") == expected

    with steps.step("mlflow-run-page"):
        mlflow_page = steps.page = _follow(browser_context, page, link)
        assert version.run_id in mlflow_page.url, mlflow_page.url
        # A single-page app: the page is the run's once it shows the run's own name and id.
        expect(mlflow_page.get_by_text(mlflow_run.info.run_name).first).to_be_visible()
        expect(mlflow_page.get_by_text(version.run_id).first).to_be_visible()

    with steps.step("models-view"):
        steps.page = page
        page.bring_to_front()
        page.goto(f"{airflow.url}/dags/retrain")
        # Airflow's navigation lists the plugin's "Models" and "MLflow" entries in its Plugins menu.
        page.get_by_role("button", name="Plugins", exact=True).click()
        entry = page.locator('a[aria-label="Models"]')
        expect(entry).to_have_attribute("href", "/ct/models")
        expect(page.locator('a[aria-label="MLflow"]')).to_have_attribute(
            "href", re.compile(r"^http://127\.0\.0\.1:")
        )
        models = steps.page = _follow(browser_context, page, entry)
        expect(models.get_by_role("heading", name=f"Models: {settings.model_name}")).to_be_visible()
        champion_card = models.locator(".card", has_text="Champion (promotion history)").locator("b")
        before = champion_card.inner_text()
        offered = models.locator("select#to_version option")
        expect(offered.first).to_be_attached()
        target = int(offered.first.get_attribute("value"))
        assert f"v{target}" != before, (before, target)

    reason = f"browser test: back to v{target}"
    with steps.step("rollback-triggered"):
        models.locator("select#to_version").select_option(str(target))
        models.get_by_label("Reason").fill(reason)
        # The rollback DAG is paused (as every DAG is at creation here): the form offers to unpause it.
        expect(models.get_by_label("Unpause the rollback DAG")).to_be_checked()
        started = time.monotonic()
        models.get_by_role("button", name="Trigger the rollback DAG").click()
        expect(models.get_by_role("heading", name=re.compile(r"^Rollback of .* triggered$"))).to_be_visible()
        (rollback,) = airflow.runs("rollback")
        # with the champion the page showed: the run moves nothing if another is champion by then
        shown = int(before.removeprefix("v"))
        assert rollback["conf"] == {
            "dataset": settings.dataset,
            "to_version": target,
            "reason": reason,
            "from_version": shown,
        }
        expect(models.get_by_text(rollback["run_id"]).first).to_be_visible()

    with steps.step("rolled-back"):
        state = airflow.wait_for(
            "the rollback run to finish",
            lambda: _finished(airflow, "rollback", rollback["run_id"]),
            600,
        )
        timings["rollback run"] = time.monotonic() - started
        assert state == "success", airflow.task_states("rollback", rollback["run_id"])
        models.get_by_role("link", name=re.compile("Models")).first.click()
        expect(champion_card).to_have_text(f"v{target}")
        # The move is written ahead ("pending"), then completed: the completion row says it rolled back.
        row = models.get_by_role("row").filter(has_text=reason).filter(has_text="rolled_back")
        expect(row).to_have_count(1)
        expect(row).to_contain_text("rollback")
        expect(row).to_contain_text(f"v{target}")
        expect(row).to_contain_text(rollback["run_id"])

    (tmp_path / "timings.json").write_text(json.dumps(timings, indent=2))
    log.info("timings: %s; screenshots in %s", {k: f"{v:.0f} s" for k, v in timings.items()}, shots)
