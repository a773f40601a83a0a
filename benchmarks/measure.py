"""Interleaved timing and peak-memory measurement.

The machine is shared and noisy, so no figure stands alone: a subject and its baselines run
in alternating rounds (the order rotating each round), each round times a batch of calls, and
a comparison is the median over rounds of the per-round ratio. Slow phases of the machine then
hit both sides of a ratio alike.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class Timings:
    """Seconds per call, one entry per round, for each variant."""

    per_round: dict[str, list[float]]

    def median(self, name: str) -> float:
        return statistics.median(self.per_round[name])

    def ratio(self, subject: str, baseline: str) -> float:
        """Median over rounds of subject time / baseline time (above 1: the subject is slower)."""
        pairs = zip(self.per_round[subject], self.per_round[baseline])
        return statistics.median(s / b for s, b in pairs)


def interleave(variants: dict[str, Callable[[], Any]], *, rounds: int, round_seconds: float) -> Timings:
    """Time each variant in `rounds` alternating rounds of about `round_seconds` each."""
    names = list(variants)
    calls: dict[str, int] = {}
    for name, fn in variants.items():
        fn()  # warm: engines, caches, the database's own buffers
        started = time.perf_counter()
        fn()
        once = max(time.perf_counter() - started, 1e-7)
        calls[name] = max(1, int(round_seconds / once))
    per_round: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            fn, n = variants[name], calls[name]
            gc.collect()
            started = time.perf_counter()
            for _ in range(n):
                fn()
            per_round[name].append((time.perf_counter() - started) / n)
    return Timings(per_round)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_rss_growth_mb(fn: Callable[[], Any]) -> float:
    """How far resident memory rose above its level before `fn`, at its peak during `fn`.

    Linux resets the peak (VmHWM) when 5 is written to /proc/self/clear_refs.
    """
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kb("VmRSS")
    result = fn()
    peak = _status_kb("VmHWM")
    del result
    return max(0, peak - before) / 1024
