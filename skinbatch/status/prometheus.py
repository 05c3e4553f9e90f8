"""Prometheus text exposition format (version 0.0.4), as Triton's ``/metrics`` serves it, read with
``prometheus_client.parser``.

Pure: text in, samples out, in the page's order. Only what a status view needs: sample name, labels,
value. ``# HELP`` and ``# TYPE`` lines and timestamps are skipped.

Each sample line is handed to the library on its own, without the comment lines, so that every sample
keeps the name it has on the page: given a ``# TYPE x counter`` line, the library renames a sample ``x``
to ``x_total`` (Triton's counters have no ``_total``), and it raises on a ``# TYPE`` line it cannot read,
which a status view only skips. Reading line by line also lets an error name its line.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from skinbatch.contract import SkinbatchError


class MetricsParseError(SkinbatchError, ValueError):
    """The text is not Prometheus exposition format."""


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def _parse_line(line: str, line_no: int) -> list[Sample]:
    try:
        return [Sample(name=s.name, labels=dict(s.labels), value=float(s.value))
                for family in text_string_to_metric_families(line) for s in family.samples]
    except ValueError as exc:
        raise MetricsParseError(f"line {line_no}: {str(exc) or 'malformed sample'}") from None


def parse_metrics(text: str) -> list[Sample]:
    samples = []
    for line_no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        samples.extend(_parse_line(line, line_no))
    return samples


def fetch_metrics(url: str, timeout_s: float = 3.0) -> str:
    """GET a ``/metrics`` page. Raises ``OSError`` when it cannot be read."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - an operator-given URL
        return response.read().decode("utf-8", "replace")
