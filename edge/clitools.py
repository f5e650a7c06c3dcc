"""What the three CLIs share: user errors become one line and an exit code (see errors.py)."""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from typing import Callable, Iterator

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


#: start-up chatter native libraries write straight to the process's stderr (file descriptor 2) when
#: TensorFlow loads, before Python's logging or TF_CPP_MIN_LOG_LEVEL can intervene
NATIVE_NOISE = re.compile(
    r"absl::InitializeLog|oneDNN custom operations|cpu_feature_guard|This TensorFlow binary is optimized"
    r"|To enable the following instructions:|TF-TRT Warning|Unable to register cu(DNN|FFT|BLAS) factory|computation_placer|Could not find cuda drivers"
    r"|^[IWE]0000 00:00:\d+\.\d+\s+\d+ \w+\.cc:\d+\]")


@contextlib.contextmanager
def native_stderr_filtered(verbose: bool = False) -> Iterator[None]:
    """While inside: the known start-up noise of native libraries (absl, oneDNN, CUDA probes: see
    NATIVE_NOISE) written to file descriptor 2 is dropped; every other line written to stderr meanwhile
    is passed on afterwards, in order. `verbose`: no filtering. Wrap imports, not long work."""
    if verbose:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode("utf-8", "replace").splitlines(keepends=True)
                    if not NATIVE_NOISE.search(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def import_quietly(*modules: str, verbose: bool = False) -> None:
    """Import `modules` (e.g. "keras") with their native start-up noise filtered out (unless verbose)."""
    import importlib

    with native_stderr_filtered(verbose):
        for name in modules:
            importlib.import_module(name)
