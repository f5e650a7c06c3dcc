"""`fer-train report DATA --out DIR`: what is in a FER data set, before any training.

Writes summary.md (tables), report.json (the same numbers), class_distribution.png (rows per split
and class) and samples.png (a seeded grid of faces, one row per class). Counts exact duplicates
(identical pixel bytes) within each split and across splits, with label conflicts among them:
FER2013 has Training images that reappear in PublicTest/PrivateTest.

matplotlib is imported inside the plotting functions and TensorFlow never, so `fer-train --help`
stays fast and a report needs no training stack.
"""
from __future__ import annotations

import hashlib
import time
from itertools import combinations
from pathlib import Path

import click
import numpy as np

from fer_edge.contract import write_bytes_atomic, write_json_atomic

from .data import SPLITS, Dataset, load_dataset

#: an image whose pixel standard deviation is below this is "near-constant" (blank, placeholder)
BLANK_STD = 3.0


# --------------------------------------------------------------------------- numbers
def image_hashes(x: np.ndarray) -> np.ndarray:
    """One id per image: equal ids <=> identical pixel bytes (blake2b-128 of each image)."""
    x = np.ascontiguousarray(x)
    digests = b"".join(hashlib.blake2b(img.tobytes(), digest_size=16).digest() for img in x)
    raw = np.frombuffer(digests, dtype=np.dtype((np.void, 16)))
    _, ids = np.unique(raw, return_inverse=True)
    return ids.reshape(-1).astype(np.int64)


def pixel_stats(x: np.ndarray, blank_std: float = BLANK_STD, chunk: int = 4096) -> dict:
    """Mean and std over all pixels, and how many images are near-constant (per-image std < blank_std)."""
    n = len(x)
    if n == 0:
        return {"rows": 0, "mean": None, "std": None, "near_constant": 0, "near_constant_share": 0.0}
    flat = x.reshape(n, -1)
    means = np.empty(n, np.float64)
    sq = np.empty(n, np.float64)
    for s in range(0, n, chunk):
        block = flat[s:s + chunk].astype(np.float32)
        means[s:s + chunk] = block.mean(axis=1, dtype=np.float64)
        sq[s:s + chunk] = np.square(block).mean(axis=1, dtype=np.float64)
    per_std = np.sqrt(np.maximum(sq - means ** 2, 0.0))
    mean = float(means.mean())
    std = float(np.sqrt(max(float(sq.mean()) - mean ** 2, 0.0)))
    blank = int((per_std < blank_std).sum())
    return {"rows": n, "mean": round(mean, 3), "std": round(std, 3), "near_constant": blank,
            "near_constant_share": round(blank / n, 5)}


def duplicate_stats(ids: np.ndarray, usage: np.ndarray, y: np.ndarray) -> dict:
    """Exact duplicates from per-row image ids (see `image_hashes`).

    within[split]: groups = images that occur 2+ times in the split, rows = rows in those groups,
      redundant_rows = rows - groups (rows that could go without losing an image),
      label_conflicts = groups whose rows do not all carry the same label.
    across["A/B"]: images = distinct images in both splits, rows_A / rows_B = rows of each split
      showing one of them, label_conflicts = shared images with more than one label over the rows
      of both splits.
    overall: distinct images, and the same group numbers over the whole data set.
    """
    ids = np.asarray(ids)
    usage = np.asarray(usage)
    y = np.asarray(y)

    def groups(mask: np.ndarray) -> dict:
        i, yy = ids[mask], y[mask]
        uniq, inv, counts = np.unique(i, return_inverse=True, return_counts=True)
        dup = counts >= 2
        rows = int(counts[dup].sum())
        # label conflict: a group with more than one distinct label
        pairs = np.unique(np.stack([inv.reshape(-1), yy]), axis=1) if len(i) else np.zeros((2, 0), int)
        labels_per = np.bincount(pairs[0], minlength=len(uniq)) if len(i) else np.zeros(0, int)
        return {"rows": int(mask.sum()), "distinct_images": int(len(uniq)), "groups": int(dup.sum()),
                "rows_in_groups": rows, "redundant_rows": rows - int(dup.sum()),
                "label_conflicts": int((labels_per > 1).sum())}

    out: dict = {"overall": groups(np.ones(len(ids), bool)), "within": {}, "across": {}}
    for s, name in enumerate(SPLITS):
        out["within"][name] = groups(usage == s)
    for a, b in combinations(range(len(SPLITS)), 2):
        ma, mb = usage == a, usage == b
        shared = np.intersect1d(ids[ma], ids[mb])
        in_a = ma & np.isin(ids, shared)
        in_b = mb & np.isin(ids, shared)
        both = in_a | in_b
        pairs = np.unique(np.stack([ids[both], y[both]]), axis=1) if both.any() else np.zeros((2, 0), int)
        _, n_labels = np.unique(pairs[0], return_counts=True)
        out["across"][f"{SPLITS[a]}/{SPLITS[b]}"] = {
            "images": int(len(shared)), f"rows_{SPLITS[a]}": int(in_a.sum()),
            f"rows_{SPLITS[b]}": int(in_b.sum()), "label_conflicts": int((n_labels > 1).sum()),
        }
    # test rows (PublicTest/PrivateTest) whose image is also in Training: the leakage number
    train_ids = np.unique(ids[usage == 0])
    out["test_rows_seen_in_training"] = {
        name: int(((usage == s) & np.isin(ids, train_ids)).sum()) for s, name in enumerate(SPLITS) if s
    }
    return out


