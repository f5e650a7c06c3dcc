"""`fer-train`: report, models, fit, evaluate, tune. Each command lives in its own module;
TensorFlow/Keras are imported inside commands so `--help` stays fast."""
from __future__ import annotations

import click

from fer_edge.clitools import run_cli


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fer-edge")
def cli() -> None:
    """Train and evaluate facial-emotion CNNs on FER2013 / FER+ (Keras 3, any backend).

    Protocol: fit on Training, choose everything on PublicTest, report PrivateTest.
    """


from .report import report_cmd  # noqa: E402
cli.add_command(report_cmd, "report")


def main() -> None:
    run_cli(cli)
