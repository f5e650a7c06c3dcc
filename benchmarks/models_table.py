"""Fill the table in models/README.md from model cards, so every number there comes from a command.

Two steps, both reading what other commands measured (nothing is typed by hand):

  # 1. after `fer-train evaluate RUN --split private --tta` (and --split public), copy macro-F1 and
  #    TTA accuracy from the run's metrics_<split>.json into the model card fer-convert wrote:
  python benchmarks/models_table.py add-eval RUN CARD.json

  # 2. regenerate the table from every card given (default: models/*.json, then the cards of measured
  #    but unshipped runs in benchmarks/results/cards/):
  python benchmarks/models_table.py table [CARD.json ...] [--readme models/README.md]

The table goes between the `<!-- models-table:start -->` / `<!-- models-table:end -->` markers.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: cards of measured runs that are not shipped (kept for the table's history)
REFERENCE_CARDS = REPO / "benchmarks" / "results" / "cards"
START, END = "<!-- models-table:start -->", "<!-- models-table:end -->"
SPLITS = ("PublicTest", "PrivateTest")

#: fer-train fit defaults: the reproduce command lists only what differs from them
FIT_KEYS = ("model", "ferplus_votes", "init_from", "epochs", "batch_size", "lr", "optimizer", "weight_decay",
            "schedule", "warmup_epochs", "label_smoothing", "mixup", "cutmix", "erasing", "class_weights", "patience", "teacher", "kd_alpha",
            "kd_temperature", "runtime_views", "runtime_view_p", "swa_epochs", "swa_lr", "width", "dropout", "seed", "name")

#: what a recipe sets beyond FIT_KEYS (the augmentation): a recipe run's command lists them where it differs
RECIPE_KEYS = ("augment", "flip", "shift", "rotation", "zoom", "blur", "brightness", "contrast", "jpeg", "noise",
               "kd_flip")


def add_eval(run: Path, card_path: Path) -> None:
    card = json.loads(card_path.read_text())
    metrics = card.setdefault("metrics", {})
    for split in SPLITS:
        path = run / f"metrics_{split}.json"
        if not path.is_file():
            print(f"note: {path} missing (run `fer-train evaluate {run} --split "
                  f"{'private' if split == 'PrivateTest' else 'public'} --tta`)", file=sys.stderr)
            continue
        m = json.loads(path.read_text())
        f = metrics.setdefault("float", {}).setdefault(split, {})
        f["macro_f1"] = round(100 * m["macro_f1"], 3)
        f.setdefault("top1", round(100 * m["accuracy"], 3))
        tta = m.get("tta_metrics")
        if tta:
            metrics.setdefault("float_tta", {})[split] = {
                "top1": round(100 * tta["accuracy"], 3), "macro_f1": round(100 * tta["macro_f1"], 3),
                "views": tta.get("description", "")}
    tmp = card_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card, indent=2) + "\n")
    tmp.replace(card_path)
    print(f"updated {card_path}")


def _get(d: dict, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def _fmt(x, spec: str = ".2f", suffix: str = "") -> str:
    return "–" if x is None else f"{x:{spec}}{suffix}"


def _recipe_with_sha(sha256: str | None) -> str | None:
    """The name of the shipped recipe file whose bytes have this sha256, if one has."""
    import hashlib

    from fer_train.recipes import available

    for name, path in available().items():
        if sha256 and hashlib.sha256(path.read_bytes()).hexdigest() == sha256:
            return name
    return None


def fit_command(training: dict) -> str:
    """The `fer-train fit` line that reproduces a run: every setting that differs from fit's defaults
    (or the `fer-train soup` line of an averaged run)."""
    from fer_train.fit import FitConfig

    soup = training.get("soup")
    if soup:
        weights = soup.get("weights") or []
        parts = ["fer-train soup", *soup["sources"]]
        if len(set(weights)) > 1:
            parts.extend(f"--weight {w:g}" for w in weights)
        return " ".join(parts + [f"--name {training['name']}"] if training.get("name") else parts)

    recipe = training.get("recipe")
    defaults = FitConfig()
    parts = ["fer-train fit"]
    keys = FIT_KEYS
    if recipe:  # a recipe run: the recipe, then only what the command line changed from it
        from fer_train.recipes import apply_recipe

        defaults, _ = apply_recipe(FitConfig(), recipe, set())
        if defaults.recipe_sha256 != training.get("recipe_sha256"):
            # the recipe has changed since: a shipped file with the run's bytes (e.g. default-v1), else the sha
            kept = _recipe_with_sha(training.get("recipe_sha256"))
            if kept:
                recipe = kept
                defaults, _ = apply_recipe(FitConfig(), kept, set())
            else:
                recipe = f"{recipe} (the version with sha256 {str(training.get('recipe_sha256'))[:12]})"
        parts.append(f"--recipe {recipe}")
        keys = tuple(k for k in FIT_KEYS if k != "name") + RECIPE_KEYS + ("name",)
    for key in keys:
        if key not in training or key.startswith("kd_") and not training.get("teacher"):
            continue
        if key == "runtime_view_p" and not training.get("runtime_views"):
            continue
        value = training[key]
        if key == "runtime_views" and value and re.fullmatch(r"runtime_views_\w+_v\d+_s\d+\.npz", Path(value).name):
            value = "auto"  # the file `--runtime-views auto` made and the run recorded
        default = getattr(defaults, key, object())
        if isinstance(value, list) and not isinstance(default, list):
            default = [default]
        if (key != "model" or recipe) and value == default:
            if key == "model":
                parts.extend(_model_opt_flags(training))
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, list):  # a repeatable option (an ensemble of teachers)
            parts.extend(f"{flag} {v}" for v in value)
        elif isinstance(value, bool):
            parts.append(flag if value else "--no-" + key.replace("_", "-"))
        else:
            parts.append(f"{flag} {value}")
        if key == "model":
            parts.extend(_model_opt_flags(training))
    return " ".join(parts)


def _model_opt_flags(training: dict) -> list[str]:
    """`--model-opt KEY=VALUE` for each extra builder option the run had (e.g. the deeper edgenet_s's
    depths=2,1,1): without them the command would build a different network."""
    flags = []
    for key, value in (training.get("model_opts") or {}).items():
        shown = ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else value
        flags.append(f"--model-opt {key}={shown}")
    return flags


def row(card_path: Path) -> str:
    c = json.loads(card_path.read_text())
    m = c.get("metrics", {})
    sizes = c.get("sizes", {})
    files = c.get("files", {})
    size_mb = lambda v: _fmt(sizes.get(files.get(v, ""), None) and sizes[files[v]] / 1e6, ".2f", " MB")
    labels = c.get("labels", [])
    int8_gate = _get(m, "gate", "int8", "PublicTest", default={})
    int8_file = size_mb("int8")
    if int8_gate and not int8_gate.get("passed", True):  # the gate kept it out: say so, with why
        int8_file = "rejected by the gate: " + "; ".join(int8_gate.get("reasons", []))
    cells = [
        f"`{c['name']}`", c.get("architecture", ""), label_set(labels), _fmt(c.get("params"), ",d"),
        _fmt(c.get("macs") and c["macs"] / 1e6, ".1f", " M"),
        size_mb("float32"), int8_file,
        _fmt(_get(m, "float", "PublicTest", "top1")), _fmt(_get(m, "int8", "PublicTest", "top1")),
        _fmt(_get(m, "float", "PrivateTest", "top1")), _fmt(_get(m, "int8", "PrivateTest", "top1")),
        ferplus_majority_cell(m),
        _fmt(_get(m, "float_tta", "PrivateTest", "top1")),
        _fmt(_get(m, "float", "PrivateTest", "macro_f1")),
        _fmt(_get(m, "latency_ms", "int8", "median_ms")),
        f"`{fit_command(c.get('training', {}))}`",
    ]
    return "| " + " | ".join(str(x) for x in cells) + " |"


def ferplus_majority_cell(m: dict) -> str:
    """FER+ int8 top-1 on Microsoft's majority protocol, "PublicTest / PrivateTest" (the card's
    metrics.int8.<split>.top1_ferplus_majority, from `fer-convert`); "–" for FER2013 models and unmeasured cards."""
    values = [_get(m, "int8", split, "top1_ferplus_majority") for split in SPLITS]
    return "–" if all(v is None for v in values) else " / ".join(_fmt(v) for v in values)


HEADER = (
    "| model | architecture | labels | params | MACs | float32 file | int8 file | PublicTest float % | PublicTest int8 % "
    "| PrivateTest float % | PrivateTest int8 % | FER+ majority protocol int8 % (PublicTest / PrivateTest) "
    "| PrivateTest float TTA % | PrivateTest macro-F1 % "
    "| int8 ms/face (1 thread) | reproduce (then `fer-convert RUN --int8 --float32`) |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def label_set(labels: list[str]) -> str:
    """Which task a row's accuracies are on: FER2013 labels, or FER+ vote pluralities (with contempt; every face
    whose top vote is an emotion; the majority-protocol column has Microsoft's stricter set)."""
    from fer_edge.contract import EMOTIONS, FERPLUS_EMOTIONS

    if tuple(labels) == FERPLUS_EMOTIONS:
        return "FER+ (8, vote plurality)"
    return "FER2013 (7)" if tuple(labels) == EMOTIONS else f"{len(labels)} custom"