def summarize(ds: Dataset, blank_std: float = BLANK_STD) -> dict:
    """Every number of the report, JSON-ready."""
    counts = {}
    for s, name in enumerate(SPLITS):
        m = ds.usage == s
        c = np.bincount(ds.y[m], minlength=len(ds.labels))
        counts[name] = {label: int(c[i]) for i, label in enumerate(ds.labels)} | {"total": int(m.sum())}
    c_all = np.bincount(ds.y, minlength=len(ds.labels))
    counts["all"] = {label: int(c_all[i]) for i, label in enumerate(ds.labels)} | {"total": len(ds)}
    pix = {name: pixel_stats(ds.x[ds.usage == s], blank_std) for s, name in enumerate(SPLITS)}
    pix["all"] = pixel_stats(ds.x, blank_std)
    dups = duplicate_stats(image_hashes(ds.x), ds.usage, ds.y)
    return {
        "data": ds.data_info(),
        "labels": list(ds.labels),
        "input_size": list(ds.input_size),
        "rows": len(ds),
        "counts": counts,
        "pixels": pix,
        "near_constant_std_below": blank_std,
        "duplicates": dups,
        "skipped": {"count": len(ds.skipped), "first": ds.skipped[:20]},
        "dropped": dict(ds.dropped),
    }


