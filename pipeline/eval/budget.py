"""Comparisons at equal training time: every arm's figure when the quickest arm had finished.

An arm's row carries, per seed, its evaluation curve: ``(training seconds so far, figure)``
after each evaluated epoch (the engine's ``elapsed``: training wall clock, evaluation
excluded). The budget of a group of rows is the mean training time of its quickest arm;
each row's figure at that budget is, per seed, its last evaluation inside it.
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
    """``rows`` (each with ``seconds_mean`` and ``curves``) at the budget of their ``group``:
    the ``keep`` fields, ``budget_s``, the per-seed ``values`` and their ``mean`` / ``std``
    (over the seeds that had an evaluation inside the budget), in the rows' order."""
    budgets: dict[tuple, float] = {}
    for r in rows:
        g = group(r)
        budgets[g] = min(budgets.get(g, float("inf")), r["seconds_mean"])
    out = []
    for r in rows:
        budget = budgets[group(r)]
        got = [at_budget(curve, budget) for curve in r["curves"]]
        known = [v for v in got if v is not None]
        out.append({**{k: r[k] for k in keep}, "budget_s": budget, "values": got,
                    "mean": float(np.mean(known)) if known else None,
                    "std": float(np.std(known)) if known else None})
    return out
