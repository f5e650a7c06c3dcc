"""`fer-train`: report, models, fit, soup, evaluate, tune, runtime-views, park, unpark. Each command lives in its own module;
TensorFlow/Keras are imported inside commands so `--help` stays fast."""
from __future__ import annotations

import os
import sys

import click

# TensorFlow's C++ INFO/WARNING chatter (oneDNN, CPU features) is noise on a training console.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from fer_edge.clitools import import_quietly, run_cli

#: commands that build Keras models: Keras (TensorFlow) is imported first, its native start-up noise
#: (absl, oneDNN, CPU features) filtered out unless -v
KERAS_COMMANDS = frozenset({"fit", "evaluate", "tune", "soup", "park"})


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fer-edge")
@click.option("-v", "--verbose", count=True,
              help="Show TensorFlow's start-up messages (absl, oneDNN, CPU features) and its C++ log.")
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """Train and evaluate facial-emotion CNNs on FER2013 / FER+ (Keras 3, any backend).

    Protocol: fit on Training, choose everything on PublicTest, report PrivateTest.
    """
    ctx.obj = {"verbose": verbose}
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    asking_help = any(a in ("-h", "--help") for a in sys.argv[1:])
    if ctx.invoked_subcommand in KERAS_COMMANDS and not asking_help:
        import_quietly("keras", verbose=bool(verbose))


from .report import report_cmd  # noqa: E402
cli.add_command(report_cmd, "report")

from .evaluate import evaluate_cmd  # noqa: E402
from .fit import fit_command  # noqa: E402
from .tune import tune_cmd  # noqa: E402


@cli.command("models")
@click.option("--input-size", type=int, default=48, show_default=True, help="Square input size for params/MACs.")
@click.option("--refresh", is_flag=True,
              help="Build every model again instead of reading the table cached for this models.py (see train/model_table.py).")
@click.pass_context
def models_cmd(ctx: click.Context, input_size: int, refresh: bool) -> None:
    """List the registered architectures: params and MACs (multiply-accumulates per face).

    The figures come from building each model; they are cached per version of train/models.py, so
    the list answers at once until the models change (--refresh builds them again).
    """
    from .model_table import models_table

    rows, _ = models_table((input_size, input_size), refresh=refresh, verbose=bool((ctx.obj or {}).get("verbose")))
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


@cli.command("runtime-views")
@click.option("--data", envvar="FER_DATA", default=None,
              help="fer2013.npz / .csv / image folder (its Training faces). Default: $FER_DATA, else ../shared/data/fer2013.npz.")
@click.option("--out", default="runs/runtime_views.npz", show_default=True, help="The views file to write (npz).")
@click.option("--views", type=int, default=1, show_default=True, help="Renders per Training face.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-faces", type=int, default=None, help="A random subset of Training faces (smoke runs).")
@click.option("--detector", "detector_kind", type=click.Choice(["blazeface", "blazeface-full", "haar"]),
              default="blazeface", show_default=True, help="The face stage to imitate (the runtime's default: blazeface).")
@click.option("--jobs", type=int, default=1, show_default=True,
              help="Views rendered at once, one process (one core) each; the file is the same whatever the number.")
def runtime_views_cmd(data, out, views, seed, max_faces, detector_kind, jobs) -> None:
    """Cut Training faces out of camera-like frames the way the runtime does, to train on.

    Each face is pasted into a 640x480 frame (a real background, 60-240 px, tilted up to 30 degrees, a
    webcam's exposure, blur and noise); the detector looks for it and the aligner cuts out what the
    classifier would get. `fer-train fit --runtime-views FILE` mixes these crops into training. About
    12-17 minutes per render of the 28,709 Training faces on one core of this machine (--views 2: twice,
    or once with --jobs 2 on two cores).
    """
    from .runtime_views import make_runtime_views

    make_runtime_views(data, out, views=views, seed=seed, max_faces=max_faces, detector_kind=detector_kind,
                       jobs=jobs, log=click.echo)


@cli.command("park")
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--to", default="models/in_training", show_default=True,
              help="Where the run's resumable state is copied (a folder that is committed).")
def park_cmd(run, to) -> None:
    """Carry an unfinished run to the next machine: copy what `fit --resume` needs into TO/<run>/.

    runs/ is not in the repository; a sitting on a new machine starts without it. The parked folder
    (the last epoch's state, the best checkpoint, the teachers' targets, a manifest with each file's
    sha256) is committed; `fer-train unpark` puts it back under runs/ and `fit --resume` goes on exactly
    where it stopped. Stop the run first (its last completed epoch is kept).
    """
    from .park import park

    park(run, to, log=click.echo)


@cli.command("unpark")
@click.argument("parked", type=click.Path(file_okay=False))
@click.option("--out", default="runs", show_default=True, help="Parent folder of the restored run folder.")
@click.option("--force", is_flag=True, help="Replace a run folder that is already further than the parked state.")
def unpark_cmd(parked, out, force) -> None:
    """Put a parked run (`fer-train park`) back under OUT/, every file's sha256 checked, to --resume."""
    from .park import unpark

    unpark(parked, out, force=force, log=click.echo)


cli.add_command(fit_command, "fit")
cli.add_command(evaluate_cmd, "evaluate")
cli.add_command(tune_cmd, "tune")


def main() -> None:
    run_cli(cli)
