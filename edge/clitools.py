"""What the three CLIs share: user errors become one line and an exit code (see errors.py)."""
from __future__ import annotations

import logging
import sys
from typing import Callable

import click

from .errors import FerError


def run_cli(group: click.BaseCommand, argv: list[str] | None = None) -> None:
    """Run a click group; a FerError prints `error: <message>` and exits with its code."""
    try:
        group.main(args=argv, standalone_mode=False)
    except FerError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(0)


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main_for(group: click.BaseCommand) -> Callable[[], None]:
    return lambda: run_cli(group)
