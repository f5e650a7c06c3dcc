"""`fer-train`: report, models, fit, soup, evaluate, tune. Each command lives in its own module;
TensorFlow/Keras are imported inside commands so `--help` stays fast."""
from __future__ import annotations

import os

import click

# TensorFlow's C++ INFO/WARNING chatter (oneDNN, CPU features) is noise on a training console.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from fer_edge.clitools import run_cli


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fer-edge")
def cli() -> None:
    """Train and evaluate facial-emotion CNNs on FER2013 / FER+ (Keras 3, any backend).

    Protocol: fit on Training, choose everything on PublicTest, report PrivateTest.
    """


from .report import report_cmd  # noqa: E402
cli.add_command(report_cmd, "report")

from .evaluate import evaluate_cmd  # noqa: E402
from .fit import fit_command  # noqa: E402
from .tune import tune_cmd  # noqa: E402


@cli.command("models")
@click.option("--input-size", type=int, default=48, show_default=True, help="Square input size for params/MACs.")
def models_cmd(input_size: int) -> None:
    """List the registered architectures: params and MACs (multiply-accumulates per face)."""
    from .models import describe_models

    rows = describe_models((input_size, input_size))
    click.echo(f"{'name':<12} {'params':>11} {'MMACs':>8}  description")
    for r in rows:
        click.echo(f"{r['name']:<12} {r['params']:>11,} {r['macs'] / 1e6:>8.1f}  {r['description']}")

@cli.command("recipes")
def recipes_cmd() -> None:
    """List the shipped recipes (`fer-train fit --recipe NAME`): model, epochs, what each does."""
    from .fit import FitConfig
    from .recipes import available, load_recipe

    for name, path in available().items():
        settings, info = load_recipe(path, FitConfig)
        click.echo(f"{name:<10} v{info['version']}  {settings.get('model', FitConfig.model):<10} "
                   f"{settings.get('epochs', FitConfig.epochs):>4} epochs  sha256 {info['sha256'][:12]}  {path}")
        click.echo(f"{'':<12}{info['description']}")


@cli.command("soup")
@click.argument("runs", nargs=-1, required=True)
@click.option("--name", default=None, help="Run folder name for the average (default soup-<timestamp>).")
@click.option("--out", default="runs", show_default=True, help="Parent folder of the new run folder.")
@click.option("--weight", "weights", type=float, multiple=True,
              help="One weight per run, in order (default: uniform).")
@click.option("--data", default=None, help="Data file (default: the first run's data.json).")
def soup_cmd(runs, name, out, weights, data) -> None:
    """Average the weights of finished runs of one architecture (a model soup).

    Useful for warm restarts of one run: they share a basin, and their average is usually better than
    each. BatchNorm statistics are re-estimated on Training; each run and the soup are scored on
    PublicTest (choose there), PrivateTest is reported once. The result is a run folder that
    fer-convert and fer-train evaluate take like any other.
    """
    from .swa import run_soup

    run_soup(list(runs), name=name, out=out, weights=list(weights) or None, data=data, log=click.echo)


cli.add_command(fit_command, "fit")
cli.add_command(evaluate_cmd, "evaluate")
cli.add_command(tune_cmd, "tune")


def main() -> None:
    run_cli(cli)
