"""IoU tracker (stable IDs, new IDs, expiry) and the per-track smoother (EMA, window, uncertain)."""
from __future__ import annotations

import numpy as np
import pytest

from fer_edge.errors import ConfigError
from fer_edge.records import Detection
from fer_edge.smoother import UNCERTAIN, Smoother
from fer_edge.tracker import IouTracker, iou, iou_matrix

LABELS = ("a", "b", "c")


def dets(*boxes):
    return [Detection(b) for b in boxes]


# --------------------------------------------------------------------------- tracker
def test_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (10, 0, 10, 10)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    m = iou_matrix([(0, 0, 10, 10), (100, 100, 10, 10)], [(5, 0, 10, 10)])
    assert m.shape == (2, 1) and m[0, 0] == pytest.approx(1 / 3) and m[1, 0] == 0
    assert iou_matrix([], [(0, 0, 1, 1)]).shape == (0, 1)


def test_ids_stay_stable_while_faces_move():
    tr = IouTracker(iou_threshold=0.3, max_missed=2)
    a, b = (10, 10, 50, 50), (300, 10, 50, 50)
    ids = [t.id for t in tr.update(dets(a, b))]
    assert ids == [1, 2]
    for step in range(1, 20):  # both move 5 px a frame; detection order swaps every frame
        a2 = (10 + 5 * step, 10, 50, 50)
        b2 = (300 - 5 * step, 10, 50, 50)
        order = (b2, a2) if step % 2 else (a2, b2)
        visible = tr.update(dets(*order))
        assert {t.id: t.box for t in visible} == {1: a2, 2: b2}
    assert tr.next_id == 3


def test_new_face_gets_a_new_id_and_ids_are_never_reused():
    tr = IouTracker(max_missed=0)
    assert [t.id for t in tr.update(dets((0, 0, 40, 40)))] == [1]
    assert [t.id for t in tr.update(dets((0, 0, 40, 40), (200, 200, 40, 40)))] == [1, 2]
    assert tr.update([]) == [] and sorted(tr.expired) == [1, 2]
    assert [t.id for t in tr.update(dets((0, 0, 40, 40)))] == [3]  # same place, new face: new ID


def test_missed_detections_keep_the_id_until_max_missed():
    tr = IouTracker(max_missed=2)
    tr.update(dets((0, 0, 40, 40)))
    assert tr.update([]) == [] and tr.expired == []  # missed 1: kept, not visible
    assert tr.update([]) == [] and tr.expired == []  # missed 2: kept
    assert [t.id for t in tr.update(dets((2, 2, 40, 40)))] == [1]  # back: same ID
    for _ in range(3):
        tr.update([])
    assert tr.expired == [1] and tr.tracks == []


def test_one_detection_claims_one_track_best_iou_first():
    tr = IouTracker(iou_threshold=0.1)
    tr.update(dets((0, 0, 40, 40), (30, 0, 40, 40)))  # two overlapping faces, IDs 1 and 2
    visible = tr.update(dets((28, 0, 40, 40)))  # one detection, closest to track 2
    assert [t.id for t in visible] == [2]
    assert [t.missed for t in tr.tracks] == [1, 0]


def test_track_counters():
    tr = IouTracker()
    tr.update(dets((0, 0, 40, 40)))
    tr.update(dets((1, 0, 40, 40)))
    tr.update([])
    (t,) = tr.tracks
    assert (t.hits, t.missed, t.age, t.visible) == (2, 1, 3, False)


# --------------------------------------------------------------------------- smoother
def p(*values):
    return np.array(values, np.float32)


def test_ema_math():
    sm = Smoother(LABELS, "ema", alpha=0.25)
    first, label, score = sm.update(1, p(1, 0, 0))
    assert np.allclose(first, [1, 0, 0]) and label == "a" and score == 1.0
    second, label, _ = sm.update(1, p(0, 1, 0))
    assert np.allclose(second, [0.75, 0.25, 0])
    third, label, score = sm.update(1, p(0, 1, 0))
    assert np.allclose(third, [0.5625, 0.4375, 0]) and label == "a"
    assert np.isclose(third.sum(), 1.0)


