"""The accuracy gate: the float Keras model against the converted model on a labelled split.

The converted model runs through `fer_edge.classifier.EmotionClassifier.predict_pixels`, batch-1
invokes, the exact code path the device runs; the float model runs as a Keras batch predict.
A variant passes when its top-1 drop is at most `max_drop_pp` percentage points AND its
predictions agree with the float model's on at least `min_agreement_pct` % of the faces AND it is not
a useless model: the float and the converted top-1 must both be above the majority-class baseline of
the gate split (always answering the most frequent label), and neither may give one label to more
than `MAX_ONE_CLASS_PCT` % of the faces. A 1-epoch model that answers "neutral" for every face loses
nothing in conversion (drop 0, agreement 100 %) and would pass the first two tests; the sanity tests
catch it. `allow_weak=True` (`fer-convert --allow-weak`) reports them without failing (a smoke run).

Reports: `<base>_<variant>_gate.json` (all figures) and `<base>_<variant>_gate.md` (a table);
for another split than PublicTest `<base>_<variant>_gate_<Split>.json` / `.md`.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fer_edge import contract
from fer_edge.errors import DataError

from . import calibrate

DEFAULT_MAX_DROP_PP = 1.0
DEFAULT_MIN_AGREEMENT_PCT = 97.0
#: a model that gives one label to more than this share of the gate faces is a useless model
MAX_ONE_CLASS_PCT = 90.0


@dataclasses.dataclass
class GateSet:
    split: str  # canonical name: "PublicTest", ...
    x: np.ndarray  # (N, H, W) uint8 at the model's input size
    y: np.ndarray  # (N,) label indices
    rows: np.ndarray  # row numbers in the source (for reports)
    total: int  # rows in the whole split (x may be a subset, --gate-rows)
    #: FER+ data: which faces are in Microsoft's majority protocol (fer_train.data.ferplus_majority_protocol)
    ferplus_majority: np.ndarray | None = None


def gate_split(dataset, split: str = "public", rows: int | None = None, seed: int = 0,
               input_size: Sequence[int] | None = None) -> GateSet:
    """The labelled faces the gate evaluates: a whole split, or a seeded subset of `rows` of it."""
    from fer_train.data import SPLITS, split_index

    index = split_index(split)
    idx = np.flatnonzero(dataset.usage == index)
    if len(idx) == 0:
        raise DataError(f"no {SPLITS[index]} rows in {getattr(dataset, 'source', '') or 'the data'}: nothing to gate on")
    total = len(idx)
    if rows is not None:
        if rows < 1:
            raise DataError(f"--gate-rows must be >= 1, got {rows}")
        if rows < total:
            idx = np.sort(np.random.default_rng(seed).choice(idx, size=rows, replace=False))
    x = dataset.x[idx]
    if input_size is not None:
        x = calibrate.resize_faces(x, input_size)
    src_rows = dataset.rows[idx] if getattr(dataset, "rows", None) is not None else idx
    majority = getattr(dataset, "ferplus_majority", None)
    return GateSet(SPLITS[index], x, np.asarray(dataset.y[idx], np.int64), np.asarray(src_rows), total,
                   None if majority is None else np.asarray(majority[idx], bool))


def converted_predict(path: Path, labels: Sequence[str], x: np.ndarray, progress: bool = True) -> np.ndarray:
    """Converted-model probabilities through the edge classifier (batch-1 invokes, like the device)."""
    from fer_edge.classifier import EmotionClassifier

    return EmotionClassifier(path, threads=1, labels=labels).predict_pixels(x, progress=progress)


def top1(y: np.ndarray, probs: np.ndarray) -> float:
    return float(np.mean(np.argmax(probs, axis=1) == y) * 100.0) if len(y) else 0.0


def ferplus_majority_figures(y: np.ndarray, majority: np.ndarray | None, **probs: np.ndarray | None) -> dict[str, Any] | None:
    """Top-1 (%) of each of `probs` (name -> (N, C) probabilities, or None) on the faces of Microsoft's FER+
    majority protocol (`majority`, a mask over the N faces); None when the data is not FER+."""
    if majority is None:
        return None
    from fer_train.data import FERPLUS_MAJORITY_PROTOCOL

    majority = np.asarray(majority, bool)
    out: dict[str, Any] = {"protocol": FERPLUS_MAJORITY_PROTOCOL, "n": int(majority.sum())}
    for name, p in probs.items():
        if p is not None:
            out[name] = _r(top1(np.asarray(y)[majority], np.asarray(p)[majority]))
    return out


def compare(y: np.ndarray, float_probs: np.ndarray, conv_probs: np.ndarray, labels: Sequence[str],
            ferplus_majority: np.ndarray | None = None) -> dict[str, Any]:
    """All the gate's figures (percentages in %, drops in percentage points). With `ferplus_majority` (FER+
    data) also top-1 float/converted on Microsoft's majority protocol: reported, not part of the verdict."""
    pf, pc = np.argmax(float_probs, axis=1), np.argmax(conv_probs, axis=1)
    per_class = {}
    for i, name in enumerate(labels):
        mask = y == i
        n = int(mask.sum())
        rf = float(np.mean(pf[mask] == i) * 100) if n else None
        rc = float(np.mean(pc[mask] == i) * 100) if n else None
        per_class[name] = {"n": n, "recall_float": _r(rf), "recall_converted": _r(rc),
                           "recall_drop_pp": _r(rf - rc) if n else None}
    dp = np.abs(float_probs.astype(np.float64) - conv_probs.astype(np.float64))
    t_f, t_c = top1(y, float_probs), top1(y, conv_probs)
    n_labels = len(labels)
    true_counts = np.bincount(y, minlength=n_labels) if len(y) else np.zeros(n_labels, np.int64)
    majority = int(np.argmax(true_counts))
    dominant = {}
    for side, pred in (("float", pf), ("converted", pc)):
        counts = np.bincount(pred, minlength=n_labels) if len(pred) else np.zeros(n_labels, np.int64)
        k = int(np.argmax(counts))
        dominant[side] = {"label": labels[k], "pct": _r(counts[k] / max(1, len(pred)) * 100.0)}
    out = {
        "n": int(len(y)),
        "top1_float": _r(t_f),
        "top1_converted": _r(t_c),
        "drop_pp": _r(t_f - t_c),
        "agreement_pct": _r(float(np.mean(pf == pc) * 100.0)),
        "mean_abs_dprob": _r(float(dp.mean()), 6),
        "max_abs_dprob": _r(float(dp.max()), 6),
        "per_class": per_class,
        "max_recall_drop_pp": _r(max((c["recall_drop_pp"] for c in per_class.values() if c["recall_drop_pp"] is not None),
                                     default=0.0)),
        # sanity against a useless model: the accuracy of always answering the split's most frequent label,
        # and the largest share of faces given one label
        "majority_label": labels[majority],
        "majority_baseline_pct": _r(true_counts[majority] / max(1, len(y)) * 100.0),
        "dominant_prediction": dominant,
    }
    majority = ferplus_majority_figures(y, ferplus_majority, top1_float=float_probs, top1_converted=conv_probs)
    if majority is not None:
        majority["drop_pp"] = _r(majority["top1_float"] - majority["top1_converted"])
        out["ferplus_majority"] = majority
    return out


