"""Carry a long run from one machine to the next: `fer-train park RUN` and `fer-train unpark PARKED`.

`--resume` continues a run exactly, but only while its folder exists, and `runs/` is not in the
repository: a sitting on a new machine starts without it (three long runs were lost that way). Parking
copies what an exact resume needs into a folder that is committed (`models/in_training/<run>/`):

* config.json, data.json, history.csv: what the run is and how far it got,
* last_epoch.npz: the state after the last completed epoch (resume.py),
* model.keras (and best_epoch.keras / swa.keras when present): the best checkpoint so far,
* teacher_targets.npy: the teachers' targets, so the teachers need not be on the next machine,
* teachers: with `--kd-online` the teachers score every batch, so their files (and cards) travel too: as a
  reference to the git blob when the repository holds that exact file (a shipped model, in any commit: no
  bytes added), else copied into teachers/; unpark puts each back where the run's config names it (a
  different file already there is an error),

The best checkpoint is carried without its optimizer state (the resume needs its weights only: the
optimizer's state is in last_epoch.npz) and the binary files xz-compressed, so the deeper fast tier parks
in about 4 MB. PARKED.json holds each file's sha256 (of the file as unpark writes it back), the epochs
done, the files the run reads that are *not* carried (the data, a runtime-views file: remade by
`fer-train runtime-views`, or by the resume itself for the recipes' "auto" file) and the two commands
that continue it. `unpark` checks every hash before it
copies the folder back under runs/ and then says what is missing, if anything, before `--resume`.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import lzma
import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable

from fer_edge.contract import file_sha256
from fer_edge.errors import ConfigError

from .resume import CHECKPOINT, LOCK, _live_owner, load_state

MANIFEST = "PARKED.json"
DEFAULT_PARKING = Path("models") / "in_training"
#: what an exact resume reads from the run folder (the first two are required)
REQUIRED = ("config.json", CHECKPOINT)
OPTIONAL = ("data.json", "history.csv", "model.keras", "best_epoch.keras", "swa.keras", "teacher_targets.npy")
#: carried xz-compressed (float arrays and zip archives of them: 10-20 % smaller)
BINARY = (".npz", ".npy", ".keras")


def _xz(src: Path, dst: Path) -> None:
    with open(src, "rb") as fin, lzma.open(dst, "wb", preset=6) as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


def _unxz(src: Path, dst: Path) -> None:
    with lzma.open(src, "rb") as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


def park(run: str | os.PathLike, to: str | os.PathLike = DEFAULT_PARKING, log: Callable[[str], None] = print) -> Path:
    """Copy the resumable state of `run` to `to/<run name>/` with a manifest; returns that folder."""
    run = Path(run)
    for name in REQUIRED:
        if not (run / name).is_file():
            raise ConfigError(f"park {run}: no {name} there ({'not a fer-train run folder' if name == 'config.json' else 'no epoch has completed yet: nothing to carry'})")
    owner = _live_owner(run)
    if owner is not None:
        raise ConfigError(f"park {run}: process {owner} is training it right now; stop it first (kill {owner}: "
                          "the last completed epoch is kept) and park again")
    state = load_state(run)  # a readable checkpoint, or a clear error
    config = json.loads((run / "config.json").read_text())
    dest = Path(to) / run.name
    tmp = dest.with_name(f".{dest.name}.parking")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    files, packed = {}, []
    for name in (*REQUIRED, *OPTIONAL):
        if not (run / name).is_file():
            continue
        if name.endswith(".keras"):  # weights only: the optimizer's state travels in last_epoch.npz
            from .scoring import load_keras_model

            load_keras_model(run / name).save(tmp / name)
        else:
            shutil.copyfile(run / name, tmp / name)
        files[name] = file_sha256(tmp / name)
        if name.endswith(BINARY):
            _xz(tmp / name, tmp / f"{name}.xz")
            (tmp / name).unlink()
            packed.append(name)
    done, total = state["meta"]["epochs_done"], config.get("epochs")
    not_carried = {"data": config.get("data")}
    if config.get("runtime_views"):
        not_carried["runtime_views"] = config["runtime_views"]
    teachers = _carry_teachers(config, tmp, Path(to), not_carried) if config.get("kd_online") else []
    manifest = {
        "run": run.name, "parked_at": _dt.datetime.now().isoformat(timespec="seconds"),
        "epochs_done": done, "epochs": total, "best_public_accuracy_so_far": state["meta"].get("best"),
        "files_sha256": files, "xz_compressed": packed, "not_carried": not_carried,
        **({"teachers": teachers} if teachers else {}),
        "continue": [f"fer-train unpark {dest}", f"fer-train fit --resume runs/{run.name}"],
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    log(f"parked {run} (epoch {done} of {total}) in {dest}: {len(files)} files, {size / 1e6:.1f} MB; "
        f"commit that folder, then on the next machine: {' && '.join(manifest['continue'])}")
    return dest


def unpark(parked: str | os.PathLike, out: str | os.PathLike = "runs", force: bool = False,
           log: Callable[[str], None] = print) -> Path:
    """Copy a parked run back to `out/<run name>/` after checking every file's sha256; returns the run folder."""
    parked = Path(parked)
    try:
        manifest = json.loads((parked / MANIFEST).read_text())
    except FileNotFoundError:
        raise ConfigError(f"unpark {parked}: no {MANIFEST} there (not a folder `fer-train park` wrote)") from None
    except ValueError as exc:
        raise ConfigError(f"unpark {parked}: {MANIFEST} is not valid JSON ({exc})") from None
    packed = set(manifest.get("xz_compressed", []))
    for name in manifest["files_sha256"]:
        stored = parked / (f"{name}.xz" if name in packed else name)
        if not stored.is_file():
            raise ConfigError(f"unpark {parked}: {stored.name} is missing")
    run = Path(out) / manifest["run"]
    if run.exists():
        here = load_state(run)
        if here is not None and here["meta"]["epochs_done"] >= manifest["epochs_done"] and not force:
            raise ConfigError(f"unpark {parked}: {run} already exists and is at epoch {here['meta']['epochs_done']} "
                              f"(parked: {manifest['epochs_done']}); resume it, or --force to replace it")
        if (run / LOCK).is_file() and _live_owner(run) is not None:
            raise ConfigError(f"unpark {parked}: {run} is being trained right now")
    staging = run.with_name(f".{run.name}.unparking")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, want in manifest["files_sha256"].items():
        try:
            if name in packed:
                _unxz(parked / f"{name}.xz", staging / name)
            else:
                shutil.copyfile(parked / name, staging / name)
        except (lzma.LZMAError, EOFError) as exc:
            shutil.rmtree(staging)
            raise ConfigError(f"unpark {parked}: {name}.xz is not readable xz ({exc})") from None
        got = file_sha256(staging / name)
        if got != want:
            shutil.rmtree(staging)
            raise ConfigError(f"unpark {parked}: {name} has sha256 {got[:12]}, the manifest says {want[:12]} "
                              "(changed or truncated since it was parked; a Git LFS pointer?)")
    try:
        missing = _check_teachers(parked, manifest.get("teachers", []))
    except ConfigError:
        shutil.rmtree(staging)
        raise
    if run.exists():  # only once the parked state is known good
        shutil.rmtree(run)
    os.replace(staging, run)
    log(f"unparked {manifest['run']} (epoch {manifest['epochs_done']} of {manifest['epochs']}) into {run}")
    for t in manifest.get("teachers", []):
        if t["path"] in missing:
            Path(t["path"]).parent.mkdir(parents=True, exist_ok=True)
            Path(t["path"]).write_bytes(missing[t["path"]])
            log(f"  teacher file {t['path']} put back" + (f" from git blob {t['git_blob'][:12]}" if "git_blob" in t else ""))
    missing_teachers = manifest["not_carried"].get("teachers") or []
    if any(not Path(t).exists() for t in missing_teachers):
        log(f"  its teachers {', '.join(t for t in missing_teachers if not Path(t).exists())} are not here "
            "(not single files, so not carried): the online distillation needs them to resume")
    views = manifest["not_carried"].get("runtime_views")
    if views and not Path(views).is_file():
        log(f"  its runtime views {views} are not on this machine: the resume remakes the recipes' file itself "
            "(12-17 minutes a render), or make it first with `fer-train runtime-views` (README)")
    data = manifest["not_carried"].get("data")
    if data and not Path(data).is_file():
        log(f"  its data {data} is not here: resume with --data PATH (the same file: its sha256 is checked)")
    log(f"  continue with: fer-train fit --resume {run}")
    return run