def test_ema_is_per_track_and_forgotten():
    sm = Smoother(LABELS, "ema", alpha=0.5)
    sm.update(1, p(1, 0, 0))
    other, *_ = sm.update(2, p(0, 0, 1))
    assert np.allclose(other, [0, 0, 1])  # track 2 does not inherit track 1's state
    sm.forget([1])
    assert len(sm) == 1
    again, *_ = sm.update(1, p(0, 1, 0))
    assert np.allclose(again, [0, 1, 0])


def test_window_mean():
    sm = Smoother(LABELS, "window", window=3)
    outs = [sm.update(7, v)[0] for v in (p(1, 0, 0), p(0, 1, 0), p(0, 1, 0), p(0, 0, 1), p(0, 0, 1))]
    assert np.allclose(outs[0], [1, 0, 0])
    assert np.allclose(outs[1], [0.5, 0.5, 0])
    assert np.allclose(outs[2], [1 / 3, 2 / 3, 0])
    assert np.allclose(outs[3], [0, 2 / 3, 1 / 3])  # the first frame left the window
    assert np.allclose(outs[4], [0, 1 / 3, 2 / 3])


def test_none_passes_through():
    sm = Smoother(LABELS, "none")
    x = p(0.2, 0.5, 0.3)
    assert sm.update(1, x)[0] is x and len(sm) == 0


def test_uncertain_below_min_confidence():
    sm = Smoother(LABELS, "none", min_confidence=0.5)
    assert sm.update(1, p(0.4, 0.35, 0.25))[1:] == (UNCERTAIN, pytest.approx(0.4))
    assert sm.update(1, p(0.1, 0.6, 0.3))[1:] == ("b", pytest.approx(0.6))


def test_hysteresis_holds_the_label_until_a_margin_or_n_frames():
    sm = Smoother(LABELS, "none", switch_margin=0.2, switch_frames=3)
    assert sm.update(1, p(0.6, 0.3, 0.1))[1] == "a"  # first label: the first argmax
    # b leads by less than the margin: a is held, and scored with its own probability
    assert sm.update(1, p(0.4, 0.5, 0.1))[1:] == ("a", pytest.approx(0.4))
    assert sm.update(1, p(0.45, 0.5, 0.05))[1] == "a"  # b has led 2 frames
    assert sm.update(1, p(0.4, 0.5, 0.1))[1:] == ("b", pytest.approx(0.5))  # 3 frames in a row: b takes over
    assert sm.update(1, p(0.5, 0.45, 0.05))[1] == "b"  # a leads by less than the margin
    assert sm.update(1, p(0.2, 0.45, 0.35))[1] == "b"  # the run of challengers is broken: counting restarts
    assert sm.update(1, p(0.1, 0.2, 0.7))[1] == "c"  # c leads by 0.5 >= margin: at once


def test_hysteresis_counts_a_challenger_only_while_it_leads_in_a_row():
    sm = Smoother(LABELS, "none", switch_margin=0.5, switch_frames=3)
    sm.update(1, p(0.5, 0.4, 0.1))
    shown = [sm.update(1, x)[1] for x in (p(0.4, 0.5, 0.1), p(0.4, 0.1, 0.5), p(0.4, 0.5, 0.1), p(0.4, 0.5, 0.1))]
    assert shown == ["a", "a", "a", "a"]  # b, c, b, b: never 3 of one in a row
    assert sm.update(1, p(0.4, 0.5, 0.1))[1] == "b"


def test_hysteresis_is_per_track_forgotten_and_off_by_default():
    sm = Smoother(LABELS, "none", switch_margin=0.3, switch_frames=10)
    sm.update(1, p(0.6, 0.3, 0.1))
    assert sm.update(2, p(0.3, 0.6, 0.1))[1] == "b"  # track 2 has its own label
    assert sm.update(1, p(0.3, 0.5, 0.2))[1] == "a"
    sm.forget([1])
    assert len(sm) == 1
    assert sm.update(1, p(0.3, 0.5, 0.2))[1] == "b"  # a forgotten track starts afresh
    plain = Smoother(LABELS, "none")
    plain.update(1, p(0.6, 0.3, 0.1))
    assert plain.update(1, p(0.45, 0.55, 0.0))[1] == "b" and not plain.hysteresis


