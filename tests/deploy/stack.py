"""The team deployment in real containers, for tests/deploy: Podman, the repo's Dockerfile and docker-compose.yaml.

What it does, in order: installs Podman, runc and debootstrap from Debian when they are missing; builds a
Debian bookworm base image from Debian's packages (no registry is reachable here); builds the two images
of ./Dockerfile offline from the wheelhouse (``make wheelhouse``); writes an env file with random secrets
(``scripts/team-env.sh``) whose only additions are image names, free ports and the test's knobs; and runs
``podman-compose up`` on the repo's own ``docker-compose.yaml``. Everything it makes is named after one
run id (the compose project, its containers, network and volumes, the images) and :meth:`Stack.down`
removes exactly that.

Podman here runs with three settings (``shared/CONTAINERS.md``): no default ulimits, the runc runtime and
the cgroupfs manager, all in a ``containers.conf`` of the run's own. Without systemd, Podman does not run
healthchecks on a timer, so :class:`Stack` runs them itself (``podman healthcheck run``) while it waits.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from tests.net import free_port

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "localhost/ct-test-bookworm:base"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
CONTAINERS_CONF = (
    '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\n'
)


def why_no_containers() -> str | None:
    """None when this machine can run the stack's containers (installing Podman if needed); else why not."""
    if shutil.which("podman") is None or shutil.which("debootstrap") is None:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            return "Podman is not installed and cannot be (needs root and apt-get)"
        packages = ["podman", "runc", "debootstrap", "uidmap", "slirp4netns"]
        done = subprocess.run(
            f"apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {' '.join(packages)}",
            shell=True,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            return f"installing Podman from Debian failed: {done.stderr[-500:]}"
    if os.geteuid() != 0:
        return "the stack's containers run under root Podman here (bridge networks with service-name DNS)"
    probe = subprocess.run(["podman", "info"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"podman info failed: {probe.stderr.strip()[-300:]}"
    return None


def compose_healthcheck_interval() -> float:
    """The seconds between two runs of a healthcheck, as docker-compose.yaml's ``x-healthcheck`` says."""
    import yaml

    interval = str(yaml.safe_load((ROOT / "docker-compose.yaml").read_text())["x-healthcheck"]["interval"])
    if not interval.endswith("s") or not interval[:-1].isdigit():
        raise ValueError(
            f"docker-compose.yaml: x-healthcheck interval {interval!r} is not a number of seconds"
        )
    return float(interval[:-1])


class Stack:
    """One compose project of the repo's docker-compose.yaml, its images, env file and state under ``workdir``."""

    def __init__(self, workdir: Path, log: Any = print):
        self.run_id = uuid.uuid4().hex[:8]
        self.project = f"ctdeploy{self.run_id}"
        self.workdir = workdir
        self._log = log
        self.conf = workdir / "containers.conf"
        self.conf.write_text(CONTAINERS_CONF)
        self.env = {**os.environ, "CONTAINERS_CONF": str(self.conf)}
        self.image = f"localhost/ct-test-{self.run_id}:latest"
        self.services_image = f"localhost/ct-test-services-{self.run_id}:latest"
        self.made_base = False
        self.ports: dict[str, int] = {}  # chosen by write_env, just before the start, not before the builds
        self.env_file = workdir / "stack.env"
        self.secrets: dict[str, str] = {}
        self.timings: dict[str, float] = {}
        self.before: dict[str, set[str]] | None = None
        self._health_stop = threading.Event()
        self._health_thread: threading.Thread | None = None
        # every 5 s while the stack starts (Docker's start_interval), then at the compose file's interval
        self._health_every = 5.0

    # --- commands -------------------------------------------------------------------------------------------
    def podman(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return done

    def compose(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        command = [
            str(Path(sys.executable).parent / "podman-compose"),
            "--in-pod",
            "false",
            "-p",
            self.project,
            "-f",
            str(ROOT / "docker-compose.yaml"),
            "--env-file",
            str(self.env_file),
            *args,
        ]
        done = subprocess.run(
            command, env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"podman-compose {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        return done

    def say(self, message: str) -> None:
        """Print, and keep in ``workdir/deploy.log`` (pytest captures the print when the module passes)."""
        self._log(message)
        with (self.workdir / "deploy.log").open("a") as log:
            log.write(f"{time.strftime('%H:%M:%S')} {message}\n")

    def _timed(self, name: str, started: float) -> None:
        self.timings[name] = round(time.monotonic() - started, 1)
        self.say(f"deploy: {name} took {self.timings[name]} s")

    # --- images ---------------------------------------------------------------------------------------------
    def build_images(self) -> None:
        if self.podman("image", "exists", BASE_IMAGE, check=False).returncode != 0:
            started = time.monotonic()
            rootfs = self.workdir / "rootfs"
            subprocess.run(
                ["debootstrap", "--variant=minbase", "bookworm", str(rootfs), DEBIAN_MIRROR],
                capture_output=True,
                check=True,
                timeout=900,
            )
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
            subprocess.run(
                ["podman", "import", "-", BASE_IMAGE],
                stdin=tar.stdout,
                env=self.env,
                capture_output=True,
                check=True,
            )
            tar.wait()
            shutil.rmtree(rootfs, ignore_errors=True)
            self.made_base = True
            self._timed("base image (debootstrap)", started)
        started = time.monotonic()
        subprocess.run(["make", "-s", "wheelhouse"], cwd=ROOT, capture_output=True, check=True, timeout=1800)
        self._timed("wheelhouse", started)
        for target, tag in [("services", self.services_image), ("ct", self.image)]:
            started = time.monotonic()
            self.podman(
                "build",
                "--build-arg",
                f"BASE={BASE_IMAGE}",
                "--target",
                target,
                "--label",
                f"ct.test.run={self.run_id}",
                "-t",
                tag,
                str(ROOT),
                timeout=2400,
            )
            self._timed(f"image {target}", started)
        size = self.podman("image", "inspect", self.image, "--format", "{{.Size}}").stdout.strip()
        self.image_bytes = int(size)
        self.say(f"deploy: image ct is {self.image_bytes / 2**30:.2f} GiB")

    # --- the stack ------------------------------------------------------------------------------------------
    def write_env(self, **knobs: str) -> None:
        # Free now, published minutes from now if chosen before the image builds: the suite's other process
        # opens ports meanwhile, and one taken port fails the whole stack's start.
        self.ports = {
            name: free_port()
            for name in ["AIRFLOW_PORT", "MLFLOW_PORT", "SERVING_PORT", "SPARK_UI_PORT", "DASK_UI_PORT"]
        }
        extra = {
            "CT_IMAGE": self.image,
            "CT_SERVICES_IMAGE": self.services_image,
            **{name: str(port) for name, port in self.ports.items()},
            **knobs,
        }
        subprocess.run(
            [str(ROOT / "scripts" / "team-env.sh"), str(self.env_file)],
            env={**os.environ, "TEAM_ENV_EXTRA": " ".join(f"{k}={v}" for k, v in extra.items())},
            capture_output=True,
            check=True,
        )
        for line in self.env_file.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not key.startswith("#"):
                self.secrets[key] = value

    def up(self) -> None:
        """``podman-compose up``. Podman before 4.6 cannot wait on healthchecks and trips over container
        dependencies on one-shot services (``--no-deps``): the services' own waits order the start."""
        started = time.monotonic()
        self.compose("up", "-d", "--no-build", "--no-deps")
        self._health_thread = threading.Thread(target=self._drive_healthchecks, daemon=True)
        self._health_thread.start()
        self.wait_healthy(timeout=900)
        self._timed("stack start (up to every service healthy)", started)
        self._health_every = compose_healthcheck_interval()

    def containers(self) -> list[dict[str, Any]]:
        out = self.podman(
            "ps", "-a", "--filter", f"label=io.podman.compose.project={self.project}", "--format", "json"
        )
        return json.loads(out.stdout or "[]")

    def container(self, service: str, index: int = 1) -> str:
        return f"{self.project}_{service}_{index}"

    def _drive_healthchecks(self) -> None:
        """Podman runs no healthcheck by itself without systemd: run every container's, all at once, every few
        seconds (one at a time, the slow ones, which start Python, would hold the others back)."""
        with ThreadPoolExecutor(max_workers=8) as pool:
            while not self._health_stop.is_set():
                running = [i["Names"][0] for i in self.containers() if i.get("State") == "running"]
                list(pool.map(self._run_healthcheck, running))
                self._health_stop.wait(self._health_every)

    def _run_healthcheck(self, name: str) -> None:
        """One run of a container's healthcheck. One slower than its 120 s (a Python check on cores busy with
        other work) is tried again next round: its TimeoutExpired ended this thread, no check ran again, and the
        stack waited out its 900 s with every service "starting"."""
        try:
            self.podman("healthcheck", "run", name, check=False, timeout=120)
        except subprocess.TimeoutExpired:
            log.warning("the healthcheck of %s took over 120 s; it runs again next round", name)

    def health(self) -> dict[str, str]:
        states = {}
        for item in self.containers():
            name = item["Names"][0]
            inspected = json.loads(self.podman("inspect", name).stdout)[0]
            state = inspected["State"]
            health = (state.get("Health") or state.get("Healthcheck") or {}).get("Status")
            states[name] = health or state.get("Status", "?")
        return states

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            states = self.health()
            # one-shot services (airflow-init, mlflow-init) end with 0; every other one is healthy
            waiting = {n: s for n, s in states.items() if s != ("exited" if "-init_" in n else "healthy")}
            failed = [n for n, s in states.items() if s == "exited" and self.exit_code(n) != 0]
            # A one-shot that failed, with the logs of those not healthy yet: it waits on them (mlflow-init on mlflow).
            if failed:
                others = [n for n in waiting if n not in failed]
                raise RuntimeError(
                    f"{failed} exited; not healthy yet: {others}\n"
                    + "\n".join(self.logs(n) for n in [*failed, *others])
                )
            if not waiting:
                return
            if self._health_thread is not None and not self._health_thread.is_alive():
                raise RuntimeError(f"the thread that runs the healthchecks ended; not healthy yet: {waiting}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"not healthy after {timeout:.0f} s: {waiting}\n"
                    + "\n".join(self.logs(n) for n in waiting)
                )
            time.sleep(5)

    def exit_code(self, name: str) -> int | None:
        state = json.loads(self.podman("inspect", name).stdout)[0]["State"]
        return None if state.get("Status") != "exited" else int(state.get("ExitCode", -1))

    def logs(self, name: str, tail: int = 60) -> str:
        done = self.podman("logs", "--tail", str(tail), name, check=False)
        return f"--- {name} ---\n{done.stdout[-6000:]}{done.stderr[-6000:]}"

    def hostname_of(self, name: str) -> str:
        return json.loads(self.podman("inspect", name).stdout)[0]["Config"]["Hostname"]

    def snapshot(self) -> dict[str, set[str]]:
        """What Podman holds on this machine: containers, volumes, networks and images, by name or id."""
        listing = {
            "containers": ["ps", "-a", "--format", "{{.Names}}"],
            "volumes": ["volume", "ls", "--format", "{{.Name}}"],
            "networks": ["network", "ls", "--format", "{{.Name}}"],
            "images": ["images", "-a", "--no-trunc", "--format", "{{.ID}}"],
            "tags": ["images", "--format", "{{.Repository}}:{{.Tag}}"],
        }
        found = {kind: set(self.podman(*args).stdout.split()) for kind, args in listing.items()}
        found["tags"].discard("<none>:<none>")
        return found

    def down(self) -> None:
        self._health_stop.set()
        with_errors: list[str] = []
        try:
            self.compose("down", "-v", timeout=600)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            with_errors.append(str(exc)[-500:])
        # Whatever compose left (a container killed by the test, a volume of a scaled service): by name.
        for item in self.containers():
            self.podman("rm", "-f", "-v", item["Names"][0], check=False)
        for volume in self.podman("volume", "ls", "--format", "{{.Name}}").stdout.split():
            if volume.startswith(f"{self.project}_"):
                self.podman("volume", "rm", "-f", volume, check=False)
        for network in self.podman("network", "ls", "--format", "{{.Name}}").stdout.split():
            if network.startswith(f"{self.project}_"):
                self.podman("network", "rm", "-f", network, check=False)
        self.remove_images()
        if with_errors:
            self.say(f"deploy: compose down reported: {with_errors}")

    def remove_images(self) -> None:
        """Our tags, and the images this run made (its intermediate stages included), never one that was here
        before: a build takes images left by an earlier build as its cache, and ``podman rmi`` without
        ``--no-prune`` removes an image's untagged parents with it, those earlier images among them. Podman
        keeps layers apart from images, so removing an image that has children leaves the children whole.
        An image that appeared meanwhile under someone else's tag is left alone: only untagged ones go."""
        tags = [self.image, self.services_image] + ([BASE_IMAGE] if self.made_base else [])
        if self.before is None:  # not reached from the fixture, which snapshots before it builds
            self.podman("rmi", "--no-prune", "-f", *tags, check=False)
            return
        for tag in tags:
            if (
                tag not in self.before["tags"]
                and self.podman("image", "exists", tag, check=False).returncode == 0
            ):
                self.podman("untag", tag, tag, check=False)
        listed = self.podman("images", "-a", "--no-trunc", "--format", "{{.ID}} {{.Repository}}").stdout
        rows = [line.split() for line in listed.splitlines() if line.strip()]
        named = {image for image, repository in rows if repository != "<none>"}
        made = sorted({image for image, _ in rows} - named - self.before["images"])
        if made:
            self.podman("rmi", "--no-prune", "-f", *made, check=False)


class AirflowApi:
    """Airflow's REST API (v2) through the published port, as the admin of the env file."""

    def __init__(self, url: str, password: str):
        self.url = url
        token = httpx.post(f"{url}/auth/token", json={"username": "admin", "password": password}, timeout=30)
        token.raise_for_status()
        self.http = httpx.Client(
            base_url=f"{url}/api/v2",
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
            timeout=60,
        )

    def wait_for_dag(self, dag_id: str, timeout: float = 300) -> None:
        wait_until(
            f"the dag-processor parsed {dag_id}",
            lambda: self.http.get(f"/dags/{dag_id}").status_code == 200,
            timeout,
            every=3,
        )

    def unpause(self, dag_id: str) -> None:
        self.http.patch(f"/dags/{dag_id}", json={"is_paused": False}).raise_for_status()

    def trigger(self, dag_id: str, conf: dict[str, Any], logical_date: str | None) -> str:
        answer = self.http.post(f"/dags/{dag_id}/dagRuns", json={"logical_date": logical_date, "conf": conf})
        assert answer.status_code in (200, 201), answer.text
        return str(answer.json()["dag_run_id"])

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        answer = self.http.get(f"/dags/{dag_id}/dagRuns/{run_id}")
        answer.raise_for_status()
        return dict(answer.json())

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        answer = self.http.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
        answer.raise_for_status()
        return {ti["task_id"]: ti for ti in answer.json()["task_instances"]}

    def xcom(self, dag_id: str, run_id: str, task_id: str) -> Any:
        answer = self.http.get(
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
        )
        answer.raise_for_status()
        return answer.json()["value"]

    def wait(self, dag_id: str, run_id: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = self.run(dag_id, run_id)
            if run["state"] in ("success", "failed"):
                return run
            assert time.monotonic() < deadline, (
                f"{dag_id} {run_id} still {run['state']} after {timeout:.0f} s: "
                f"{ {t: ti['state'] for t, ti in self.task_instances(dag_id, run_id).items()} }"
            )
            time.sleep(3)


def wait_until(what: str, check: Any, timeout: float, every: float = 1.0) -> Any:
    """``check()``'s first truthy value within ``timeout`` seconds, else an assertion naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(every)