def _git_blob(folder: Path, path: Path) -> str | None:
    """The git blob id of `path` when the repository around `folder` holds that exact content, else None."""
    try:
        blob = subprocess.run(["git", "hash-object", str(Path(path).resolve())], cwd=folder, capture_output=True, text=True,
                              check=True).stdout.strip()
        subprocess.run(["git", "cat-file", "-e", blob], cwd=folder, capture_output=True, check=True)
        return blob
    except (OSError, subprocess.CalledProcessError):
        return None


def _carry_teachers(config: dict, tmp: Path, to: Path, not_carried: dict) -> list[dict]:
    """An online-distillation run's teacher files and their cards, each as a git blob reference or copied into
    `tmp/teachers/`; a teacher that is not a single file (a run folder) is listed under not_carried instead."""
    from fer_edge.contract import card_path_for

    names = config.get("teacher") or []
    entries, absent = [], []
    to.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate([names] if isinstance(names, str) else names):
        if not Path(name).is_file():
            absent.append(name)
            continue
        card = card_path_for(name)
        for src in (Path(name), *((card,) if card.is_file() else ())):
            if any(e["path"] == str(src) for e in entries):
                continue  # a card shared by two variants of one model
            entry = {"path": str(src), "sha256": file_sha256(src)}
            blob = _git_blob(to, src)
            if blob:
                entry["git_blob"] = blob
            else:
                entry["stored"] = f"teachers/{i}_{src.name}"
                (tmp / "teachers").mkdir(exist_ok=True)
                shutil.copyfile(src, tmp / entry["stored"])
            entries.append(entry)
    if absent:
        not_carried["teachers"] = absent
    return entries


