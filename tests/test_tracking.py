"""Tracking (localize/tracking.py) on the exact synthetic room: from a nearby prior a frame is aligned without
a network pass and lands on its true pose; from a wrong prior it is relocalized in full."""

from __future__ import annotations

import numpy as np
import pytest
from test_scene_view import K as CORNER_K
from test_scene_view import camera as corner_camera
from test_scene_view import corner_scene_view, ray_cast

from sceneloc.cli.main import main
from sceneloc.data.dataset import load_scene
from sceneloc.errors import SceneLocError
from sceneloc.geometry import make_pose, pose_errors, read_pose_file
from sceneloc.localize.tracking import Tracker, TrackingConfig, predicted_prior, track_frames
from sceneloc.mapping.scene_map import Map


@pytest.fixture(scope="module")
def frame(overfit_scene):
    return load_scene(overfit_scene).frames("train")[0].load()


#: the tiny map's surface is sparse (428 points at 160x120): a quarter of the query depth finds a surface
#: point within 2 cm even at the true pose, and a 160x120 rendering offers ~1200 flow matches
LENIENT = TrackingConfig(min_matched=0.1, min_view_inliers=30)


def nudged(T_wc: np.ndarray, shift_m: float, turn_deg: float) -> np.ndarray:
    """``T_wc`` moved ``shift_m`` along x and turned ``turn_deg`` about the camera's y axis."""
    a = np.deg2rad(turn_deg)
    R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    return T_wc @ make_pose(R, np.array([shift_m, 0.0, 0.0]))


def test_constant_velocity_prior_repeats_the_last_motion():
    T0 = np.eye(4)
    T1 = nudged(T0, 0.05, 2.0)
    T2 = predicted_prior(T1, T0, constant_velocity=True)
    assert np.allclose(T2, nudged(T1, 0.05, 2.0))
    assert np.allclose(predicted_prior(T1, T0, constant_velocity=False), T1)
    assert np.allclose(predicted_prior(T1, None, constant_velocity=True), T1)


def test_a_depth_frame_near_the_prior_is_tracked_onto_its_true_pose(the_map, frame):
    tracker = Tracker(the_map, config=LENIENT)
    tracker.reset(nudged(frame.pose, 0.03, 1.5))
    res = tracker.track(frame.image, frame.depth, frame.K)
    assert res.tracked and res.tracking_failure is None
    assert res.timings["network_ms"] == 0.0
    rot_deg, trans_m = pose_errors(res.pose, frame.pose)
    assert trans_m < 0.01 and rot_deg < 0.75, (rot_deg, trans_m)   # from 3 cm and 1.5 deg off
    assert np.isnan(res.probability)   # tracked poses are not calibrated



def test_uint16_millimetre_depth_is_tracked_as_metres(the_map, frame):
    """Depth as cv2.imread gives a depth PNG (uint16 millimetres) tracks as its metres do, as
    Map.localize reads it; an all-zero map is the same one-line error."""
    millimetres = np.round(frame.depth * 1000).astype(np.uint16)
    poses = []
    for depth in (frame.depth, millimetres):
        tracker = Tracker(the_map, config=LENIENT)
        tracker.reset(nudged(frame.pose, 0.03, 1.5))
        res = tracker.track(frame.image, depth, frame.K)
        assert res.tracked and res.tracking_failure is None
        poses.append(res.pose)
    rot_deg, trans_m = pose_errors(poses[1], frame.pose)
    assert trans_m < 0.01 and rot_deg < 0.75, (rot_deg, trans_m)
    assert np.allclose(poses[0], poses[1], atol=1e-3)   # metres rounded to whole millimetres
    tracker = Tracker(the_map, config=LENIENT)
    tracker.reset(frame.pose)
    with pytest.raises(SceneLocError, match="query depth: depth map holds no valid depth"):
        tracker.track(frame.image, np.zeros_like(millimetres), frame.K)

