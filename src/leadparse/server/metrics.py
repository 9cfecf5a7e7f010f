"""Process-wide counters and histograms, rendered in the Prometheus text format.

The server's components increment the module-level metrics below, and
``GET /metrics`` of the API renders :data:`REGISTRY`. The classes are small
thread-safe Python objects, so the server needs no ``prometheus_client``
dependency for the few metrics it exposes. Values live in memory and start
at zero when the process starts, as Prometheus counters are expected to.

Use from other modules::

    from leadparse.server import metrics

    metrics.WEBHOOK_DELIVERY_SECONDS.observe(0.12, outcome="success")
    metrics.WEBHOOK_RETRIES.inc()
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from typing import TypeVar

__all__ = [
    "API_REQUESTS",
    "JOBS",
    "LEADS_UNACKNOWLEDGED",
    "MESSAGES_RECEIVED",
    "OUTBOUND_ACKS",
    "PARSES",
    "REGISTRY",
    "WEBHOOK_DEAD_LETTERS",
    "WEBHOOK_DELIVERY_SECONDS",
    "WEBHOOK_RETRIES",
    "Counter",
    "Gauge",
    "Histogram",
    "Registry",
]

_LabelValues = tuple[str, ...]


def _escape_label(value: str) -> str:
    # Text exposition format: backslash, double quote and line feed are
    # escaped in label values.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _format_value(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _format_labels(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    pairs = ",".join(
        f'{name}="{_escape_label(value)}"'
        for name, value in zip(names, values, strict=True)
    )
    return "{" + pairs + "}"


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]):
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> _LabelValues:
        if set(labels) != set(self.labelnames):
            raise ValueError(
                f"metric {self.name} takes labels {list(self.labelnames)}, "
                f"got {sorted(labels)}"
            )
        return tuple(str(labels[name]) for name in self.labelnames)

    def header(self) -> list[str]:
        return [
            f"# HELP {self.name} {_escape_help(self.documentation)}",
            f"# TYPE {self.name} {self.kind}",
        ]

    def samples(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    """A monotonically increasing count, optionally split by labels.

    Args:
        name: metric name; by convention it ends in ``_total``.
        documentation: the HELP text.
        labelnames: names of the labels every :meth:`inc` call passes.
    """

    kind = "counter"

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str] = ()
    ) -> None:
        super().__init__(name, documentation, labelnames)
        self._values: dict[_LabelValues, float] = {}
        if not self.labelnames:
            self._values[()] = 0.0

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Add *amount* (at least 0) to the series that *labels* select."""
        if amount < 0:
            raise ValueError(f"counter {self.name} cannot decrease (got {amount})")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        """Return the current value of one series; 0 when never incremented."""
        key = self._key(labels)
        with self._lock:
            return self._values.get(key, 0.0)

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [
            f"{self.name}{_format_labels(self.labelnames, key)} {_format_value(value)}"
            for key, value in items
        ]


class Gauge(_Metric):
    """A value that goes up and down, set to the current reading."""

    kind = "gauge"

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str] = ()
    ) -> None:
        super().__init__(name, documentation, labelnames)
        self._values: dict[_LabelValues, float] = {}

    def set(self, value: float, **labels: str) -> None:
        """Set the series that *labels* select to *value*."""
        key = self._key(labels)
        with self._lock:
            self._values[key] = value

    def value(self, **labels: str) -> float:
        """Return the current value of one series; 0 when never set."""
        key = self._key(labels)
        with self._lock:
            return self._values.get(key, 0.0)

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [
            f"{self.name}{_format_labels(self.labelnames, key)} {_format_value(value)}"
            for key, value in items
        ]