# --------------------------------------------------------------------------- markdown
def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def render_markdown(summary: dict, images: dict[str, str] | None = None) -> str:
    labels = summary["labels"]
    d = summary["data"]
    dups = summary["duplicates"]
    out = ["# FER data report", ""]
    out += [f"- source: `{d['path']}`", f"- format: {d['format']}", f"- sha256: `{d['sha256']}`"]
    for p, sha in d.get("components", {}).items():
        out.append(f"  - `{p}`: `{sha}`")
    out += [f"- rows: {summary['rows']:,} ({dups['overall']['distinct_images']:,} distinct images)",
            f"- image size: {summary['input_size'][0]}x{summary['input_size'][1]}",
            f"- labels ({len(labels)}): {', '.join(labels)}",
            f"- skipped bad rows: {summary['skipped']['count']}"]
    if summary["dropped"]:
        out.append("- dropped on purpose: " + ", ".join(f"{k} {v}" for k, v in summary["dropped"].items()))
    out += ["", "## Rows per split and class", ""]
    out.append(_table(["split"] + labels + ["total"],
                      [[name] + [f"{c[label]:,}" for label in labels] + [f"{c['total']:,}"]
                       for name, c in summary["counts"].items()]))
    out += ["", "## Pixel statistics", "",
            f"Over all pixels of a split (raw 0-255). Near-constant: per-image std < "
            f"{summary['near_constant_std_below']:g} (blank or placeholder images).", ""]
    rows = []
    for name, p in summary["pixels"].items():
        fmt = (lambda v: "-" if v is None else f"{v:.2f}")
        rows.append([name, f"{p['rows']:,}", fmt(p["mean"]), fmt(p["std"]), p["near_constant"],
                     f"{100 * p['near_constant_share']:.2f}%"])
    out.append(_table(["split", "rows", "mean", "std", "near-constant", "share"], rows))
    out += ["", "## Exact duplicates (identical pixel bytes)", "",
            "Within each split: groups = images occurring 2+ times; redundant rows = rows in groups - "
            "groups; label conflicts = groups whose rows carry different labels.", ""]
    rows = [[name, f"{g['rows']:,}", f"{g['distinct_images']:,}", g["groups"], g["rows_in_groups"],
             g["redundant_rows"], g["label_conflicts"]]
            for name, g in list(dups["within"].items()) + [("all", dups["overall"])]]
    out.append(_table(["split", "rows", "distinct images", "duplicate groups", "rows in groups",
                       "redundant rows", "label conflicts"], rows))
    out += ["", "Across splits: images = distinct images found in both splits; rows = rows of each "
            "split showing one of them; label conflicts = shared images with more than one label.", ""]
    rows = []
    for pair, a in dups["across"].items():
        sa, sb = pair.split("/")
        rows.append([f"{sa} / {sb}", a["images"], a[f"rows_{sa}"], a[f"rows_{sb}"], a["label_conflicts"]])
    out.append(_table(["splits", "shared images", "rows in first", "rows in second", "label conflicts"], rows))
    seen = dups["test_rows_seen_in_training"]
    out += ["", "Test rows whose exact image is also in Training: "
            + ", ".join(f"{k} {v:,}" for k, v in seen.items()) + "."]
    if summary["skipped"]["count"]:
        out += ["", f"## Skipped bad rows ({summary['skipped']['count']}, first 20)", ""]
        out += [f"- `{s}`" for s in summary["skipped"]["first"]]
    if images:
        out += ["", "## Plots", ""]
        out += [f"![{name}]({Path(p).name})" for name, p in images.items()]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- plots