def test_hysteresis_and_uncertain_from_a_tracker_config():
    from fer_edge.config import TrackerConfig

    cfg = TrackerConfig()
    sm = Smoother.from_config(LABELS, cfg)
    assert sm.hysteresis and (sm.switch_margin, sm.switch_frames) == (cfg.switch_margin, cfg.switch_frames)
    assert 0 < cfg.min_confidence < 1 and sm.min_confidence == cfg.min_confidence
    # uncertain applies to the label shown: a held label whose probability fell far below the threshold
    strict = Smoother(LABELS, "none", min_confidence=0.5, switch_margin=0.1, switch_frames=5)
    strict.update(1, p(0.8, 0.1, 0.1))
    assert strict.update(1, p(0.35, 0.45, 0.2))[1:] == (UNCERTAIN, pytest.approx(0.35))


def test_a_score_hovering_at_min_confidence_does_not_flicker():
    sm = Smoother(LABELS, "none", min_confidence=0.5, switch_margin=0.2, switch_frames=3)
    shown = [sm.update(1, p(s, (1 - s) / 2, (1 - s) / 2))[1] for s in (0.55, 0.48, 0.52, 0.47, 0.49, 0.46)]
    assert shown == ["a", "a", "a", "a", "a", "uncertain"]  # 3 frames in a row below: then uncertain
    assert sm.update(1, p(0.52, 0.24, 0.24))[1] == "uncertain"  # one frame above is not enough
    assert sm.update(1, p(0.75, 0.15, 0.1))[1] == "a"  # past the threshold by the margin: at once
    assert sm.update(1, p(0.25, 0.4, 0.35))[1] == "uncertain"  # a held 'a' at 0.25: far below, at once
    plain = Smoother(LABELS, "none", min_confidence=0.5)  # no hysteresis: the threshold as it is
    assert [plain.update(1, p(s, (1 - s) / 2, (1 - s) / 2))[1] for s in (0.55, 0.48, 0.52)] == ["a", "uncertain", "a"]


@pytest.mark.parametrize("kwargs", [{"mode": "median"}, {"alpha": 0.0}, {"alpha": 1.5},
                                    {"mode": "window", "window": 0}, {"min_confidence": 2},
                                    {"switch_margin": -0.1}, {"switch_margin": 1.5}, {"switch_frames": -1}])
def test_bad_settings(kwargs):
    with pytest.raises(ConfigError):
        Smoother(LABELS, **kwargs)


def test_a_fast_face_keeps_its_id_through_the_gated_second_pass():
    tr = IouTracker(iou_threshold=0.3)
    tr.update(dets((100, 100, 90, 90)))
    (t,) = tr.update(dets((160, 100, 90, 90)))  # moved 2/3 of its width: IoU 0.2
    assert t.id == 1
    (t,) = tr.update(dets((400, 100, 90, 90)))  # jumped far: a different face
    assert t.id == 2
    (t,) = tr.update(dets((405, 100, 200, 200)))  # same place, but twice the size: not the same face
    assert t.id == 3
    off = IouTracker(iou_threshold=0.3, max_center_shift=0)
    off.update(dets((100, 100, 90, 90)))
    assert [t.id for t in off.update(dets((160, 100, 90, 90)))] == [2]


def test_iou_matches_are_never_stolen_by_the_gated_pass():
    tr = IouTracker(iou_threshold=0.3)
    tr.update(dets((0, 0, 100, 100), (150, 0, 100, 100)))
    visible = tr.update(dets((10, 0, 100, 100), (120, 0, 100, 100)))
    assert {t.id: t.box for t in visible} == {1: (10, 0, 100, 100), 2: (120, 0, 100, 100)}


def test_steady_label_flags_reach_the_tracker_config():
    from fer_edge.cli import build_config, cli
    from click.testing import CliRunner

    cfg = build_config({"source_path": "clip.mp4", "switch_margin": 0.3, "switch_frames": 7, "min_confidence": 0.5})
    assert (cfg.tracker.switch_margin, cfg.tracker.switch_frames, cfg.tracker.min_confidence) == (0.3, 7, 0.5)
    help_text = CliRunner().invoke(cli, ["run", "--help"]).output
    assert "--switch-margin" in help_text and "--switch-frames" in help_text
    assert "right less than half the time" in " ".join(help_text.split())  # what "uncertain" means
