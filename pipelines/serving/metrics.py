"""Prometheus metrics of one serving app, on its own registry (several apps can live in one process)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from pipelines.model.runtime import ServedModel

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 10_000)


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "ct_serve_requests",
            "HTTP requests answered, by route and status.",
            ["route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "ct_serve_request_seconds",
            "Time from request to response, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "ct_serve_batch_rows", "Rows scored in one model call.", buckets=SIZE_BUCKETS, registry=r
        )
        self.batch_requests = Histogram(
            "ct_serve_batch_requests",
            "Requests micro-batched into one model call.",
            buckets=SIZE_BUCKETS[:9],
            registry=r,
        )
        self.model_seconds = Histogram(
            "ct_serve_model_call_seconds", "Time of one model call.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.rows = Counter("ct_serve_predicted_rows", "Rows scored.", registry=r)
        self.model_version = Gauge(
            "ct_serve_model_version", "Registry version of the model in service (0: none).", registry=r
        )
        self.model_info = Gauge(
            "ct_serve_model_info", "1 for the model in service.", ["name", "version", "sha256"], registry=r
        )
        self.model_loaded_at = Gauge(
            "ct_serve_model_loaded_timestamp_seconds", "When the model in service was swapped in.", registry=r
        )
        self.swaps = Counter("ct_serve_model_swaps", "Model versions swapped into service.", registry=r)
        self.load_failures = Counter(
            "ct_serve_model_load_failures",
            "Model loads that failed, by reason (integrity, signature, runtime, warmup, load; bug: a failure of "
            "this code, the version not refused).",
            ["reason"],
            registry=r,
        )
        self.alias_refused = Counter(
            "ct_serve_alias_refused",
            "Champion alias moves refused because the promotion history does not record them.",
            registry=r,
        )
        self.out_of_domain_rows = Counter(
            "ct_serve_out_of_domain_rows",
            "Rows with a value outside the data contract's domain, by field and what was done "
            "(refused: the request got a 422; flagged: scored and marked, CT_SERVE_OUT_OF_DOMAIN=flag).",
            ["field", "action"],
            registry=r,
        )
        self.log_rows = Counter(
            "ct_serve_prediction_log_rows", "Served predictions written to the prediction log.", registry=r
        )
        self.log_failures = Counter(
            "ct_serve_prediction_log_failures", "Prediction log writes that failed.", registry=r
        )
        self.log_dropped = Counter(
            "ct_serve_prediction_log_dropped_rows",
            "Served predictions the prediction log dropped: its buffer full, rows Arrow could not convert, "
            "or rows its sink still refused at shutdown.",
            registry=r,
        )
        self.log_buffered = Gauge(
            "ct_serve_prediction_log_buffered_rows", "Rows waiting to be written.", registry=r
        )

    def model_swapped(self, served: ServedModel, previous: ServedModel | None) -> None:
        if previous is not None:
            self.model_info.remove(previous.name, str(previous.version), previous.sha256)
        self.model_info.labels(served.name, str(served.version), served.sha256).set(1)
        self.model_version.set(served.version)
        self.model_loaded_at.set_to_current_time()
        self.swaps.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
