"""The soak's pass or fail, from its per-minute rows (issue 21, "Prove it for hours").

- throughput: every steady minute (after the warm-up, outside a held snapshot and the minute that
  follows its release) within ±20 % of their median, and that median within ±20 % of the offered rate;
- p99 (enqueue → start): every steady minute within ±20 % of the median p99, or within P99_SLACK_MS
  of it (at a few milliseconds, ±20 % is a scheduler's hiccup on a shared machine);
- sizes (jobs and job_events, each with its indexes): from the first minute after retention has
  turned over (retention + one prune round; with a held snapshot, a minute after its release), no
  minute more than 20 % above the first of them;
- server memory: the same minutes, the last at most 10 % above the first (PSS when /proc gives it,
  else RSS: RSS counts a shared_buffers page once per backend that touched it, so it grows for a
  long time as backends warm up, without any memory being used);
- recovery (with a held snapshot): the first minute that starts at least a minute after the release
  within ±20 % of the steady median.

A check whose window has fewer than two minutes is None: the run was too short to tell; the run
passes when every other check does, and is None itself when no check could be judged.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

BAND = 0.20
P99_SLACK_MS = 5.0
MEMORY_GROWTH = 0.10


@dataclass(frozen=True)
class Plan:
    minutes: int
    rate: float
    warmup_minutes: int
    retention_s: float
    prune_interval_s: float
    hold: tuple[float, float] | None  # (start, end) in seconds from the run's start

    def disturbed(self, index: int) -> bool:
        """The minute overlaps a held snapshot or the minute after its release."""
        if self.hold is None:
            return False
        start, end = index * 60, (index + 1) * 60
        return start < self.hold[1] + 60 and end > self.hold[0]

    def steady(self, index: int) -> bool:
        return index >= self.warmup_minutes and not self.disturbed(index)

    @property
    def turned_over(self) -> int:
        """The first minute whose jobs' sizes are past retention's first turn (and a hold's release)."""
        first = math.ceil((self.retention_s + self.prune_interval_s) / 60)
        if self.hold is not None:
            first = max(first, math.ceil((self.hold[1] + 60) / 60))
        return max(first, self.warmup_minutes)


def within(value: float, centre: float, band: float = BAND, slack: float = 0.0) -> bool:
    return abs(value - centre) <= max(band * centre, slack)


def judge(plan: Plan, rows: list[dict[str, Any]]) -> dict[str, Any]:
    steady = [r for r in rows if plan.steady(r["minute"] - 1)]
    checks: dict[str, Any] = {}

    rates = [r["jobs_per_s"] for r in steady]
    median_rate = round(statistics.median(rates), 1) if rates else None
    checks["throughput"] = {
        "minutes": [r["minute"] for r in steady],
        "median_jobs_per_s": median_rate,
        "offered_jobs_per_s": plan.rate,
        "pass": None
        if len(rates) < 2 or median_rate is None
        else all(within(x, median_rate) for x in rates) and within(median_rate, plan.rate),
    }

    p99s = [r["wait_p99_ms"] for r in steady if r["wait_p99_ms"] is not None]
    median_p99 = round(statistics.median(p99s), 2) if p99s else None
    checks["p99"] = {
        "median_ms": median_p99,
        "pass": None
        if len(p99s) < 2 or median_p99 is None
        else all(within(x, median_p99, slack=P99_SLACK_MS) for x in p99s),
    }

    later = [r for r in rows if r["minute"] - 1 >= plan.turned_over]
    sizes: dict[str, Any] = {"from_minute": plan.turned_over + 1}
    for key in ("jobs_total_mb", "job_events_total_mb"):
        values = [r[key] for r in later]
        sizes[key] = {
            "first": values[0] if values else None,
            "max": max(values) if values else None,
            "pass": None if len(values) < 2 else max(values) <= values[0] * (1 + BAND),
        }
    verdicts = [v["pass"] for k, v in sizes.items() if isinstance(v, dict)]
    sizes["pass"] = None if None in verdicts else all(verdicts)
    checks["sizes"] = sizes

    key = "pss_mb" if later and all(r.get("pss_mb") is not None for r in later) else "rss_mb"
    memory = [r[key] for r in later if r.get(key) is not None]
    checks["server_memory"] = {
        "measure": key,
        "first": memory[0] if memory else None,
        "last": memory[-1] if memory else None,
        "pass": None if len(memory) < 2 else memory[-1] <= memory[0] * (1 + MEMORY_GROWTH),
    }

    if plan.hold is not None:
        after = [r for r in rows if (r["minute"] - 1) * 60 >= plan.hold[1] + 60]
        first = after[0] if after else None
        checks["recovery"] = {
            "released_at_s": plan.hold[1],
            "minute": first["minute"] if first else None,
            "jobs_per_s": first["jobs_per_s"] if first else None,
            "pass": None
            if first is None or median_rate is None
            else within(first["jobs_per_s"], median_rate),
        }

    decided = [c["pass"] for c in checks.values() if c["pass"] is not None]
    verdict = all(decided) if decided else None  # None: no check could be judged
    return {"checks": checks, "pass": verdict, "undecided": len(checks) - len(decided)}
