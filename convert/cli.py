"""`fer-convert MODEL --int8`: TFLite variants + the accuracy gate + model card (+ Edge TPU check)."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from fer_edge.clitools import import_quietly, run_cli, setup_logging

from .calibrate import DEFAULT_CALIB_SIZE
from .gate import DEFAULT_MAX_DROP_PP, DEFAULT_MIN_AGREEMENT_PCT

EPILOG = """\b
Outputs (in --out-dir; default: next to MODEL, inside it for a run folder):
  <base>_<variant>.tflite         a converted model that passed its gate
  <base>_<variant>.tflite.rejected  one that FAILED its gate (never under the loadable name)
  <base>_<variant>_gate.json/.md  the gate report: top-1 float vs converted, drop, agreement,
                                  per-class recall drop, mean |delta p|
                                  (_gate_PrivateTest.json etc. for another --split)
  <base>.json                     the model card (created or updated)
  <base>_convert.json             what this run did (calibration, files, sizes, latency)
  <base>_int8_edgetpu.tflite, <base>_edgetpu_check.json   with --edgetpu

\b
Exit codes:
  0  done (with --edgetpu: also when edgetpu_compiler is missing; install commands are printed)
  3  bad input (model, data, contract), or --edgetpu found the model incompatible / ops on the CPU
     (--allow-cpu-ops accepts CPU ops; unquantised tensors or dynamic shapes always fail)
  5  a gate failed: top-1 drop > --max-drop or agreement < --min-agreement, or a useless model:
     float or converted top-1 not above the majority-class baseline of the gate split, or one label
     for > 90 % of the faces (--allow-weak lets it pass, reported)
  6  --edgetpu --require-compiler and edgetpu_compiler is not on PATH
