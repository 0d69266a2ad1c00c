"""GET /metrics: Prometheus text format (prometheus_client), one registry per server.

HTTP requests by path and status are counted as they pass; the engine's numbers (tokens, steps,
batch occupancy, queue depth) are read from the engine loop's counters at scrape time.
"""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class _EngineCollector:
    def __init__(self, server):
        self.server = server

    def collect(self):
        loop = self.server.loop
        st = loop.stats
        max_rows = loop.core.cfg.max_batch_size if loop.core is not None else 1
        yield GaugeMetricFamily("warmfast_requests_in_flight", "engine requests submitted and not finished",
                                value=loop.in_flight)
        yield GaugeMetricFamily("warmfast_queue_depth", "sequences waiting to be scheduled", value=st.waiting)
        yield GaugeMetricFamily("warmfast_running_sequences", "sequences holding KV blocks", value=st.running)
        yield GaugeMetricFamily("warmfast_batch_occupancy",
                                "rows in the last engine step over max_batch_size", value=st.last_batch_rows / max_rows)
        yield CounterMetricFamily("warmfast_engine_steps", "engine forward steps", value=st.steps)
        yield CounterMetricFamily("warmfast_batch_rows", "sequences summed over engine steps", value=st.batch_rows)
        yield CounterMetricFamily("warmfast_prompt_tokens", "prompt and score tokens fed", value=st.prompt_tokens)
        yield CounterMetricFamily("warmfast_generation_tokens", "tokens generated", value=st.generated_tokens)
        yield CounterMetricFamily("warmfast_engine_requests_finished", "engine requests finished",
                                  value=st.requests_finished)
        yield GaugeMetricFamily("warmfast_ready", "1 once the model is loaded and the server not draining",
                                value=float(loop.state == "ready" and not self.server.draining))


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, server):
        self.registry = CollectorRegistry()
        self.http = Counter("warmfast_http_requests", "HTTP requests by path and status", ["path", "status"],
                            registry=self.registry)
        self.registry.register(_EngineCollector(server))
        self._paths = {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics",
                       "/tokenize", "/detokenize", "/tokenizer_info", "/v1/load_lora_adapter",
                       "/v1/unload_lora_adapter"}

    def count(self, path: str, status: int) -> None:
        self.http.labels(path if path in self._paths else "other", str(status)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