#: the seeds' iterative path, in the order the table tells it (shipped models come first)
PATH_ORDER = ("baseline", "v2", "mobilenetv2", "edgenet", "edgenet_s")


def order_cards(shipped: list[Path], reference: list[Path]) -> list[Path]:
    """Shipped cards first (the default leading), then measured references along the seeds' path."""
    def arch(p: Path) -> int:
        a = json.loads(p.read_text()).get("architecture", "")
        return PATH_ORDER.index(a) if a in PATH_ORDER else len(PATH_ORDER)
    shipped = sorted(shipped, key=lambda p: (p.stem != "fer_default", p.stem))
    return shipped + sorted(reference, key=lambda p: (arch(p), p.stem))


def is_card(path: Path) -> bool:
    """Model cards have labels and an input size; gate and convert reports beside them do not."""
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(d, dict) and {"name", "labels", "input_size", "metrics"} <= set(d)


def table(cards: list[Path], readme: Path) -> None:
    body = "\n".join([HEADER] + [row(p) for p in cards if is_card(p)])
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme}: markers {START} / {END} not found")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{body}\n{END}{tail}")
    print(body)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("add-eval", help="copy macro-F1/TTA from a run's evaluate output into a card")
    a.add_argument("run", type=Path)
    a.add_argument("card", type=Path)
    t = sub.add_parser("table", help="regenerate the models/README.md table from cards")
    t.add_argument("cards", type=Path, nargs="*")
    t.add_argument("--readme", type=Path, default=REPO / "models" / "README.md")
    args = ap.parse_args(argv)
    if args.cmd == "add-eval":
        add_eval(args.run, args.card)
    else:
        cards = args.cards or order_cards(list((REPO / "models").glob("*.json")), list(REFERENCE_CARDS.glob("*.json")))
        table(cards, args.readme)


if __name__ == "__main__":
    main()