def _teacher_bytes(parked: Path, entry: dict) -> bytes:
    """A carried teacher file's content, from the parked folder or from git; checked against its sha256."""
    try:
        if "git_blob" in entry:
            data = subprocess.run(["git", "cat-file", "blob", entry["git_blob"]], cwd=parked, capture_output=True,
                                  check=True).stdout
        else:
            data = (parked / entry["stored"]).read_bytes()
    except (OSError, subprocess.CalledProcessError):
        where = f"git blob {entry['git_blob']}" if "git_blob" in entry else entry["stored"]
        raise ConfigError(f"unpark {parked}: teacher file {entry['path']} cannot be read from {where} "
                          "(a shallow clone lacks old blobs: `git fetch --unshallow`)") from None
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise ConfigError(f"unpark {parked}: teacher file {entry['path']} changed since it was parked")
    return data


def _check_teachers(parked: Path, teachers: list[dict]) -> dict[str, bytes]:
    """Every carried teacher file is readable and intact, and where its path already holds a file, it is the
    same one; returns the content of those not on this machine, by path, for unpark to write."""
    missing = {}
    for t in teachers:
        data = _teacher_bytes(parked, t)
        if not Path(t["path"]).is_file():
            missing[t["path"]] = data
        elif (here := file_sha256(t["path"])) != t["sha256"]:
            raise ConfigError(f"unpark {parked}: {t['path']} is not the teacher file the run was trained with "
                              f"(sha256 {here[:12]}, parked {t['sha256'][:12]}); move it away and unpark again")
    return missing
