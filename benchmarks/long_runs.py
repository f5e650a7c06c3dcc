"""Where the long recipe runs stand: PublicTest accuracy per epoch against the shipped model they must beat.

Reads each run folder's history.csv (written after every epoch, so it is current while the run trains)
and config.json, and the shipped model's card for the bar (its float PublicTest top-1, the split every
choice is made on). Where the shipped model's own run folder is here too (its card's `training.run_dir`),
its curve is drawn beside the new one and the summary says where it stood by the same epoch: a long run
is judged against the shipped run at the same point of its schedule, not only against its end. Writes a
JSON summary and a plot: one panel per run, PublicTest accuracy and the learning rate per epoch, the
shipped model's PublicTest accuracy as a dashed line. Reads files only: it can run beside the training runs.

    python benchmarks/long_runs.py                         # the runs listed in RUNS, if present
    python benchmarks/long_runs.py runs/my-run:fer_fast    # any run folder, against a shipped card
Writes benchmarks/results/long_runs.{json,png}.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
#: the long runs of models/README.md ("Long runs in progress") and the shipped card each must beat
#: (the finished runs and their verdicts are in models/README.md items 13-23; the last two shipped). A run that is not under runs/ is
#: read from where `fer-train park` carried it (models/in_training/<run>/: its history and config travel with it),
#: so a clean checkout draws it too; a finished run found in neither place keeps the curve the last results file
#: recorded for it (a finished run's curve does not change). A value may name, after the card, a run to draw
#: beside it instead of the shipped model's run (an A/B of one change). Pass a run folder on the command line
#: (RUN:CARD) for any run of your own.
RUNS = {
    "runs/edgenet_s211-recipe2p25-ens4": "edgenet_s-recipe-fast",  # the fer_fast it replaced in session 24
    "runs/edgenet_s211-p25-ens4b": "edgenet_s211-recipe2p25-ens4",  # the fer_fast it replaced in session 26
    "runs/edgenet_s211-p25-ens4c": "fer_fast",  # finished in session 28, not shipped (models/README item 24)
    # the same run with the teachers scoring every augmented batch (--kd-online), drawn against the run above;
    # finished in session 30, not shipped, level with it at the end (models/README item 25)
    "runs/edgenet_s211-p25-ens4c-online": ("fer_fast", "runs/edgenet_s211-p25-ens4c"),
}
PARKED = REPO / "models" / "in_training"


def _folder(run: str) -> Path:
    """The run folder, or its parked copy when the run folder is not on this machine."""
    path = Path(run) if Path(run).is_absolute() else REPO / run
    parked = PARKED / path.name
    return parked if not (path / "history.csv").is_file() and (parked / "history.csv").is_file() else path


def _card_path(name: str) -> Path:
    """A shipped card (models/), else the reference card a replaced model left (benchmarks/results/cards/): a
    finished run is still drawn against the model it had to beat after it has replaced it."""
    shipped = REPO / "models" / f"{name}.json"
    return shipped if shipped.is_file() else REPO / "benchmarks" / "results" / "cards" / f"{name}.json"


def _history(run: Path) -> list[dict]:
    with open(run / "history.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _shipped_run_curve(card: dict, run: Path) -> tuple[str, list[float]] | tuple[None, None]:
    """The shipped model's own run folder and PublicTest curve, when that folder is here (not in a clean checkout)."""
    run_dir = (card.get("training") or {}).get("run_dir")
    if not run_dir:
        return None, None
    folder = Path(run_dir) if Path(run_dir).is_absolute() else REPO / run_dir
    if not (folder / "history.csv").is_file() or folder.resolve() == run.resolve():
        return None, None
    return run_dir, [round(100 * float(r["val_accuracy"]), 2) for r in _history(folder)]


def lead_per_block(curve: list[float], reference: list[float], block: int = 10) -> list[float]:
    """Mean PublicTest lead of `curve` over `reference`, per block of epochs both have (the last block may be
    short). One epoch's figure moves by a point or two between neighbours; the mean of ten says which run is
    ahead at that stage of the schedule."""
    n = min(len(curve), len(reference))
    leads = []
    for start in range(0, n, block):
        ours, theirs = curve[start:min(start + block, n)], reference[start:min(start + block, n)]
        leads.append(round(sum(ours) / len(ours) - sum(theirs) / len(theirs), 2))
    return leads


def summarise(run: Path, card_name: str, reference: tuple[str, list[float]] | None = None) -> dict | None:
    """Epochs done of planned, the PublicTest curve, its best, the shipped model's PublicTest top-1, and (when
    its run folder is here) the best the shipped run had reached by the same epoch; `reference` (run name,
    PublicTest curve) replaces the shipped run as the curve to compare with."""
    history, config_path = run / "history.csv", run / "config.json"
    if not history.is_file() or not config_path.is_file():
        return None
    rows = _history(run)
    config = json.loads(config_path.read_text())
    val = [round(100 * float(r["val_accuracy"]), 2) for r in rows]
    lr = [float(r["learning_rate"]) for r in rows if r.get("learning_rate")]
    card = json.loads(_card_path(card_name).read_text())
    shipped = card["metrics"]["float"]["PublicTest"]["top1"]
    best = max(val) if val else None
    shipped_run, shipped_curve = reference if reference else _shipped_run_curve(card, run)
    by_same_epoch = max(shipped_curve[:len(val)]) if shipped_curve and val else None
    return {
        "run": str(run.relative_to(REPO)) if run.is_relative_to(REPO) else str(run), "model": config.get("model"), "recipe": config.get("recipe"),
        "recipe_sha256": (config.get("recipe_sha256") or "")[:12] or None,
        "epochs_done": len(val), "epochs_planned": config.get("epochs"),
        "sittings": 1 + len(config.get("resumed", [])), "precision": config.get("precision", "float32"),
        "best_PublicTest": best, "best_epoch": val.index(best) + 1 if val else None,
        "last_PublicTest": val[-1] if val else None,
        "shipped": card_name, "shipped_PublicTest_float": shipped,
        "beats_shipped_so_far": bool(best is not None and best > shipped),
        "PublicTest_per_epoch": val, "learning_rate_per_epoch": lr,
        "finished": (run / "metrics.json").is_file(),
        "shipped_run": shipped_run, "shipped_run_PublicTest_per_epoch": shipped_curve,
        "shipped_run_best_by_same_epoch": by_same_epoch,
        "lead_per_10_epochs": lead_per_block(val, shipped_curve) if shipped_curve else None,
        "compared_with": "the run named in RUNS" if reference else "the shipped model's run",
    }