def test_an_image_near_the_prior_is_tracked_onto_its_true_pose(tiny_map):
    # the textured corner of test_scene_view at 320x240 (the tiny map's 160x120 view is too coarse to
    # render): the same alignment the map's RGB poses end with, started from the previous pose
    the_map = Map.load(tiny_map, device="cpu")
    the_map.view = corner_scene_view(0.01)
    T_wc = corner_camera()
    image = np.repeat(np.clip(np.round(ray_cast(T_wc)[0]), 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    tracker = Tracker(the_map)
    tracker.reset(nudged(T_wc, 0.03, 1.5))
    res = tracker.track(image, None, CORNER_K)
    assert res.tracked and res.inliers >= TrackingConfig().min_view_inliers
    assert res.timings["network_ms"] == 0.0
    rot_deg, trans_m = pose_errors(res.pose, T_wc)
    assert trans_m < 0.005 and rot_deg < 0.2, (rot_deg, trans_m)
    # the next frame, 2 cm on, is tracked from the motion so far
    T_next = nudged(T_wc, 0.02, 0.5)
    image = np.repeat(np.clip(np.round(ray_cast(T_next)[0]), 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    res = tracker.track(image, None, CORNER_K)
    assert res.tracked and pose_errors(res.pose, T_next)[1] < 0.005


def test_a_colour_cameras_map_tracks_rgbd_frames_by_the_image(tiny_map):
    # poses of the colour camera (MappingConfig.pose_camera): the depth, here of a camera 2.5 cm to the
    # side, is not what the frame is aligned by; the image is, onto its own camera's pose
    the_map = Map.load(tiny_map, device="cpu")
    the_map.view = corner_scene_view(0.01)
    the_map.config["pose_camera"] = "colour"
    T_wc = corner_camera()
    image = np.repeat(np.clip(np.round(ray_cast(T_wc)[0]), 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    T_depth = T_wc @ make_pose(np.eye(3), np.array([0.025, 0.0, 0.0]))
    hits = ray_cast(T_depth)[1]
    beside = np.nan_to_num(((hits - T_depth[:3, 3]) @ T_depth[:3, :3])[..., 2]).astype(np.float32)   # z, metres
    tracker = Tracker(the_map)
    tracker.reset(nudged(T_wc, 0.03, 1.5))
    res = tracker.track(image, beside, CORNER_K)
    assert res.tracked and res.timings["network_ms"] == 0.0
    rot_deg, trans_m = pose_errors(res.pose, T_wc)
    assert trans_m < 0.005 and rot_deg < 0.2, (rot_deg, trans_m)


def test_a_wrong_prior_falls_back_to_relocalization(the_map, frame):
    tracker = Tracker(the_map, config=LENIENT)
    far = nudged(frame.pose, 1.5, 40.0)
    tracker.reset(far)
    res = tracker.track(frame.image, frame.depth, frame.K)
    assert not res.tracked and res.tracking_failure is not None
    assert res.timings["network_ms"] > 0
    # the relocalization found the frame (the map is over-fitted to it), not the wrong prior
    assert res.pose is not None
    assert pose_errors(res.pose, frame.pose)[1] < 0.05


def test_periodic_relocalization_and_the_first_frame_run_the_network(the_map, frame):
    tracker = Tracker(the_map, config=TrackingConfig(min_matched=0.1, relocalize_every=2))
    kinds = [tracker.track(frame.image, frame.depth, frame.K).tracked for _ in range(5)]
    assert kinds == [False, True, True, False, True]


def test_track_frames_streams_a_split_in_order(the_map, overfit_scene):
    frames = load_scene(overfit_scene).frames("train")
    out = list(track_frames(the_map, frames, "rgbd", config=LENIENT, progress=False))
    assert [f.name for f, _ in out] == [f.name for f in frames]
    assert not out[0][1].tracked
    for f, res in out:
        assert res.pose is not None and pose_errors(res.pose, f.pose)[1] < 0.05
    with pytest.raises(SceneLocError, match="unknown mode"):
        list(track_frames(the_map, frames, "depth", progress=False))


def test_localize_sequence_writes_every_frame_in_order(tiny_map, overfit_scene, tmp_path, capsys):
    out = tmp_path / "poses.txt"
    assert main(["localize", str(tiny_map), str(overfit_scene), "--split", "train", "--mode", "rgbd",
                 "--sequence", "--out", str(out)]) == 0
    records = read_pose_file(out)
    frames = load_scene(overfit_scene).frames("train")
    assert [r.image for r in records] == [f.name for f in frames]
    for r, f in zip(records, frames, strict=True):
        assert r.pose is not None and pose_errors(r.pose, f.pose)[1] < 0.05
    assert "2 frames localized" in capsys.readouterr().out
