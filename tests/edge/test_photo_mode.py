"""Photo mode: an image, or a folder, is a set of independent photos (and videos).

Each photo starts afresh (tracker and smoother reset: IDs from 1, no emotion carried over), every
event names its file (JSONL "file", CSV column "file" after "reason"), other files are named in a
warning and counted, and videos in the folder are played as videos.
"""
from __future__ import annotations

import csv
import logging

import cv2
import numpy as np
import pytest

from fer_edge.config import RunConfig
from fer_edge.errors import SourceError
from fer_edge.loop import run
from fer_edge.notify import Notifier
from fer_edge.report import read_logs
from fer_edge.sources import ImageSource, open_source

from ..conftest import sideways_phone_jpeg
from .conftest import face_video_frames, write_video


def config(path, model, **log) -> RunConfig:
    cfg = RunConfig()
    cfg.source.path = str(path)
    cfg.classifier.model = str(model)
    cfg.tracker.min_confidence = 0.0
    for key, value in log.items():
        setattr(cfg.log, key, value)
    return cfg


def quiet() -> Notifier:
    return Notifier(env={})


@pytest.fixture
def photo_folder(tmp_path, astronaut_bgr, astronaut_face_box):
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), astronaut_bgr)
    # the same face at the same place, darker and with more contrast: the tracker would match it to
    # a.png's face and the smoother would mix the two, if photo mode carried anything over
    other = np.clip((astronaut_bgr.astype(np.float32) - 90) * 1.6, 0, 255).astype(np.uint8)
    cv2.imwrite(str(folder / "b.png"), other)
    frames, _, _ = face_video_frames(astronaut_bgr, astronaut_face_box, n_moving=30, n_empty=1)
    write_video(folder / "c.avi", frames[:24], fps=12.0)
    (folder / "notes.txt").write_text("not a photo")
    (folder / "sub").mkdir()  # sub-folders are not searched (and not counted)
    return folder


def events(path, read_jsonl):
    return [e for e in read_jsonl(path) if e["type"] == "event"]


def test_a_folder_is_a_set_of_independent_photos_and_its_videos(photo_folder, tiny_tflite_model, tmp_path,
                                                                 read_jsonl, caplog):
    log, csv_log = tmp_path / "e.jsonl", tmp_path / "e.csv"
    cfg = config(photo_folder, tiny_tflite_model, jsonl=str(log), csv=str(csv_log))
    cfg.detector.every = 3  # photos are searched whatever --detect-every says
    with caplog.at_level(logging.WARNING):
        summary = run(cfg, notifier=quiet())
    assert "notes.txt" in caplog.text and "not images or videos" in caplog.text
    assert summary.source["skipped"] == 1 and summary.source["corrupt"] == 0
    assert summary.frames == 2 + 24  # two photos, the video's 24 frames

    evs = events(log, read_jsonl)
    a = [e for e in evs if e["file"] == str(photo_folder / "a.png")]
    b = [e for e in evs if e["file"] == str(photo_folder / "b.png")]
    video = [e for e in evs if e["file"] == str(photo_folder / "c.avi")]
    assert len(a) == 1 and len(b) == 1 and a[0]["frame"] == 0 and b[0]["frame"] == 1
    assert a[0]["track_id"] == 1 and b[0]["track_id"] == 1  # IDs count from 1 in every photo
    assert len(video) >= 12 and {e["track_id"] for e in video} == {1}  # the video starts afresh too
    assert min(e["frame"] for e in video) >= 2
    assert len(evs) == len(a) + len(b) + len(video)
    # the per-track summary keeps each photo's face apart (both are track 1 of their own file)
    (summary_line,) = [e for e in read_jsonl(log) if e["type"] == "summary"]
    assert [(t["file"], t["track_id"], t["frames"]) for t in summary_line["tracks"]] == [
        (str(photo_folder / "a.png"), 1, 1), (str(photo_folder / "b.png"), 1, 1),
        (str(photo_folder / "c.avi"), 1, len(video))]

    # b's emotion is b's own: the same as when b.png is analysed alone
    alone_log = tmp_path / "b.jsonl"
    run(config(photo_folder / "b.png", tiny_tflite_model, jsonl=str(alone_log)), notifier=quiet())
    (alone,) = events(alone_log, read_jsonl)
    assert alone["file"] == str(photo_folder / "b.png")
    assert b[0]["probs"] == pytest.approx(alone["probs"], abs=2e-4) and b[0]["emotion"] == alone["emotion"]
    assert a[0]["probs"] != pytest.approx(b[0]["probs"], abs=2e-3), "the two photos must read differently"

    # CSV: the file is the last column, after "reason"; the report reads it by header names
    rows = list(csv.reader(csv_log.open()))
    assert rows[0][-2:] == ["reason", "file"] and rows[0][:3] == ["time", "frame", "track_id"]
    assert [r[-1] for r in rows[1:3]] == [str(photo_folder / "a.png"), str(photo_folder / "b.png")]
    session = read_logs([csv_log])
    assert session.events == len(evs) and session.labels == list(a[0]["probs"])