def _r(v, nd: int = 3):
    return None if v is None else round(float(v), nd)


def verdict(metrics: dict[str, Any], max_drop_pp: float, min_agreement_pct: float,
            allow_weak: bool = False) -> list[str]:
    """Reasons the gate fails; empty = passed. With allow_weak the useless-model checks are reported
    (`weak_reasons`) but do not fail the gate."""
    reasons = []
    if metrics["drop_pp"] > max_drop_pp:
        reasons.append(f"top-1 drop {metrics['drop_pp']:.2f} pp > {max_drop_pp:g} pp")
    if metrics["agreement_pct"] < min_agreement_pct:
        reasons.append(f"agreement {metrics['agreement_pct']:.2f}% < {min_agreement_pct:g}%")
    if not allow_weak:
        reasons.extend(weak_reasons(metrics))
    return reasons


def weak_reasons(metrics: dict[str, Any], max_one_class_pct: float = MAX_ONE_CLASS_PCT) -> list[str]:
    """Why the model is useless, whatever the conversion did: not above the majority-class baseline, or
    one label for almost every face (float or converted)."""
    reasons = []
    base, label = metrics.get("majority_baseline_pct"), metrics.get("majority_label")
    if base is None:  # a report written before the sanity checks existed
        return reasons
    for side, key in (("float", "top1_float"), ("converted", "top1_converted")):
        if metrics[key] <= base:
            reasons.append(f"useless model: {side} top-1 {metrics[key]:.2f}% is not above the majority-class "
                           f"baseline {base:.2f}% (always '{label}')")
    for side, dom in metrics.get("dominant_prediction", {}).items():
        if dom["pct"] > max_one_class_pct:
            reasons.append(f"useless model: {side} predicts '{dom['label']}' for {dom['pct']:.1f}% of the faces "
                           f"(> {max_one_class_pct:g}%)")
    return reasons