"""


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--int8", "int8", is_flag=True, help="Full-integer model: int8 weights, activations, input and output (the default).")
@click.option("--float16", is_flag=True, help="float16 weights, float32 input/output.")
@click.option("--dynamic", is_flag=True, help="Dynamic-range: int8 weights, float activations.")
@click.option("--float32", is_flag=True, help="Plain float32 TFLite.")
@click.option("--out-dir", type=click.Path(path_type=Path), help="Output folder (default: next to MODEL / inside the run folder).")
@click.option("--name", help="Output base name (default: the run folder's name or the model file's stem).")
@click.option("--data", type=click.Path(path_type=Path),
              help="Labelled data for calibration and the gate (default: the run's data.json, else ../shared/data/fer2013.npz).")
@click.option("--ferplus-votes", type=click.Path(path_type=Path),
              help="ferplus_votes.npz for an 8-label FER+ model (default: the run's, or the one beside --data).")
@click.option("--calib-size", type=click.IntRange(min=1), default=DEFAULT_CALIB_SIZE, show_default=True,
              help="Training faces to calibrate int8 on (class-balanced).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the calibration sample and --gate-rows subset.")
@click.option("--split", default="public", show_default=True, help="Gate split: public (PublicTest) or private (PrivateTest).")
@click.option("--gate-rows", type=click.IntRange(min=1), help="Gate on a seeded subset of N faces of the split (default: all).")
@click.option("--max-drop", type=float, default=DEFAULT_MAX_DROP_PP, show_default=True, help="Largest top-1 drop allowed, percentage points.")
@click.option("--min-agreement", type=float, default=DEFAULT_MIN_AGREEMENT_PCT, show_default=True,
              help="Smallest float/converted prediction agreement allowed, %.")
@click.option("--allow-weak", is_flag=True,
              help="Let a useless model pass the gate (top-1 not above the majority-class baseline, or one label for "
                   "> 90 % of the faces); it is still reported. For smoke runs only.")
@click.option("--no-gate", is_flag=True, help="Skip the gate (the output says so; the card records it).")
@click.option("--bench", type=click.IntRange(min=0), default=200, show_default=True,
              help="Time N invokes per variant (1 thread, median ms/face); 0 = off.")
@click.option("--edgetpu", is_flag=True, help="Check the int8 model for the Edge TPU; compile it when edgetpu_compiler is on PATH.")
@click.option("--allow-cpu-ops", is_flag=True, help="With --edgetpu: accept ops that would run on the CPU.")
@click.option("--require-compiler", is_flag=True, help="With --edgetpu: exit 6 when edgetpu_compiler is not installed.")
@click.option("--temperature", metavar="auto|none|T",
              help="Confidence calibration: auto fits a temperature T on PublicTest (minimum NLL of the float model) "
                   "and folds logits/T into the model before its softmax, so scores mean what they say; none keeps the "
                   "trained scores; a number is used as T. A converted .tflite MODEL with --temperature is calibrated "
                   "in place (softmax beta = 1/T), its card updated.  [default: auto]")
@click.option("--measure", is_flag=True,
              help="A converted .tflite MODEL: re-measure its top-1 on PublicTest and PrivateTest through the runtime's "
                   "classifier (FER+ models: also on Microsoft's majority protocol) and record it in its card.")
@click.option("--labels", help="Comma-separated labels (default: the card's, the run's, or FER2013's).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.option("-v", "--verbose", count=True,
              help="Also TensorFlow's start-up messages (absl, oneDNN, CPU features) and its info log; -vv: debug.")
def cli(model: Path, int8: bool, float16: bool, dynamic: bool, float32: bool, out_dir: Path | None, name: str | None,
        data: Path | None, ferplus_votes: Path | None, calib_size: int, seed: int, split: str, gate_rows: int | None, max_drop: float,
        min_agreement: float, allow_weak: bool, no_gate: bool, bench: int, edgetpu: bool, allow_cpu_ops: bool,
        require_compiler: bool, temperature: str | None, measure: bool, labels: str | None, quiet: bool,
        verbose: int) -> None:
    """Convert MODEL (a .keras file or a fer-train run folder) to TFLite, prove the accuracy held.

    Each variant is validated through the edge classifier, then gated against the float model on
    a labelled split (PublicTest by default) through the exact code path the device runs.
    MODEL may also be an existing .tflite file with --edgetpu: then only the Edge TPU check runs.
    """
    setup_logging(verbose=verbose, quiet=quiet)
    if not verbose:
        logging.getLogger("tensorflow").setLevel(logging.WARNING)  # "Assets written to ..." is noise here
    say = (lambda s: None) if quiet else click.echo
    if model.suffix.lower() == ".tflite":
        if not edgetpu and temperature is None and not measure:
            raise click.UsageError("a .tflite MODEL is only checked for the Edge TPU (--edgetpu), calibrated "
                                   "(--temperature) or re-measured (--measure)")
        from . import export as export_mod

        if temperature is not None:
            t = export_mod.parse_temperature(temperature)
            if t is None:
                raise click.UsageError("--temperature none on a .tflite MODEL has nothing to do")
            export_mod.calibrate_tflite(model, t, data=data, ferplus_votes=ferplus_votes, say=say)
        if measure:
            export_mod.measure_tflite(model, data=data, ferplus_votes=ferplus_votes, say=say)
        if not edgetpu:
            return

        if not model.is_file():
            from fer_edge.errors import ModelError

            raise ModelError(f"model not found: {model}")
        opts = export_mod.ExportOptions(allow_cpu_ops=allow_cpu_ops, require_compiler=require_compiler)
        export_mod.edgetpu_step(model, out_dir or model.parent, model.stem, opts, click.echo)
        return

    if measure:
        raise click.UsageError("--measure re-measures a converted .tflite MODEL; a run or .keras MODEL is measured "
                               "by its conversion's gate")
    formats = [f for f, on in (("int8", int8), ("float16", float16), ("dynamic", dynamic), ("float32", float32)) if on]
    if not formats:
        formats = ["int8"]
        say("no format flag given: converting --int8")
    _use_tensorflow_backend(say, verbose)
    import_quietly("keras", verbose=bool(verbose))  # TensorFlow's native start-up chatter, unless -v
    from . import export as export_mod

    opts = export_mod.ExportOptions(
        out_dir=out_dir, name=name, data=data, ferplus_votes=ferplus_votes, calib_size=calib_size, seed=seed, gate=not no_gate, split=split,
        gate_rows=gate_rows, max_drop=max_drop, min_agreement=min_agreement, allow_weak=allow_weak, edgetpu=edgetpu,
        allow_cpu_ops=allow_cpu_ops, require_compiler=require_compiler, bench=bench,
        labels=tuple(s.strip() for s in labels.split(",")) if labels else None, progress=not quiet and sys.stderr.isatty(),
        temperature=export_mod.parse_temperature("auto" if temperature is None else temperature),
    )
    result = export_mod.export(model, formats, options=opts, say=say)
    for variant, res in result.variants.items():
        say(f"{variant}: {res.status}: {res.path}")


def _use_tensorflow_backend(say, verbose: int = 0) -> None:
    """TFLite conversion runs through TensorFlow: make Keras use it (before Keras is imported); keep
    TensorFlow's C++ INFO/WARNING log quiet unless -v."""
    current = os.environ.get("KERAS_BACKEND")
    if current and current != "tensorflow" and "keras" not in sys.modules:
        say(f"note: KERAS_BACKEND={current} overridden: TFLite conversion needs the tensorflow backend")
        os.environ["KERAS_BACKEND"] = "tensorflow"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "2")


def main() -> None:
    run_cli(cli)