def test_photos_only_folder_keeps_every_photo_apart(tmp_path, astronaut_bgr, tiny_tflite_model, read_jsonl):
    folder = tmp_path / "p"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.jpg"), astronaut_bgr)
    log = tmp_path / "e.jsonl"
    cfg = config(folder, tiny_tflite_model, jsonl=str(log))
    cfg.tracker.confirm_frames = 5  # confirmation does not apply to photos
    summary = run(cfg, notifier=quiet())
    evs = events(log, read_jsonl)
    assert [(e["frame"], e["track_id"], e["file"]) for e in evs] == [
        (i, 1, str(folder / f"{i}.jpg")) for i in range(3)]
    assert summary.ghosts == 0 and summary.source["skipped"] == 0


def test_a_video_file_names_itself_in_every_event(face_clip, tiny_tflite_model, tmp_path, read_jsonl):
    log = tmp_path / "e.jsonl"
    run(config(face_clip.path, tiny_tflite_model, jsonl=str(log)), notifier=quiet())
    evs = events(log, read_jsonl)
    assert evs and {e["file"] for e in evs} == {str(face_clip.path)}


def test_folder_without_photos_or_videos(tmp_path):
    (tmp_path / "x.txt").write_text("x")
    (tmp_path / "y.csv").write_text("y")
    cfg = RunConfig()
    cfg.source.path = str(tmp_path)
    with pytest.raises(SourceError, match=r"no images .* or videos in it \(2 other file\(s\) skipped\)"):
        open_source(cfg.source)


def test_a_video_in_the_folder_that_cannot_be_read_is_skipped_and_counted(tmp_path, astronaut_bgr, caplog):
    cv2.imwrite(str(tmp_path / "a.png"), astronaut_bgr)
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    cfg = RunConfig()
    cfg.source.path = str(tmp_path)
    source = open_source(cfg.source)
    assert isinstance(source, ImageSource)
    with caplog.at_level(logging.WARNING):
        frames = list(source)
    assert [f.file for f in frames] == [str(tmp_path / "a.png")] and frames[0].still
    assert source.stats()["corrupt"] == 1 and "broken.mp4" in caplog.text


def test_a_phone_photo_taken_sideways_is_read_upright(tmp_path, astronaut_bgr):
    """EXIF orientation is honoured, so the face is upright for the detector (OpenCV's
    IMREAD_COLOR applies it; IMREAD_UNCHANGED or a reduced-size flag would not)."""
    upright = np.ascontiguousarray(astronaut_bgr[:, 64:448])  # 512 high, 384 wide: not square
    (tmp_path / "phone.jpg").write_bytes(sideways_phone_jpeg(upright))
    stored = cv2.imread(str(tmp_path / "phone.jpg"), cv2.IMREAD_UNCHANGED)
    assert stored.shape[:2] == (384, 512)  # the file's own pixels are sideways

    cfg = RunConfig()
    cfg.source.path = str(tmp_path)
    (frame,) = list(open_source(cfg.source))
    assert frame.image.shape[:2] == (512, 384)
    diff = np.abs(frame.image.astype(np.int16) - upright.astype(np.int16)).mean()
    assert diff < 6.0, f"the photo is not read upright (mean abs difference {diff:.1f})"
