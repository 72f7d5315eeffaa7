"""Rich progress bars and summary tables shared by the jobs."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pipeline.convert import Progress as Step


class ConvertBar:
    """A live bar with images/s, bpp so far and failures: a `pipeline.convert.ConvertObserver`."""

    def __init__(self, console: Console | None = None, enabled: bool = True):
        self.total = Step()
        self.t0 = time.perf_counter()
        self._shards = 0
        self._bar = Progress(
            TextColumn("[bold]converting"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>7.1f} img/s"), TextColumn("bpp {task.fields[bpp]:.3f}"),
            TextColumn("failures {task.fields[failures]}"), TextColumn("shards {task.fields[shards]}"),
            TimeElapsedColumn(), console=console, disable=not enabled, transient=False)
        self._task = self._bar.add_task("convert", total=None, rate=0.0, bpp=0.0, failures=0,
                                        shards="")

    def __enter__(self):
        self._bar.__enter__()
        return self

    def __exit__(self, *exc):
        self._bar.__exit__(*exc)

    def begin(self, images: int, shards: int) -> None:
        """A new stretch of work (the shards to do, then perhaps a retry round): the bar restarts."""
        self.t0, self.total, self._shards = time.perf_counter(), Step(), shards
        self._bar.reset(self._task, total=images, rate=0.0, bpp=0.0, failures=0, shards=f"0/{shards}")

    def update(self, step: Step) -> None:
        t = self.total = self.total + step
        self._bar.update(self._task, advance=step.images, rate=t.images / self.elapsed, bpp=t.bpp,
                         failures=t.failures)

    def shard_done(self, done: int) -> None:
        self._bar.update(self._task, shards=f"{done}/{self._shards}")

    @property
    def elapsed(self) -> float:
        return max(time.perf_counter() - self.t0, 1e-9)


class StepBar:
    """A plain bar for work counted in steps (images evaluated, samples cached): ``with
    StepBar("evaluating", n) as advance: … advance(k)``."""

    def __init__(self, label: str, total: int, console: Console | None = None):
        self._bar = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), TextColumn("{task.description}"), console=console)
        self._task = self._bar.add_task("", total=total)

    def __enter__(self):
        self._bar.__enter__()
        return self.advance

    def __exit__(self, *exc):
        self._bar.__exit__(*exc)

    def advance(self, n: int = 1, what: str = "") -> None:
        self._bar.update(self._task, advance=n, description=what if len(what) <= 40 else f"…{what[-39:]}")
