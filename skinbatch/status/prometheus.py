"""A parser for the Prometheus text exposition format (version 0.0.4), as Triton's ``/metrics`` serves it.

Pure: text in, samples out. Only what a status view needs: metric name, labels, value. ``# HELP`` and
``# TYPE`` lines and timestamps are skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from skinbatch.contract import SkinbatchError


class MetricsParseError(SkinbatchError, ValueError):
    """The text is not Prometheus exposition format."""


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


_ESCAPES = {"n": "\n", "\\": "\\", '"': '"'}


def _parse_labels(text: str, pos: int, line_no: int) -> tuple[dict[str, str], int]:
    """Parse ``{a="x",b="y"}`` starting at ``text[pos] == '{'``; return labels and the index after '}'."""
    labels: dict[str, str] = {}
    i = pos + 1
    n = len(text)
    while True:
        while i < n and text[i] in " ,":
            i += 1
        if i < n and text[i] == "}":
            return labels, i + 1
        eq = text.find("=", i)
        if eq < 0 or eq + 1 >= n or text[eq + 1] != '"':
            raise MetricsParseError(f"line {line_no}: malformed label set")
        key = text[i:eq].strip()
        i = eq + 2
        value: list[str] = []
        while i < n and text[i] != '"':
            if text[i] == "\\" and i + 1 < n:
                value.append(_ESCAPES.get(text[i + 1], "\\" + text[i + 1]))
                i += 2
            else:
                value.append(text[i])
                i += 1
        if i >= n:
            raise MetricsParseError(f"line {line_no}: unterminated label value")
        labels[key] = "".join(value)
        i += 1


def _parse_value(token: str, line_no: int) -> float:
    special = {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}
    if token in special:
        return special[token]
    try:
        return float(token)
    except ValueError:
        raise MetricsParseError(f"line {line_no}: {token!r} is not a number") from None


def parse_metrics(text: str) -> list[Sample]:
    samples = []
    for line_no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        brace = line.find("{")
        space = line.find(" ")
        if brace >= 0 and (space < 0 or brace < space):
            name = line[:brace]
            labels, end = _parse_labels(line, brace, line_no)
            rest = line[end:].split()
        else:
            parts = line.split()
            name, labels, rest = parts[0], {}, parts[1:]
        if not rest:
            raise MetricsParseError(f"line {line_no}: sample {name!r} has no value")
        samples.append(Sample(name=name, labels=labels, value=_parse_value(rest[0], line_no)))
    return samples


def fetch_metrics(url: str, timeout_s: float = 3.0) -> str:
    """GET a ``/metrics`` page. Raises ``OSError`` when it cannot be read."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - an operator-given URL
        return response.read().decode("utf-8", "replace")
