"""The `latents` command line: this module only assembles the commands, one module per group
(convert_cli, dataset_cli, codec_cli, eval_cli, train_cli, cache_cli, fewshot_cli, tasks_cli),
each a thin wrapper that builds configs and calls the library."""

from __future__ import annotations

from jobs.cache_cli import cache_app
from jobs.codec_cli import integerize_cmd, train_codec_cmd
from jobs.console import App
from jobs.convert_cli import convert
from jobs.dataset_cli import decode, demo, inspect, verify
from jobs.eval_cli import eval_app
from jobs.fewshot_cli import fewshot_app
from jobs.tasks_cli import bench, fetch_photos, make_task
from jobs.train_cli import train_app

app = App(add_completion=False, no_args_is_help=True,
          help="Image corpora → learned-compression latent shards, and back.")
app.command()(convert)
for command in (inspect, verify, decode, demo):
    app.command()(command)
app.command("train-codec")(train_codec_cmd)
app.command("integerize")(integerize_cmd)
app.add_typer(eval_app, name="eval")
app.add_typer(train_app, name="train")
app.add_typer(cache_app, name="cache")
app.add_typer(fewshot_app, name="fewshot")
app.command("make-task")(make_task)
app.command("fetch-photos")(fetch_photos)
app.command()(bench)


if __name__ == "__main__":
    app()
