"""The console, the error exit and the dataset summary table shared by the `latents` commands."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import click
import typer
from rich.console import Console
from rich.table import Table

from pipeline.errors import ConfigError, LatentShardsError

console = Console()
err = Console(stderr=True, soft_wrap=True)


def fail(exc: BaseException) -> None:
    """Print ``exc`` as a one-line error (credentials in URLs removed) and exit with status 2."""
    from rich.markup import escape

    from pipeline.errors import redact

    err.print(f"[bold red]error:[/] {escape(redact(one_line(exc)))}")
    raise typer.Exit(2)


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line; an OSError names its file and errno text."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        msg = f"{exc.strerror}: {exc.filename}"
    else:
        msg = str(exc) or type(exc).__name__
    return " ".join(msg.split())


def renamed(value, old_value, new: str, old: str, default=None):
    """An option's value, given under its name ``new`` or, with a deprecation line, under the
    name ``old`` it had before ``--arch`` meant one thing per command (codecs: --codec-arch,
    networks: --model); ``default`` when neither is given."""
    from pipeline.errors import ConfigError

    if old_value is None:
        return default if value is None else value
    if value is not None and value != old_value:
        raise ConfigError(f"{old} is the old name of {new}: give {new} only")
    err.print(f"[yellow]warning:[/] {old} is deprecated here; use {new}")
    return old_value


def int_list(text: str | None, option: str) -> tuple[int, ...] | None:
    """``"16,32,64"`` as a tuple of ints (None when not given); a clear error naming ``option``."""
    if not text:
        return None
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{option} takes whole numbers separated by commas, not {text!r}") from None


def print_summary(s: dict) -> None:
    """A latent dataset's summary (`pipeline.shards.dataset.summarize`) as a table."""
    t = Table(title=f"latent dataset {s['root']}", show_header=False)
    for k in ("samples", "failures", "shards", "classes", "codec"):
        t.add_row(k, str(s[k]))
    t.add_row("splits", ", ".join(f"{k}: {v['samples']}" for k, v in s["splits"].items()))
    t.add_row("source bytes", f"{s['source_bytes']:,}")
    t.add_row("shard bytes", f"{s['shard_bytes']:,}")
    t.add_row("storage ratio", f"{s['storage_ratio']:.1f}x" if s["storage_ratio"] else "-")
    t.add_row("bpp mean / p50 / p95",
              f"{s['bpp_mean'] or float('nan'):.3f} / {s['bpp_p50']:.3f} / {s['bpp_p95']:.3f}")
    for reason, n in s["failures_by_reason"].items():
        t.add_row(f"failed: {reason}", str(n))
    console.print(t)


#: what a command turns into one line and exit status 2: errors the library raises on purpose
#: (ConfigError is also a ValueError) and the operating system's (disk full, no permission)
USER_ERRORS = (LatentShardsError, OSError, ValueError)


def guarded(fn):
    """``fn`` with `USER_ERRORS` turned into a one-line error and exit 2, never a traceback.

    Anything else is a bug or a library's surprise: still one line (its type named, URLs
    redacted, since a traceback may echo a credential), and ``LATENTS_DEBUG=1`` shows the
    traceback.
    """
    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            fail(exc)
        except (typer.Exit, typer.Abort, click.exceptions.ClickException, click.exceptions.Exit,
                click.exceptions.Abort):
            raise  # the way out of typer and click (usage errors, exit codes)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            if os.environ.get("LATENTS_DEBUG"):
                raise
            fail(RuntimeError(f"{type(exc).__name__}: {one_line(exc)} (unexpected; rerun with "
                              "LATENTS_DEBUG=1 for the traceback)"))

    return run


class App(typer.Typer):
    """A Typer whose every command is `guarded`."""

    def command(self, *args, **kwargs):
        register = super().command(*args, **kwargs)

        def deco(fn):
            register(guarded(fn))
            return fn

        return deco


def print_fewshot(title: str, rows: list[tuple], result: dict, output: Path) -> None:
    """A few-shot table (k, novel mean ± std, base mean ± std per row), then ``result`` as JSON."""
    import json

    t = Table(title=title)
    for c in ("shots", "novel", "base"):
        t.add_column(c, justify="right")
    for k, nm, ns, bm, bs in rows:
        t.add_row(str(k), f"{nm:.3f} ± {ns:.3f}", f"{bm:.3f} ± {bs:.3f}")
    console.print(t)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2, default=float))
    console.print(f"wrote {output}")
