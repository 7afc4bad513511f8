"""Percentiles of samples, and quantiles of the edge's Prometheus histograms between two scrapes."""

import math
import re
from collections.abc import Sequence

import httpx
import numpy as np

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')

Metrics = dict[tuple[str, frozenset[tuple[str, str]]], float]


def percentiles(values: Sequence[float], points: Sequence[int] = (50, 95, 99)) -> dict[str, float | None]:
    """`{"p50": ..., ...}` in the values' unit; None for no values."""
    if not values:
        return {f"p{p}": None for p in points}
    array = np.asarray(values, dtype=float)
    return {f"p{p}": float(np.percentile(array, p)) for p in points}


def parse_metrics(text: str) -> Metrics:
    samples: Metrics = {}
    for line in text.splitlines():
        if line.startswith("#") or not (match := _SAMPLE.match(line.strip())):
            continue
        labels = frozenset(_LABEL.findall(match["labels"] or ""))
        samples[(match["name"], labels)] = float(match["value"])
    return samples


def scrape(edge_url: str) -> Metrics:
    return parse_metrics(httpx.get(f"{edge_url}/metrics", timeout=30).text)


def counter_delta(before: Metrics, after: Metrics, name: str, **labels: str) -> float:
    """Increase of the samples named `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(value - before.get(key, 0.0) for key, value in after.items() if key[0] == name and wanted <= key[1])


def histogram_quantiles(
    before: Metrics, after: Metrics, name: str, points: Sequence[int] = (50, 95, 99), **labels: str
) -> dict[str, float | None]:
    """Quantiles of a histogram's observations made between two scrapes.

    Linear interpolation inside a bucket, as Prometheus's `histogram_quantile` does, so a value is
    exact only to its bucket's bounds; `+Inf` answers the largest finite bound.
    """
    wanted = set(labels.items())
    buckets: dict[float, float] = {}
    for key, value in after.items():
        if key[0] != f"{name}_bucket" or not wanted <= key[1]:
            continue
        bound = float(dict(key[1])["le"])
        buckets[bound] = buckets.get(bound, 0.0) + value - before.get(key, 0.0)
    bounds = sorted(buckets)
    total = buckets.get(math.inf, 0.0)
    result: dict[str, float | None] = {}
    for point in points:
        result[f"p{point}"] = _quantile(bounds, buckets, total, point / 100) if total > 0 else None
    return result


def _quantile(bounds: list[float], buckets: dict[float, float], total: float, q: float) -> float:
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            width = count - below
            return lower + (bound - lower) * ((rank - below) / width if width else 1.0)
        lower, below = bound, count
    return lower
