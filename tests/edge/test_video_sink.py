"""--save-video: every annotated frame at the source's frame rate; --save-frames counts video time."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_edge.config import RunConfig
from fer_edge.errors import ConfigError
from fer_edge.loop import run
from fer_edge.notify import Notifier
from fer_edge.overlay import PANEL_BG
from fer_edge.sinks import build_sinks, close_sinks
from fer_edge.sinks.frames import FrameSaverSink
from fer_edge.sinks.video import STILL_S, VideoSink

from .test_sinks import T0, make_result


def read_video(path: Path) -> tuple[list[np.ndarray], float]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} does not open"
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    cap.release()
    return frames, fps


def test_run_writes_every_frame_at_the_clip_rate(face_clip, tiny_tflite_model, tmp_path):
    out = tmp_path / "out" / "overlay.mp4"
    cfg = RunConfig()
    cfg.source.path = str(face_clip.path)
    cfg.classifier.model = str(tiny_tflite_model)
    cfg.log.save_video = str(out)
    summary = run(cfg, notifier=Notifier(env={}))
    frames, fps = read_video(out)
    assert len(frames) == summary.frames == len(face_clip.states)  # faces or not, every frame once
    assert fps == pytest.approx(15.0, abs=0.01)  # the clip's rate, not the processing rate
    assert frames[0].shape == (480, 640, 3)
    # annotated: the status band is there on frames without a face too
    empty = face_clip.frames_where("none")[0]
    assert (np.abs(frames[empty].astype(int) - np.array(PANEL_BG)).sum(axis=-1) < 40).sum() > 1000


def test_stills_are_held_and_other_sizes_fitted(tmp_path):
    sink = VideoSink(tmp_path / "photos.avi", fps=None)
    sink.attach_source_fps(4.0)
    for i, size in enumerate(((240, 320), (480, 200), (240, 320))):
        image = np.full(size + (3,), 120, np.uint8)
        result = make_result(i, T0 + i, [], image=image)
        result.frame.still = True
        sink.write(result)
    sink.close()
    frames, fps = read_video(tmp_path / "photos.avi")
    assert fps == pytest.approx(4.0) and len(frames) == 3 * round(STILL_S * 4.0)
    assert all(f.shape == (240, 320, 3) for f in frames)
    tall = frames[round(STILL_S * 4.0)]  # 480x200 fitted into 240x320: black bars left and right
    assert tall[:, :80].max() < 30 and tall[120, 160].mean() > 80


def test_live_frames_repeat_to_keep_real_time(tmp_path):
    sink = VideoSink(tmp_path / "live.avi", fps=10.0)
    for t in (0.0, 0.1, 0.5, 0.6, 100.0):  # a camera whose loop fell behind, then a long stall
        sink.write(make_result(0, T0 + t, [], image=np.zeros((120, 160, 3), np.uint8)))
    sink.close()
    frames, _ = read_video(tmp_path / "live.avi")
    # 1 + 1 + 4 (0.1 -> 0.5 s) + 1, then the stall is cut to MAX_FILL_S (5 s = 50 frames)
    assert sink.stats == {"frames": 5, "written": 7 + 50} and len(frames) == 57


def test_bad_paths_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"--save-video .*out\.gif: unknown video type '\.gif'"):
        VideoSink(tmp_path / "out.gif")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=r"--save-video .*file/out\.mp4: cannot create"):
        VideoSink(blocker / "out.mp4")
    (tmp_path / "d.mp4").mkdir()
    with pytest.raises(ConfigError, match="is a folder"):
        VideoSink(tmp_path / "d.mp4")
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(ConfigError, match="cannot open a video writer"):
            VideoSink(ro / "out.mp4")


def test_off_by_default_and_built_from_the_config(tmp_path):
    cfg = RunConfig()
    cfg.log.summary_every_s = 0
    assert cfg.log.save_video is None and cfg.log.save_frames is None
    assert not any(isinstance(s, VideoSink) for s in build_sinks(cfg, ("happy",)))
    cfg.log.save_video = str(tmp_path / "v.mp4")
    sinks = build_sinks(cfg, ("happy",))
    assert [type(s) for s in sinks] == [VideoSink]
    close_sinks(sinks)
    assert not (tmp_path / "v.mp4").exists(), "no frame came: nothing is left behind"


def test_save_frames_counts_video_time_not_processing_time(tmp_path):
    sink = FrameSaverSink(tmp_path / "f", every_s=1.0)
    face = [(1, (40, 40, 60, 60), "happy")]
    for i in range(45):  # 3 s of a 15 fps file, processed in no time at all (same wall-clock time)
        result = make_result(i, T0, face, image=np.zeros((240, 320, 3), np.uint8))
        result.frame.pts, result.frame.file = i / 15.0, "clip.mp4"
        sink.write(result)
    assert sink.stats["saved"] == 3  # at 0, 1 and 2 s of video
    for i in range(3):  # replayed (loop): video time starts again
        result = make_result(100 + i, T0, face, image=np.zeros((240, 320, 3), np.uint8))
        result.frame.pts, result.frame.file = i / 15.0, "clip.mp4"
        sink.write(result)
    assert sink.stats["saved"] == 4
    for i in range(2):  # photos: each one is saved
        result = make_result(200 + i, T0, face, image=np.zeros((240, 320, 3), np.uint8))
        result.frame.still, result.frame.file = True, f"p{i}.jpg"
        sink.write(result)
    assert sink.stats["saved"] == 6 and len(list((tmp_path / "f").iterdir())) == 6


def test_save_video_flag(face_clip, tiny_tflite_model, tmp_path):
    from fer_edge.cli import run_cmd

    out = tmp_path / "cli.avi"
    result = run_cmd.main(["--source", str(face_clip.path), "--model", str(tiny_tflite_model), "--save-video",
                           str(out), "--max-frames", "7", "-q"], standalone_mode=False)
    assert result is None
    frames, fps = read_video(out)
    assert len(frames) == 7 and fps == pytest.approx(15.0, abs=0.01)