def plot(rows: list[dict], path: Path) -> None:
    rows = [r for r in rows if r["epochs_done"]]
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows), figsize=(6.5 * len(rows), 4.2), squeeze=False)
    for ax, r in zip(axes[0], rows):
        epochs = range(1, r["epochs_done"] + 1)
        if r.get("shipped_run_PublicTest_per_epoch"):
            ref = r["shipped_run_PublicTest_per_epoch"]
            ax.plot(range(1, len(ref) + 1), ref, color="tab:red", alpha=0.35, lw=1,
                    label=(f"shipped run ({Path(r['shipped_run']).name})"
                           if r.get("compared_with", "the shipped model's run") == "the shipped model's run"
                           else f"compared run ({Path(r['shipped_run']).name})"))
        ax.plot(epochs, r["PublicTest_per_epoch"], color="tab:blue", label="PublicTest accuracy (%)")
        ax.axhline(r["shipped_PublicTest_float"], color="tab:red", ls="--",
                   label=f"shipped {r['shipped']}: {r['shipped_PublicTest_float']:.2f} %")
        ax.set_xlim(1, max(r["epochs_planned"] or 1, r["epochs_done"]))
        ax.set_ylim(max(0, min(r["PublicTest_per_epoch"] + [r["shipped_PublicTest_float"]]) - 5),
                    max(r["PublicTest_per_epoch"] + [r["shipped_PublicTest_float"]]) + 3)
        ax.set_xlabel("epoch")
        ax.set_ylabel("PublicTest accuracy (%)")
        ax.set_title(f"{Path(r['run']).name}: {r['epochs_done']}/{r['epochs_planned']} epochs, "
                     f"best {r['best_PublicTest']:.2f} % (epoch {r['best_epoch']})", fontsize=9)
        ax.grid(alpha=0.3)
        if r["learning_rate_per_epoch"]:
            lr_ax = ax.twinx()
            lr_ax.plot(range(1, len(r["learning_rate_per_epoch"]) + 1), r["learning_rate_per_epoch"],
                       color="gray", alpha=0.5, lw=1, label="learning rate")
            lr_ax.set_ylabel("learning rate", color="gray")
            lr_ax.set_ylim(0, max(r["learning_rate_per_epoch"]) * 1.1)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*", metavar="RUN[:CARD]",
                    help="run folder and the shipped card to compare with (default: the long runs in RUNS)")
    ap.add_argument("--out", default=str(HERE / "results" / "long_runs"), help="path without suffix")
    args = ap.parse_args(argv)
    pairs = [(a.split(":", 1) + ["fer_default"])[:2] for a in args.runs] or list(RUNS.items())
    out = Path(args.out)
    recorded = {}  # the last results file's rows: finished runs no longer on this machine keep their curves
    if out.with_suffix(".json").is_file():
        recorded = {r["run"]: r for r in json.loads(out.with_suffix(".json").read_text()).get("runs", [])}
    rows = []
    for run, card in pairs:
        card, baseline = (card, None) if isinstance(card, str) else card
        reference = None
        if baseline:
            folder = _folder(baseline)
            curve = ([round(100 * float(r["val_accuracy"]), 2) for r in _history(folder)]
                     if (folder / "history.csv").is_file() else recorded.get(baseline, {}).get("PublicTest_per_epoch"))
            reference = (baseline, curve) if curve else None
        row = summarise(_folder(run), card, reference)
        if row is None and recorded.get(run, {}).get("finished"):
            row = recorded[run]
        if row is not None:
            rows.append(row)
    if not rows:
        print("no run folder with a history.csv found", file=sys.stderr)
        return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"runs": rows}, indent=1) + "\n")
    plot(rows, out.with_suffix(".png"))
    for r in rows:
        if not r["epochs_done"]:
            print(f"{r['run']}: started, no epoch completed yet")
            continue
        print(f"{r['run']}: {r['epochs_done']}/{r['epochs_planned']} epochs ({r['sittings']} sittings, {r['precision']}), "
              f"best PublicTest {r['best_PublicTest']} % at epoch {r['best_epoch']}, last {r['last_PublicTest']} %; "
              f"shipped {r['shipped']} {r['shipped_PublicTest_float']} %"
              + (f" ({Path(r['shipped_run']).name} had {r['shipped_run_best_by_same_epoch']} % by epoch {r['epochs_done']})"
                 if r["shipped_run_best_by_same_epoch"] is not None else "")
              + (f"; mean lead over it per 10 epochs (pp): {' '.join(f'{x:+.2f}' for x in r['lead_per_10_epochs'])}"
                 if r.get("lead_per_10_epochs") else "")
              + (" (finished)" if r["finished"] else ""))
    print(f"written {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
