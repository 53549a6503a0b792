"""Benchmark: this serving app against ``mlflow models serve --env-manager local``, on the same champion.

    python bench/serve.py                       # torch and sklearn champions, 1 and 8 connections, 10 s each
    python bench/serve.py --family sklearn --seconds 5

Both servers run one worker on this machine, one at a time, on the same registered version (trained here
on demo data: the contract's 8 raw fields, 16 engineered features). This app serves a torch champion on its
ONNX export by default (``auto``); its native torch and int8 runtimes are measured too. The load generator is an asyncio
client in its own process that keeps N HTTP/1.1 connections open and sends one-row requests back to back
(closed loop), the same rows to both servers, each in that server's own request format. It warms each
server up for 2 s, then measures; every answer must be a 200. Printed per server and connection count:
req/s, p50 and p99 latency, errors, and the server's peak resident memory; then this app's req/s over
mlflow's. The last line is a one-line summary at 8 connections. Goal (issue 5): at least 10x mlflow's
req/s at 8 connections, with p99 under 10 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DAY = dt.date(2026, 11, 20)
GOAL_RATIO, GOAL_P99_MS = 10.0, 10.0


def build_champion(state_dir: Path, family: str) -> tuple[str, list[dict]]:
    """Train and promote one model of ``family`` on demo data; its name and some holdout rows."""
    from pipelines.data import datasets, storage
    from pipelines.data.generate import generate
    from pipelines.data.prepare import prepare
    from pipelines.data.validate import validate
    from pipelines.release import tracking
    from pipelines.release.promote import move_champion
    from pipelines.release.register import register
    from pipelines.settings import get_settings
    from pipelines.training.train import train

    settings = get_settings(state_dir=state_dir, rows_per_day=20_000, model_name=f"bench-{family}")
    if not storage.exists(
        storage.join(storage.raw_uri(settings.resolved_data_root, settings.dataset, DAY), datasets.MANIFEST)
    ):
        generate(settings, DAY, "none")
        validate(settings, DAY)
    prepared = prepare(settings, DAY, "dask")
    trained = train(settings, DAY, prepared["uri"], tracking.RunContext(f"bench/{family}"), family)
    version = register(settings, DAY, trained["run_id"])["version"]
    champion = tracking.version_by_alias(tracking.configure(settings), settings.model_name, "champion")
    move_champion(settings, version, int(champion.version) if champion else None, trigger="bench")
    fields = ["amount", "age", "tenure_days", "num_txn_30d", "avg_basket", "channel", "region", "plan"]
    frame = datasets.read_split(prepared["uri"], "holdout", fields).head(256)
    return settings.model_name, json.loads(frame.to_json(orient="records"))


# --- load generator (runs in its own process) -------------------------------------------------------------


async def _connection(
    host: str,
    port: int,
    requests: list[bytes],
    stop_at: float,
    measure_from: float,
    latencies: list[float],
    errors: list[str],
    offset: int,
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    index = offset
    try:
        while (now := time.perf_counter()) < stop_at:
            writer.write(requests[index % len(requests)])
            index += 1
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            done = time.perf_counter()
            if status != 200:
                errors.append(f"{status} {body[:200]!r}")
            elif now >= measure_from:
                latencies.append(done - now)
    finally:
        writer.close()


def drive(url: str, path: str, bodies: list[bytes], connections: int, seconds: float, warmup: float) -> dict:
    """Closed-loop load from this process: ``connections`` keep-alive connections for ``seconds``."""
    import uvloop

    host, port = url.removeprefix("http://").split(":")
    requests = [
        (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
        for body in bodies
    ]
    latencies: list[float] = []
    errors: list[str] = []

    async def main() -> None:
        start = time.perf_counter()
        measure_from, stop_at = start + warmup, start + warmup + seconds
        await asyncio.gather(
            *(
                _connection(host, int(port), requests, stop_at, measure_from, latencies, errors, i * 7)
                for i in range(connections)
            )
        )

    uvloop.run(main())
    latencies.sort()
    count = len(latencies)
    return {
        "requests": count,
        "req_s": count / seconds,
        "p50_ms": latencies[count // 2] * 1000 if count else float("nan"),
        "p99_ms": latencies[min(count - 1, int(count * 0.99))] * 1000 if count else float("nan"),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


# --- servers ----------------------------------------------------------------------------------------------


class Server:
    def __init__(
        self, kind: str, state_dir: Path, model_name: str, port: int, log_dir: Path, runtime: str = "auto"
    ):
        from pipelines.settings import get_settings

        settings = get_settings(state_dir=state_dir, model_name=model_name)
        env = os.environ | {
            "CT_STATE_DIR": str(state_dir),
            "CT_MODEL_NAME": model_name,
            "MLFLOW_TRACKING_URI": settings.tracking_uri,
            "CT_PREDICTION_LOG": "true",
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
            "CT_SERVE_RUNTIME": runtime,
        }
        if kind.startswith("ct-serve"):
            command = [sys.executable, "-m", "pipelines.cli", "serve", "--port", str(port)]
            self.path, self.ready = "/v1/predict", "/ready"
        else:
            mlflow = str(Path(sys.executable).with_name("mlflow"))
            command = [
                mlflow,
                "models",
                "serve",
                "-m",
                f"models:/{model_name}@champion",
                "--env-manager",
                "local",
                "-w",
                "1",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ]
            self.path, self.ready = "/invocations", "/ping"
        self.kind, self.url = kind, f"http://127.0.0.1:{port}"
        self.log = (log_dir / f"{kind.replace(' ', '-')}.log").open("wb")
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.peak_rss = 0
        self._sampling = True
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def wait_ready(self, timeout_s: float = 180) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} exited; see {self.log.name}")
            try:
                if httpx.get(self.url + self.ready, timeout=2).status_code == 200:
                    self._sampler.start()
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.kind} not ready in {timeout_s} s; see {self.log.name}")

    def _sample(self) -> None:
        import psutil

        process = psutil.Process(self.process.pid)
        while self._sampling:
            try:
                tree = [process, *process.children(recursive=True)]
                self.peak_rss = max(self.peak_rss, sum(p.memory_info().rss for p in tree))
            except psutil.Error:
                return
            time.sleep(0.05)

    def stop(self) -> None:
        self._sampling = False
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def run_load(
    url: str, path: str, bodies: list[bytes], connections: int, seconds: float, warmup: float
) -> dict:
    """The load generator in a fresh process, so it never shares an interpreter with a server."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(
            {"bodies": [b.decode() for b in bodies], "args": [url, path, connections, seconds, warmup]},
            handle,
        )
    code = (
        f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); from bench.serve import drive; "
        f"job = json.load(open({handle.name!r})); bodies = [b.encode() for b in job['bodies']]; "
        "url, path, connections, seconds, warmup = job['args']; "
        "print(json.dumps(drive(url, path, bodies, connections, seconds, warmup)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    os.unlink(handle.name)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--family", default="torch,sklearn", help="Model families, comma-separated.")
    parser.add_argument("--connections", default="1,8")
    parser.add_argument("--seconds", type=float, default=10.0, help="Measured seconds per run.")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--state-dir", type=Path, default=None, help="Default: a temporary folder.")
    args = parser.parse_args()
    import logging

    import psutil

    logging.basicConfig(level=logging.WARNING)
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="ct-bench-serve-"))
    connections = [int(c) for c in args.connections.split(",")]
    print(
        f"serve bench {dt.date.today()}: {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB; one worker per server; one-row requests; "
        f"{args.seconds:.0f} s measured after {args.warmup:.0f} s warm-up per run",
        flush=True,
    )
    summary = {}
    for family in args.family.split(","):
        name, rows = build_champion(state_dir, family)
        ours = [json.dumps({"rows": [row]}).encode() for row in rows]
        theirs = [json.dumps({"dataframe_records": [row]}).encode() for row in rows]
        results: dict[tuple[str, int], dict] = {}
        runs = [("ct-serve", ours, "auto"), ("mlflow", theirs, "native")]
        if family == "torch":  # the runtimes of a torch champion: auto is its ONNX export (float32)
            runs[1:1] = [("ct-serve native", ours, "native"), ("ct-serve int8", ours, "onnx-int8")]
        for kind, bodies, runtime in runs:
            server = Server(kind, state_dir, name, 18_000 + len(results), state_dir, runtime)
            try:
                server.wait_ready()
                for count in connections:
                    results[kind, count] = run_load(
                        server.url, server.path, bodies, count, args.seconds, args.warmup
                    )
                    results[kind, count]["rss_mib"] = server.peak_rss / 2**20
            finally:
                server.stop()
        print(f"\n{family} champion ({name}):")
        print(
            f"  {'server':<16} {'conns':>5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'peak RSS MiB':>13}"
        )
        for (kind, count), r in results.items():
            print(
                f"  {kind:<16} {count:>5} {r['req_s']:>8.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
                f"{r['errors']:>7} {r['rss_mib']:>13.0f}"
                + (f"  first error: {r['first_error']}" if r["errors"] else "")
            )
        for count in connections:
            ratio = results["ct-serve", count]["req_s"] / max(results["mlflow", count]["req_s"], 1e-9)
            p99 = results["mlflow", count]["p99_ms"] / max(results["ct-serve", count]["p99_ms"], 1e-9)
            print(
                f"  {count} conns: ct-serve / mlflow req/s = {ratio:.1f}x; mlflow p99 / ct-serve p99 = {p99:.1f}x"
            )
        top = max(connections)
        summary[family] = (results["ct-serve", top], results["mlflow", top])
    parts = []
    for family, (ours, theirs) in summary.items():
        ratio = ours["req_s"] / max(theirs["req_s"], 1e-9)
        met = ratio >= GOAL_RATIO and ours["p99_ms"] < GOAL_P99_MS and ours["errors"] == 0
        parts.append(
            f"{family}: {ours['req_s']:.0f} vs {theirs['req_s']:.0f} req/s = {ratio:.1f}x, "
            f"p99 {ours['p99_ms']:.1f} vs {theirs['p99_ms']:.1f} ms ({'goal met' if met else 'goal NOT met'})"
        )
    print(
        f"\nSUMMARY at {max(connections)} connections, ct-serve vs mlflow models serve: " + "; ".join(parts)
    )


if __name__ == "__main__":
    main()