class Histogram(_Metric):
    """Observations counted into cumulative buckets, with their sum and count.

    Args:
        name: metric name, usually with the unit as suffix (``_seconds``).
        documentation: the HELP text.
        buckets: upper bounds in increasing order; ``+Inf`` is added.
        labelnames: names of the labels every :meth:`observe` call passes.
    """

    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        labelnames: Sequence[str] = (),
    ) -> None:
        super().__init__(name, documentation, labelnames)
        bounds = sorted(float(bound) for bound in buckets)
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        self.buckets = tuple(bounds)
        self._counts: dict[_LabelValues, list[int]] = {}
        self._sums: dict[_LabelValues, float] = {}

    def observe(self, value: float, **labels: str) -> None:
        """Record one observation, for example a duration in seconds."""
        key = self._key(labels)
        with self._lock:
            counts = self._counts.setdefault(key, [0] * len(self.buckets))
            for index, bound in enumerate(self.buckets):
                if value <= bound:
                    counts[index] += 1
            self._sums[key] = self._sums.get(key, 0.0) + value

    def count(self, **labels: str) -> int:
        """Return how many observations one series has."""
        key = self._key(labels)
        with self._lock:
            counts = self._counts.get(key)
            return counts[-1] if counts else 0

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted(
                (key, list(counts), self._sums[key])
                for key, counts in self._counts.items()
            )
        lines: list[str] = []
        names = (*self.labelnames, "le")
        for key, counts, total in items:
            for bound, cumulative in zip(self.buckets, counts, strict=True):
                labels = _format_labels(names, (*key, _format_value(bound)))
                lines.append(f"{self.name}_bucket{labels} {cumulative}")
            plain = _format_labels(self.labelnames, key)
            lines.append(f"{self.name}_sum{plain} {_format_value(total)}")
            lines.append(f"{self.name}_count{plain} {counts[-1]}")
        return lines


class Registry:
    """The metrics one ``/metrics`` response renders, in registration order."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}
        self._lock = threading.Lock()

    def register(self, metric: _Metric) -> None:
        """Add *metric*; a second metric with the same name raises ValueError."""
        with self._lock:
            if metric.name in self._metrics:
                raise ValueError(f"metric {metric.name} is already registered")
            self._metrics[metric.name] = metric

    def metrics(self) -> Iterable[_Metric]:
        """Return the registered metrics."""
        with self._lock:
            return list(self._metrics.values())

    def render(self) -> str:
        """Return every metric in the Prometheus text format, version 0.0.4."""
        lines: list[str] = []
        for metric in self.metrics():
            lines.extend(metric.header())
            lines.extend(metric.samples())
        return "\n".join(lines) + "\n"


REGISTRY = Registry()


_M = TypeVar("_M", bound=_Metric)


def _registered(metric: _M) -> _M:
    REGISTRY.register(metric)
    return metric


MESSAGES_RECEIVED = _registered(
    Counter(
        "leadparse_messages_received_total",
        "Messages the SMTP receiver stored and answered with 250.",
    )
)
PARSES = _registered(
    Counter(
        "leadparse_parses_total",
        "Parse attempts by outcome: success, retry (failed, will run again) "
        "or failed (failed for the last time).",
        ("outcome",),
    )
)
WEBHOOK_DELIVERY_SECONDS = _registered(
    Histogram(
        "leadparse_webhook_delivery_seconds",
        "Duration of webhook delivery attempts in seconds, by outcome.",
        (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
        ("outcome",),
    )
)
WEBHOOK_RETRIES = _registered(
    Counter(
        "leadparse_webhook_retries_total",
        "Webhook deliveries scheduled for another attempt after a failure.",
    )
)
WEBHOOK_DEAD_LETTERS = _registered(
    Counter(
        "leadparse_webhook_dead_letters_total",
        "Webhook deliveries that exhausted their retry schedule.",
    )
)
OUTBOUND_ACKS = _registered(
    Counter(
        "leadparse_outbound_acks_total",
        "Outbound acknowledgment decisions by outcome (sent, failed, or the "
        "reason none was sent).",
        ("outcome",),
    )
)
API_REQUESTS = _registered(
    Counter(
        "leadparse_api_requests_total",
        "API requests by route template and HTTP status.",
        ("route", "status"),
    )
)
LEADS_UNACKNOWLEDGED = _registered(
    Gauge(
        "leadparse_leads_unacknowledged",
        "Leads not yet acknowledged through the polling API, read at scrape time.",
    )
)
JOBS = _registered(
    Gauge(
        "leadparse_jobs",
        "Parse jobs in the store by state, read at scrape time.",
        ("state",),
    )
)
