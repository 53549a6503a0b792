"""Real MLflow model versions for the serving tests: copies of a trained model, a slow one, broken ones.

Each is logged with ``mlflow.pyfunc.log_model`` and registered the way ``register`` does it (with the
sha256 manifest of its files), so serving loads them through the same verified path as any champion.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import mlflow

from pipelines.model.classifier import ChurnClassifier
from pipelines.release import integrity, tracking
from pipelines.settings import Settings
from tests.net import free_port

SLOW_MODULE = '''
import time
from pathlib import Path

from pipelines.model.classifier import ChurnClassifier


class SlowChurnClassifier(ChurnClassifier):
    """The project's model, with a load that takes as long as its `delay` artifact says."""

    def load_context(self, context):
        time.sleep(float(Path(context.artifacts["delay"]).read_text()))
        super().load_context(context)
'''


class LazyWeight(mlflow.pyfunc.PythonModel):
    """A pyfunc of the common kind that reads its artifact when it first predicts, not when it loads."""

    def load_context(self, context):
        self.path, self.weight = context.artifacts["weight"], None

    def predict(self, context, model_input, params=None):
        import pandas as pd  # noqa: PLC0415

        if self.weight is None:
            self.weight = float(Path(self.path).read_text())
        return pd.DataFrame({"probability": [self.weight] * len(model_input)})


def model_artifacts(client, name: str, version: int, dst: Path) -> dict[str, str]:
    """The artifact files (contract, config, weights) of a registered version, downloaded and verified."""
    root, _ = integrity.fetch_verified(client, name, version, dst)
    files = {p.stem: str(p) for p in (root / "artifacts").iterdir()}
    return {"contract": files["contract"], "config": files["config"], "weights": files["weights"]}


def register_model(
    settings: Settings,
    name: str,
    artifacts: dict[str, str],
    signature,
    *,
    python_model=None,
    code_paths: list[str] | None = None,
) -> int:
    """Log a pyfunc model in a new run and register it under ``name`` with its manifest; the version.

    ``signature`` is an MLflow signature (take a real version's with :func:`signature_of`) or None.
    """
    client = tracking.configure(settings)
    python_model = python_model or ChurnClassifier()
    with mlflow.start_run(experiment_id=tracking.experiment_id(client, settings)):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=python_model,
            artifacts=artifacts,
            signature=signature,
            code_paths=code_paths,
            pip_requirements=[],
        )
    with tempfile.TemporaryDirectory() as tmp:
        manifest = integrity.build_manifest(integrity.download(info.model_uri, tmp))
    version = mlflow.register_model(info.model_uri, name, tags=integrity.tags_for(manifest))
    return int(version.version)


def signature_of(name: str, version: int):
    return mlflow.models.get_model_info(f"models:/{name}/{version}").signature


def slow_model(tmp: Path, artifacts: dict[str, str], delay_s: float):
    """A SlowChurnClassifier (its module is written to ``tmp`` and shipped with the model)."""
    module = tmp / "slow_model.py"
    module.write_text(SLOW_MODULE)
    (tmp / "delay.txt").write_text(str(delay_s))
    sys.path.insert(0, str(tmp))
    try:
        import slow_model as slow  # noqa: PLC0415

        return slow.SlowChurnClassifier(), artifacts | {"delay": str(tmp / "delay.txt")}, [str(module)]
    finally:
        sys.path.remove(str(tmp))


class ServerProcess:
    """``pipelines serve`` in its own process (uvicorn, one worker), as a user runs it."""

    def __init__(self, settings: Settings, log_path: Path, **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = os.environ | {
            "CT_STATE_DIR": str(settings.state_dir),
            "CT_MODEL_NAME": settings.model_name,
            "CT_SERVE_PORT": str(self.port),
            **env,
        }
        self.log_path = log_path
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "serve"],
            env=environment,
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout_s: float = 120) -> dict:
        return _answered(self.process, self.log_path, f"{self.url}/ready", timeout_s).json()

    def stop(self) -> None:
        _stop(self.process)


def _answered(process: subprocess.Popen, log_path: Path, url: str, timeout_s: float) -> httpx.Response:
    """The first 200 of GET ``url`` from ``process`` (its log shown when it exits or never answers)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited: {log_path.read_text()[-3000:]}")
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return response
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url}: no 200 in {timeout_s} s: {log_path.read_text()[-3000:]}")


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


ROOT = Path(__file__).resolve().parent.parent
NGINX = [ROOT / ".venv" / "debian" / "nginx" / "usr" / "sbin" / "nginx", Path("/usr/sbin/nginx")]


class ProxyProcess:
    """The team stack's serving proxy: nginx with ``deploy/nginx.conf``, its two replicas' addresses, port and
    paths replaced, in front of two local replicas (nginx from Debian, unpacked by scripts/install-nginx.sh)."""

    def __init__(self, replica_a: str, replica_b: str, workdir: Path):
        binary = next((path for path in NGINX if path.exists()), None)
        if binary is None:
            raise RuntimeError(f"no nginx at {' or '.join(map(str, NGINX))}: run scripts/install-nginx.sh")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        conf = (ROOT / "deploy" / "nginx.conf").read_text()
        temp = f"{workdir}/nginx-"
        for old, new in [
            ("serving-a:8000", replica_a),
            ("serving-b:8000", replica_b),
            ("listen 8000;", f"listen 127.0.0.1:{self.port};"),
            ("/tmp/nginx.pid", f"{temp}pid"),
            ("/tmp/nginx-body;", f"{temp}body; fastcgi_temp_path {temp}fcgi; uwsgi_temp_path {temp}uwsgi;"),
            ("/tmp/nginx-proxy;", f"{temp}proxy; scgi_temp_path {temp}scgi;"),
        ]:
            assert conf.count(old) == 1, f"deploy/nginx.conf no longer has {old!r} once: mend this test"
            conf = conf.replace(old, new)
        (workdir / "nginx.conf").write_text(conf)
        self.log_path = workdir / "nginx.log"
        self.process = subprocess.Popen(
            [
                str(binary),
                "-p",
                str(workdir),
                "-e",
                "stderr",
                "-c",
                str(workdir / "nginx.conf"),
                "-g",
                "daemon off;",
            ],
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout_s: float = 30) -> None:
        _answered(self.process, self.log_path, f"{self.url}/proxy-health", timeout_s)

    def stop(self) -> None:
        _stop(self.process)
