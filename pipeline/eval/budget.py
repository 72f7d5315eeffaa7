"""Comparisons at equal training time: every arm's figure when the quickest arm had finished.

An arm's row carries, per seed, its evaluation curve: ``(training seconds so far, figure)``
after each evaluated epoch (the engine's ``elapsed``: training wall clock, evaluation
excluded; the last point is the run's end). Seed by seed, the budget of a group of rows is
the training time of its quickest arm with that seed, and every row's figure is its last
evaluation inside that budget: the quickest arm keeps its final figure, a slower one gives
the figure it had reached by then (or none, when even its first evaluation came later).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def at_budget(curve: list[tuple[float, float]], budget: float) -> float | None:
    """The last figure of ``curve`` reached within ``budget`` seconds (None: even the first
    evaluation came later)."""
    inside = [v for t, v in curve if t <= budget * (1 + 1e-9)]
    return inside[-1] if inside else None


def equal_time(rows: list[dict], group: Callable[[dict], tuple], keep: tuple[str, ...]) -> list[dict]:
    """``rows`` (each with per-seed ``curves``) at the budgets of their ``group``: the ``keep``
    fields, ``budget_s`` (the per-seed budgets), the per-seed ``values``, their ``mean`` /
    ``std`` over the seeds with a figure inside the budget, and ``n``, how many had one."""
    budgets: dict[tuple, list[float]] = {}
    for r in rows:
        ends = [curve[-1][0] if curve else float("inf") for curve in r["curves"]]
        old = budgets.get(group(r))
        budgets[group(r)] = ends if old is None else [min(a, b) for a, b in zip(old, ends, strict=True)]
    out = []
    for r in rows:
        budget = budgets[group(r)]
        got = [at_budget(curve, b) for curve, b in zip(r["curves"], budget, strict=True)]
        known = [v for v in got if v is not None]
        out.append({**{k: r[k] for k in keep}, "budget_s": budget, "values": got, "n": len(known),
                    "mean": float(np.mean(known)) if known else None,
                    "std": float(np.std(known)) if known else None})
    return out