def build_report(*, variant: str, model_file: str, gate_set: GateSet, labels: Sequence[str],
                 float_probs: np.ndarray, conv_probs: np.ndarray, max_drop_pp: float,
                 min_agreement_pct: float, data: dict[str, Any], allow_weak: bool = False) -> dict[str, Any]:
    metrics = compare(gate_set.y, float_probs, conv_probs, labels, gate_set.ferplus_majority)
    reasons = verdict(metrics, max_drop_pp, min_agreement_pct, allow_weak)
    weak = weak_reasons(metrics)
    return {
        "variant": variant,
        "file": model_file,
        "passed": not reasons,
        "reasons": reasons,
        "split": gate_set.split,
        "rows": int(len(gate_set.y)),
        "split_rows": int(gate_set.total),
        "thresholds": {"max_drop_pp": max_drop_pp, "min_agreement_pct": min_agreement_pct,
                       "above_majority_baseline": not allow_weak, "max_one_class_pct": MAX_ONE_CLASS_PCT,
                       "allow_weak": allow_weak},
        "weak": weak,  # the useless-model findings, failing or (with allow_weak) only reported
        "metrics": metrics,
        "labels": list(labels),
        "data": data,
        "float_path": "Keras model.predict (batch)",
        "converted_path": "fer_edge.classifier.EmotionClassifier.predict_pixels (batch-1 invokes, 1 thread)",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def one_line(report: dict[str, Any]) -> str:
    m = report["metrics"]
    verdict_word = "PASSED" if report["passed"] else "FAILED (" + "; ".join(report["reasons"]) + ")"
    if report["passed"] and report.get("weak"):
        verdict_word += " with --allow-weak (" + "; ".join(report["weak"]) + ")"
    fm = m.get("ferplus_majority")
    majority = (f"; FER+ majority protocol ({fm['n']} faces): float {fm['top1_float']:.2f}% vs "
                f"{report['variant']} {fm['top1_converted']:.2f}%" if fm else "")
    return (f"gate {report['variant']} on {report['split']} ({report['rows']} faces): float {m['top1_float']:.2f}% "
            f"vs {report['variant']} {m['top1_converted']:.2f}% (drop {m['drop_pp']:+.2f} pp), agreement "
            f"{m['agreement_pct']:.2f}%, mean |dp| {m['mean_abs_dprob']:.4f}{majority} -> {verdict_word}")


def failure_message(report: dict[str, Any], out_dir: Path) -> str:
    m = report["metrics"]
    weak = [r for r in report["reasons"] if r.startswith("useless model")]
    return (f"{report['variant']} gate failed on {report['split']} ({report['rows']} faces): "
            + ("; ".join(weak) + "; " if weak else "")
            + f"top-1 {m['top1_converted']:.2f}% vs float {m['top1_float']:.2f}% (drop {m['drop_pp']:.2f} pp, max "
            f"{report['thresholds']['max_drop_pp']:g}), agreement {m['agreement_pct']:.2f}% (min "
            f"{report['thresholds']['min_agreement_pct']:g}%); kept only as {out_dir / report['file']}, "
            f"report {report.get('report_json', '')}"
            + (" (--allow-weak lets a useless model pass, e.g. for a smoke run)" if weak else ""))


def markdown(report: dict[str, Any]) -> str:
    m, t = report["metrics"], report["thresholds"]
    lines = [
        f"# Gate: {report['file']}",
        "",
        f"**{'PASSED' if report['passed'] else 'FAILED'}**" + ("" if report["passed"] else ": " + "; ".join(report["reasons"])),
        "",
        f"Split {report['split']}, {report['rows']} of {report['split_rows']} faces; data "
        f"`{report['data'].get('path', '')}` (sha256 {str(report['data'].get('sha256', ''))[:12]}).",
        f"Float: {report['float_path']}. Converted: {report['converted_path']}.",
        "",
        "| figure | value | threshold |",
        "|---|---|---|",
        f"| top-1 float | {m['top1_float']:.2f} % | |",
        f"| top-1 {report['variant']} | {m['top1_converted']:.2f} % | |",
        f"| drop | {m['drop_pp']:.2f} pp | <= {t['max_drop_pp']:g} pp |",
        f"| prediction agreement | {m['agreement_pct']:.2f} % | >= {t['min_agreement_pct']:g} % |",
        f"| mean abs. prob. difference | {m['mean_abs_dprob']:.5f} | |",
        f"| max abs. prob. difference | {m['max_abs_dprob']:.5f} | |",
    ]
    fm = m.get("ferplus_majority")
    if fm:  # reported next to the verdict's figures, not part of it
        lines += [f"| top-1 float, FER+ majority protocol ({fm['n']} faces) | {fm['top1_float']:.2f} % | |",
                  f"| top-1 {report['variant']}, FER+ majority protocol ({fm['n']} faces) | {fm['top1_converted']:.2f} % | |"]
    if "majority_baseline_pct" in m:
        check = " (not enforced: --allow-weak)" if t.get("allow_weak") else ""
        lines += [
            f"| majority-class baseline ('{m['majority_label']}') | {m['majority_baseline_pct']:.2f} % | "
            f"both top-1 above it{check} |",
        ] + [f"| most frequent {side} prediction ('{d['label']}') | {d['pct']:.1f} % of faces | "
             f"<= {t.get('max_one_class_pct', MAX_ONE_CLASS_PCT):g} %{check} |"
             for side, d in m["dominant_prediction"].items()]
    lines += [
        "",
        "| class | n | recall float | recall converted | drop (pp) |",
        "|---|---|---|---|---|",
    ]
    for name, c in m["per_class"].items():
        if c["n"]:
            lines.append(f"| {name} | {c['n']} | {c['recall_float']:.2f} | {c['recall_converted']:.2f} | {c['recall_drop_pp']:.2f} |")
        else:
            lines.append(f"| {name} | 0 | - | - | - |")
    return "\n".join(lines) + "\n"


def report_stem(base: str, variant: str, split: str) -> str:
    """`<base>_<variant>_gate` for PublicTest (the default split), `..._gate_<Split>` for others,
    so gating on PrivateTest does not overwrite the PublicTest report the card points to."""
    return f"{base}_{variant}_gate" + ("" if split == "PublicTest" else f"_{split}")


def write_reports(report: dict[str, Any], out_dir: Path, base: str, variant: str) -> tuple[Path, Path]:
    stem = report_stem(base, variant, report["split"])
    report["report_json"], report["report_md"] = f"{stem}.json", f"{stem}.md"
    json_path = contract.write_json_atomic(out_dir / f"{stem}.json", report)
    md_path = contract.write_bytes_atomic(out_dir / f"{stem}.md", markdown(report).encode())
    return json_path, md_path