def plot_class_distribution(summary: dict, path: str | Path) -> Path:
    """Grouped bars: one group per class, one bar per split, the count on each bar."""
    from matplotlib.figure import Figure

    labels = summary["labels"]
    fig = Figure(figsize=(max(8.0, 1.5 * len(labels) + 2), 5.5), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(SPLITS)
    xs = np.arange(len(labels))
    colors = ("#4C72B0", "#DD8452", "#55A868")
    top = max(summary["counts"][s][label] for s in SPLITS for label in labels) or 1
    for k, name in enumerate(SPLITS):
        vals = [summary["counts"][name][label] for label in labels]
        bars = ax.bar(xs + (k - (len(SPLITS) - 1) / 2) * width, vals, width,
                      label=f"{name} ({summary['counts'][name]['total']:,})", color=colors[k % 3])
        ax.bar_label(bars, labels=[f"{v:,}" for v in vals], fontsize=7, padding=2, rotation=90)
    ax.set_xticks(xs, labels, fontsize=10)
    ax.set_ylabel("rows")
    ax.set_ylim(0, top * 1.18)
    ax.set_title(f"Rows per class and split ({summary['rows']:,} rows)")
    ax.legend(frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    path = Path(path)
    fig.savefig(path)
    return path


def plot_samples(ds: Dataset, path: str | Path, per_class: int = 8, seed: int = 0) -> Path:
    """A grid of faces: one row per class (name on the left), `per_class` seeded random samples."""
    from matplotlib.figure import Figure

    rng = np.random.default_rng(seed)
    n_cls = len(ds.labels)
    fig = Figure(figsize=(1.0 * per_class + 1.4, 1.0 * n_cls + 0.5), dpi=100)
    axes = fig.subplots(n_cls, per_class, squeeze=False)
    fig.subplots_adjust(left=1.3 / (per_class + 1.4), right=0.99, top=1 - 0.4 / (n_cls + 0.5),
                        bottom=0.01, wspace=0.05, hspace=0.08)
    fig.suptitle(f"{per_class} random faces per class (seed {seed})", fontsize=10)
    for c, label in enumerate(ds.labels):
        idx = np.flatnonzero(ds.y == c)
        pick = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else []
        for j in range(per_class):
            ax = axes[c, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for sp in ax.spines.values():
                sp.set_visible(False)
            if j < len(pick):
                ax.imshow(ds.x[pick[j]], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        axes[c, 0].set_ylabel(f"{label}\n({len(idx):,})", rotation=0, ha="right", va="center", fontsize=10)
    path = Path(path)
    fig.savefig(path)
    return path


# --------------------------------------------------------------------------- the whole report
def write_report(ds: Dataset, out: str | Path, per_class: int = 8, seed: int = 0,
                 blank_std: float = BLANK_STD) -> tuple[dict, dict[str, Path]]:
    """Write summary.md, report.json, class_distribution.png and samples.png into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(ds, blank_std)
    paths = {
        "class distribution": plot_class_distribution(summary, out / "class_distribution.png"),
        "samples": plot_samples(ds, out / "samples.png", per_class=per_class, seed=seed),
    }
    summary["samples"] = {"per_class": per_class, "seed": seed}
    paths["summary"] = write_bytes_atomic(
        out / "summary.md",
        render_markdown(summary, {k: v for k, v in paths.items() if str(v).endswith(".png")}).encode())
    paths["json"] = write_json_atomic(out / "report.json", summary)
    return summary, paths


def console_table(summary: dict) -> str:
    """A short plain-text table for the terminal."""
    labels = summary["labels"]
    names = list(summary["counts"])
    w = max(len(n) for n in names) + 2
    cw = max(8, max(len(lbl) for lbl in labels) + 1)
    lines = ["split".ljust(w) + "".join(lbl.rjust(cw) for lbl in labels) + "total".rjust(cw)]
    for n in names:
        c = summary["counts"][n]
        lines.append(n.ljust(w) + "".join(f"{c[lbl]:,}".rjust(cw) for lbl in labels) + f"{c['total']:,}".rjust(cw))
    d = summary["duplicates"]
    lines.append("")
    lines.append(f"distinct images {d['overall']['distinct_images']:,} of {summary['rows']:,} rows; "
                 "duplicates within splits: " + ", ".join(
                     f"{k} {v['groups']} groups/{v['rows_in_groups']} rows" for k, v in d["within"].items()))
    lines.append("duplicates across splits: " + ", ".join(
        f"{k} {v['images']} images" for k, v in d["across"].items())
        + "; test rows seen in Training: " + ", ".join(f"{k} {v}" for k, v in d["test_rows_seen_in_training"].items()))
    lines.append(f"near-constant images (std < {summary['near_constant_std_below']:g}): "
                 f"{summary['pixels']['all']['near_constant']}; skipped bad rows: {summary['skipped']['count']}"
                 + ("; dropped: " + ", ".join(f"{k} {v}" for k, v in summary["dropped"].items())
                    if summary["dropped"] else ""))
    return "\n".join(lines)


@click.command("report")
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write summary.md, report.json and the PNGs into (made if missing).")
@click.option("--skip-bad", is_flag=True, help="Skip malformed rows / unreadable images and count them "
              "instead of stopping at the first.")
@click.option("--ferplus-votes", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="ferplus_votes.npz: report the 8-class FER+ labels of a fer2013 .npz instead.")
@click.option("--samples", "per_class", type=click.IntRange(1, 50), default=8, show_default=True,
              help="Sample faces per class in samples.png.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the sample grid.")
@click.option("--blank-std", type=click.FloatRange(0, None), default=BLANK_STD, show_default=True,
              help="Per-image pixel std below which an image counts as near-constant.")
def report_cmd(data: Path, out: Path, skip_bad: bool, ferplus_votes: Path | None, per_class: int,
               seed: int, blank_std: float) -> None:
    """Describe a data set: rows per split and class, pixel statistics, duplicates, samples.

    DATA: fer2013.npz, fer2013.csv / icml_face_data.csv, or a Kaggle image folder (train/, test/).
    """
    t0 = time.perf_counter()
    ds = load_dataset(data, skip_bad=skip_bad, ferplus_votes=ferplus_votes)
    t_load = time.perf_counter() - t0
    summary, paths = write_report(ds, out, per_class=per_class, seed=seed, blank_std=blank_std)
    click.echo(console_table(summary))
    click.echo("")
    for p in paths.values():
        click.echo(f"wrote {p}")
    click.echo(f"done in {time.perf_counter() - t0:.1f} s (loading {t_load:.1f} s)")
