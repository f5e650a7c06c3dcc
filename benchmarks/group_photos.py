"""Group photos: are the small faces of a large photo found? One BlazeFace pass against the photo search.

    python benchmarks/group_photos.py --json benchmarks/results/group_photos.json \
        --plot benchmarks/results/group_photos.png

Photo mode (`fer-edge --source photos/`, the app's upload) meets photos from phones and cameras:
1280x960 to 4032x3024, faces 40-300 px, i.e. 1/100 to 1/4 of the longer side. One BlazeFace pass
sees the photo shrunk to 128 px (short range) or 192 px (full range) and misses the small ones.
This benchmark makes such photos and counts what each way of searching finds:

* **Photos.** `--photos` per size (landscape 1280x960, 1920x1080, 4032x3024 and portrait
  3024x4032), each a crop of a face-free real photo (scikit-image's samples, the cameraman left
  out: he is a face) with `--faces` faces at random, non-overlapping places: real faces
  (scikit-image's astronaut, matplotlib's Grace Hopper: the whole head with a feathered edge)
  and FER2013 `--split` faces (48-px crops with a grey border, upscaled: harder to find, see
  pipeline_accuracy.py), in equal numbers, face sides log-uniform in 40-300 px, tilted up to 20
  degrees, then brightness, contrast, blur and noise, and a JPEG round trip (quality 90), as a
  phone saves them.
* **Negatives.** The same backgrounds with no face, at the same sizes: every box is a false one.
* A face is found when a box's centre lies within half the face's side of the true centre and
  its side is within 0.5-2x the face's. Other boxes are false.

Ways of searching, all on the same photos in the same run (1 interpreter thread):
  one-pass        the configured detector once over the photo (short-range BlazeFace; photo mode until now)
  one-pass-full   the full-range model once over the photo
  photo-search    detectors/photo_search.py: both over the whole photo, full-range windows, second looks

Caveat: only two real people exist offline (astronaut, Grace Hopper); the FER2013 faces bring the
variety of faces and expressions, at the cost of looking pasted.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO, REPO / "benchmarks"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from pipeline_accuracy import SPLITS, background_images, camera_look, paste, real_photos  # noqa: E402

from fer_edge.config import RunConfig  # noqa: E402
from fer_edge.detectors import create_detector, suppress_duplicates  # noqa: E402
from fer_edge.detectors.photo_search import PhotoSearch  # noqa: E402

SIZES = [(1280, 960), (1920, 1080), (4032, 3024), (3024, 4032)]
FACE_SIDES = (40, 300)
METHODS = ("one-pass", "one-pass-full", "photo-search")


def backgrounds() -> list[np.ndarray]:
    """pipeline_accuracy's backgrounds without scikit-image's "camera": a photo of a man, i.e. a face."""
    from skimage import data

    camera = cv2.cvtColor(data.camera(), cv2.COLOR_GRAY2BGR)
    return [im for im in background_images() if not (im.shape == camera.shape and np.array_equal(im, camera))]


def crop_to(image: np.ndarray, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    scale = max(width / image.shape[1], height / image.shape[0]) * rng.uniform(1.0, 1.3)
    big = cv2.resize(image, (math.ceil(image.shape[1] * scale), math.ceil(image.shape[0] * scale)),
                     interpolation=cv2.INTER_CUBIC)
    x = rng.integers(0, big.shape[1] - width + 1)
    y = rng.integers(0, big.shape[0] - height + 1)
    return big[y:y + height, x:x + width].copy()


def paste_real(frame: np.ndarray, photo: np.ndarray, face: tuple[int, int, int, int], centre, side: float,
               tilt: float) -> None:
    """The photo's head (a feathered disc 1.2 face sides across, around the face) scaled so the face
    is `side` px, rotated by `tilt`, blended in at `centre` (in place)."""
    x, y, w, h = face
    fcx, fcy = x + w / 2.0, y + h / 2.0
    s = side / ((w + h) / 2.0)
    m = cv2.getRotationMatrix2D((fcx, fcy), tilt, s)
    m[:, 2] += (centre[0] - fcx, centre[1] - fcy)
    r = int(side * 1.2)
    x0, y0 = max(0, int(centre[0]) - r), max(0, int(centre[1]) - r)
    x1, y1 = min(frame.shape[1], int(centre[0]) + r), min(frame.shape[0], int(centre[1]) + r)
    m[:, 2] -= (x0, y0)
    size = (x1 - x0, y1 - y0)
    warped = cv2.warpAffine(photo, m, size, flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    mask = np.zeros((size[1], size[0]), np.float32)
    cv2.circle(mask, (int(centre[0]) - x0, int(centre[1]) - y0), int(side * 1.0), 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, side * 0.08))[..., None]
    region = frame[y0:y1, x0:x1]
    region[:] = (region * (1 - mask) + warped * mask).astype(np.uint8)


def make_photo(width: int, height: int, n_faces: int, rng: np.random.Generator, bgs, people, fer_faces):
    """One group photo: (BGR image after a JPEG round trip, truths [(cx, cy, side, kind)])."""
    frame = crop_to(bgs[rng.integers(len(bgs))], width, height, rng)
    truths: list[tuple[float, float, float, str]] = []
    names = list(people)
    for i in range(n_faces):
        side = float(np.exp(rng.uniform(*np.log(FACE_SIDES))))
        for _ in range(200):  # a place that keeps clear of the other faces' heads
            cx, cy = rng.uniform(side, width - side), rng.uniform(side, height - side)
            if all(math.hypot(cx - tx, cy - ty) > 1.3 * (side + ts) for tx, ty, ts, _ in truths):
                break
        else:
            continue
        tilt = rng.uniform(-20, 20)
        if i % 2 == 0:
            photo, face = people[names[rng.integers(len(names))]]
            paste_real(frame, photo, face, (cx, cy), side, tilt)
            truths.append((cx, cy, side, "real"))
        else:
            gray = fer_faces[rng.integers(len(fer_faces))]
            paste(frame, gray, (cx, cy), int(side), tilt)
            truths.append((cx, cy, side, "fer2013"))
    frame = camera_look(frame, rng)
    ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return cv2.imdecode(jpeg, cv2.IMREAD_COLOR), truths


def match(boxes, truths) -> tuple[list[bool], int]:
    """Which truths a box finds (greedy, nearest first), and how many boxes find none."""
    used: set[int] = set()
    found = []
    for cx, cy, side, _ in truths:
        best, best_d = None, None
        for i, (x, y, w, h) in enumerate(boxes):
            d = math.hypot(x + w / 2 - cx, y + h / 2 - cy)
            if i not in used and d <= side / 2 and 0.5 <= max(w, h) / side <= 2.0 and (best_d is None or d < best_d):
                best, best_d = i, d
        if best is not None:
            used.add(best)
        found.append(best is not None)
    return found, len(boxes) - len(used)


def plot(report: dict, example: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(15, 5.2))
    ax = fig.add_subplot(1, 3, 1)
    edges = report["size_bins"]
    for method in METHODS:
        rates = report["found_by_size"][method]
        ax.plot([f"{a}-{b}" for a, b in zip(edges[:-1], edges[1:])], [100 * r for r in rates], marker="o", label=method)
    ax.set(title="faces found, by face side (px)", ylabel="%", ylim=(0, 102))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    for k, method in enumerate(("one-pass", "photo-search")):
        ax = fig.add_subplot(1, 3, 2 + k)
        image = cv2.cvtColor(example["image"], cv2.COLOR_BGR2RGB)
        ax.imshow(image)
        for cx, cy, side, _ in example["truths"]:
            ax.add_patch(plt.Circle((cx, cy), side * 0.75, fill=False, color="yellow", lw=1, ls="--"))
        for x, y, w, h in example[method]:
            ax.add_patch(plt.Rectangle((x, y), w, h, fill=False, color="lime", lw=1.5))
        hits, _ = match(example[method], example["truths"])
        ax.set(title=f"{method}: {sum(hits)} of {len(hits)} faces found")
        ax.axis("off")
    fig.suptitle(f"group photos ({', '.join(report['sizes'])}); right: one {example['size']} photo, yellow circles "
                 "the faces, green boxes what was found", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "fer2013.npz"))
    ap.add_argument("--split", default="PublicTest", choices=["PublicTest", "PrivateTest"],
                    help="FER2013 split the pasted crops come from (only their look matters here).")
    ap.add_argument("--photos", type=int, default=10, help="group photos per size")
    ap.add_argument("--faces", type=int, default=6, help="faces per photo")
    ap.add_argument("--sizes", default=",".join(f"{w}x{h}" for w, h in SIZES), help="photo sizes, WxH,...")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", dest="json_path")
    ap.add_argument("--plot", dest="plot_path")
    args = ap.parse_args(argv)

    from tqdm import tqdm

    sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")]
    rng = np.random.default_rng(args.seed)
    bgs, people = backgrounds(), real_photos()
    data = np.load(args.data)
    rows = np.flatnonzero(data["usage"] == SPLITS[args.split])
    fer_faces = data["pixels"][rng.choice(rows, size=500, replace=False)]

    detector = create_detector(RunConfig().detector, fallback=False)
    full_cfg = RunConfig().detector
    full_cfg.kind = "blazeface-full"
    full = create_detector(full_cfg, fallback=False)
    search = PhotoSearch.for_detector(detector)
    methods = {
        "one-pass": lambda im: suppress_duplicates(detector.detect(im)),
        "one-pass-full": lambda im: suppress_duplicates(full.detect(im)),
        "photo-search": search.detect,
    }
    edges = [40, 60, 90, 135, 200, 300]
    per: dict = {m: {"hits": [], "sides": [], "kinds": [], "false": 0, "false_neg": 0, "ms": [], "ms_by_size": {}}
                 for m in METHODS}
    example: dict = {}
    jobs = [(w, h, i) for (w, h) in sizes for i in range(args.photos)]
    example_size = (1920, 1080) if (1920, 1080) in sizes else sizes[0]
    for w, h, i in tqdm(jobs, desc="group photos", unit="photo"):
        image, truths = make_photo(w, h, args.faces, rng, bgs, people, fer_faces)
        negative = camera_look(crop_to(bgs[rng.integers(len(bgs))], w, h, rng), rng)
        negative = cv2.imdecode(cv2.imencode(".jpg", negative, [cv2.IMWRITE_JPEG_QUALITY, 90])[1], cv2.IMREAD_COLOR)
        for method, fn in methods.items():
            t0 = time.perf_counter()
            boxes = [d.box for d in fn(image)]
            ms = (time.perf_counter() - t0) * 1e3
            hits, false = match(boxes, truths)
            p = per[method]
            p["hits"] += hits
            p["sides"] += [t[2] for t in truths]
            p["kinds"] += [t[3] for t in truths]
            p["false"] += false
            p["false_neg"] += len(fn(negative))
            p["ms"].append(ms)
            p["ms_by_size"].setdefault(f"{w}x{h}", []).append(ms)
            if (w, h) == example_size and i == 0:
                example[method] = boxes
        if (w, h) == example_size and i == 0:
            example |= {"image": image, "truths": truths, "size": f"{w}x{h}"}

    n_photos = len(jobs)
    report: dict = {"command": "python benchmarks/group_photos.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                    "machine": platform.machine(), "photos": n_photos, "faces_per_photo": args.faces,
                    "sizes": [f"{w}x{h}" for w, h in sizes], "seed": args.seed, "size_bins": edges, "methods": {}, "found_by_size": {},
                    "photo_search": {"windows": search.windows_searched, "second_look_rejections": search.rejected}}
    for method in METHODS:
        p = per[method]
        hits, sides, kinds = np.array(p["hits"]), np.array(p["sides"]), np.array(p["kinds"])
        report["methods"][method] = {
            "faces": int(len(hits)), "found": float(hits.mean()),
            "found_real": float(hits[kinds == "real"].mean()), "found_fer2013": float(hits[kinds == "fer2013"].mean()),
            "false_boxes_per_photo": p["false"] / n_photos, "false_boxes_per_negative": p["false_neg"] / n_photos,
            "ms_median": float(np.median(p["ms"])),
            "ms_median_by_size": {k: float(np.median(v)) for k, v in p["ms_by_size"].items()},
        }
        report["found_by_size"][method] = [float(hits[(sides >= a) & (sides < b)].mean())
                                           for a, b in zip(edges[:-1], edges[1:])]
    print(f"{n_photos} group photos ({', '.join(report['sizes'])}), {args.faces} faces each, "
          f"sides {FACE_SIDES[0]}-{FACE_SIDES[1]} px; {n_photos} face-free photos")
    print("| way | found | real faces | FER2013 faces | false boxes / photo | false boxes / face-free photo | "
          "ms / photo (median) | " + " | ".join(f"ms {s}" for s in report["sizes"]) + " |")
    print("|---|---|---|---|---|---|---|" + "---|" * len(sizes))
    for method, r in report["methods"].items():
        print(f"| {method} | {100 * r['found']:.1f} % | {100 * r['found_real']:.1f} % | {100 * r['found_fer2013']:.1f} % | "
              f"{r['false_boxes_per_photo']:.2f} | {r['false_boxes_per_negative']:.2f} | {r['ms_median']:.0f} | "
              + " | ".join(f"{r['ms_median_by_size'][s]:.0f}" for s in report["sizes"]) + " |")
    print("found by face side:", json.dumps({m: [round(100 * v, 1) for v in r] for m, r in report["found_by_size"].items()}))
    if args.json_path:
        Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_path).write_text(json.dumps(report, indent=1) + "\n")
    if args.plot_path:
        plot(report, example, Path(args.plot_path))
    return report


if __name__ == "__main__":
    main()
