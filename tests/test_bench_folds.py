"""benchmarks/bench_folds.py and sfm_view.py: the SfM ground-truth view, the misregistered depth, the
camera-frame offset, and scoring a map end to end from cached network output."""

import argparse

import numpy as np
import pytest

import bench_estimators
import bench_folds
import sfm_view
from sceneloc.data.dataset import load_scene
from sceneloc.geometry import invert_pose, make_pose, matrix_to_quaternion
from sceneloc.mapping.scene_map import Map
from sceneloc.pose.config import PoseConfig


def _rotation(deg: float, axis: int) -> np.ndarray:
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    i, j = [k for k in range(3) if k != axis]
    R = np.eye(3)
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R


def test_shift_depth_moves_right_and_down_separately_and_scales():
    depth = np.arange(1, 13, dtype=float).reshape(3, 4)
    out = bench_estimators.shift_depth(depth, (2, 1), 0.0, 2.0)
    assert (out[0] == 0).all() and (out[:, :2] == 0).all()
    np.testing.assert_allclose(out[1:, 2:], 2.0 * depth[:2, :2])


def test_camera_frame_offset_is_the_estimate_in_the_true_camera_frame():
    T_gt = make_pose(_rotation(30, 1) @ _rotation(-20, 0), np.array([1.0, -2.0, 0.5]))
    offset = np.array([0.01, -0.02, 0.03])   # metres, camera frame
    T_est = T_gt.copy()
    T_est[:3, 3] = T_gt[:3, :3] @ offset + T_gt[:3, 3]
    failed = np.full((4, 4), np.nan)
    out = bench_folds.camera_frame_offsets(np.stack([T_est, failed]), np.stack([T_gt, T_gt]))
    np.testing.assert_allclose(out[0], offset, atol=1e-12)
    assert np.isnan(out[1]).all()
    m = bench_folds.row_metrics(np.stack([T_est, failed]), np.array([10.0, 30.0]), np.stack([T_gt, T_gt]))
    assert m["within_5cm_5deg"] == 0.5 and m["within_2cm_2deg"] == 0.0 and m["failures"] == 1
    np.testing.assert_allclose(m["offset_cm"], 100 * offset, atol=1e-9)   # the failed frame is left out


def test_sfm_view_maps_and_scores_with_the_sfm_poses(tiny_scene, tmp_path):
    """A view of a dataset whose ground truth is replaced: world-to-camera lines with a focal length
    become camera-to-world pose.txt files and the colour camera's intrinsics; splits as asked."""
    scene = load_scene(tiny_scene)
    frames = scene.frames("train") + scene.frames("test")
    twist = make_pose(_rotation(5, 2), np.array([0.1, 0.0, -0.2]))   # another world frame
    T_cw = {f.name: invert_pose(twist @ f.pose) for f in frames}
    pgt = tmp_path / "pgt.txt"
    lines = ["# image qw qx qy qz tx ty tz f"]
    for name, T in T_cw.items():
        q = matrix_to_quaternion(T[:3, :3])
        lines.append(" ".join([name, *(f"{v:.12f}" for v in (*q, *T[:3, 3])), "123.5"]))
    pgt.write_text("\n".join(lines) + "\n")
    out = sfm_view.sfm_view(tiny_scene, pgt, tmp_path / "view", train=[2], test=[1])
    view = load_scene(out)
    seq_01 = [f.name for f in scene.frames("train") if f.name.startswith("seq-01")]
    assert [f.name for f in view.frames("test")] == seq_01
    assert view.pose_camera == "colour" and scene.pose_camera is None   # the SfM poses: the colour camera's
    for f in view.frames("train") + view.frames("test"):
        np.testing.assert_allclose(f.pose, invert_pose(T_cw[f.name]), atol=1e-9)
        np.testing.assert_allclose(f.K, [[123.5, 0, 80], [0, 123.5, 60], [0, 0, 1]])
        assert f.image_path.is_symlink() and f.depth_path is not None and f.depth_path.is_symlink()


def test_scoring_a_map_from_cached_output(tiny_map, overfit_scene, tmp_path, monkeypatch):
    """Every row of a cell scored from one cached network pass; the table renders from the scores."""
    the_map = Map.load(tiny_map)
    frames = load_scene(overfit_scene).frames("train")   # the frames the map is over-fitted to
    cache = tmp_path / "cache.pkl"
    preds = bench_folds.cached_outputs(the_map, frames, cache)
    assert cache.exists() and len(preds) == len(frames)
    again = bench_folds.cached_outputs(the_map, frames, cache)   # read back, not recomputed
    np.testing.assert_array_equal(again[0].coords, preds[0].coords)
    out = bench_folds.score_cell(the_map, frames, preds, PoseConfig(), (2, 3), 1.02)
    gt = np.stack([f.pose for f in frames])
    for row in bench_folds.ROWS:
        assert out[f"pose_{row}"].shape == (len(frames), 4, 4)
        assert (out[f"ms_{row}"] > 0).all()
    # the over-fitted map places its own mapping frames from exact data
    m = bench_folds.row_metrics(out["pose_rgbd"], out["ms_rgbd"], gt)
    assert m["within_5cm_5deg"] == 1.0
    rows = [{"fold": 1, "ground_truth": "dslam", "row": "rgb", **m, "sift_within_5cm_5deg": 0.5,
             "sift_median_cm": 3.0}]
    # the RGB-D poses against the RGB ones of the same frames, from the scores file
    path = tmp_path / "scores" / "default" / "dslam_f1.npz"
    path.parent.mkdir(parents=True)
    np.savez(path, gt=gt, **out)
    monkeypatch.setitem(bench_folds.SELECTED, "folds", [1])
    monkeypatch.setitem(bench_folds.SELECTED, "gts", ["dslam"])
    table = bench_folds.disagreement(tmp_path, "default")
    assert table.count("| dslam_f1 |") == 2
    text = bench_folds.markdown(rows, "header")
    assert "| 1 (seq-01) | dslam | rgb | 100.0 % |" in text and "50.0 % (3.0)" in text


def test_ground_truth_names_of_the_scale_studies():
    names = ("sfm", "sfm@0.98", "sfm+1.02")
    assert [bench_folds.sfm_scale(bench_folds.ground_truth(g)) for g in names] == [1.0, 0.98, 1.0]
    for bad in ("sfm@", "sfm+x", "sfm@-1", "kinect"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench_folds.ground_truth(bad)


def _poses(n: int, rng: np.random.Generator) -> np.ndarray:
    return np.stack([make_pose(_rotation(rng.uniform(-40, 40), 1) @ _rotation(rng.uniform(-20, 20), 0),
                               rng.uniform(-2, 2, 3)) for _ in range(n)])


def test_one_ground_truth_carried_into_the_other_by_a_similarity_and_a_rig():
    rng = np.random.default_rng(3)
    T_a = _poses(30, rng)
    # the other ground truth: another world (scale 1.02, turned, moved) and a camera turned 2 deg on the rig
    s, world = 1.02, make_pose(_rotation(25, 2), np.array([0.3, -1.0, 2.0]))
    T_b = np.stack([world @ T for T in T_a]) @ make_pose(_rotation(2, 0), np.zeros(3))
    T_b[:, :3, 3] = s * T_b[:, :3, 3]
    fit, test = slice(0, 20), slice(20, 30)
    carried = sfm_view.carried_poses(T_b, T_b[fit, :3, 3], T_a[fit, :3, 3])
    rot, trans = bench_folds.stored_pose_errors(carried[test], T_a[test])
    np.testing.assert_allclose(rot, 2.0, atol=1e-6)      # the centres match; the cameras differ by the rig
    assert trans.max() < 1e-9
    rig = sfm_view.camera_offset(carried[fit], T_a[fit])
    np.testing.assert_allclose((carried @ rig)[test], T_a[test], atol=1e-9)


def test_camera_offset_is_the_rig_between_two_cameras():
    rng = np.random.default_rng(5)
    T = _poses(10, rng)
    rig = make_pose(_rotation(-3, 1) @ _rotation(1, 2), np.array([0.025, -0.003, 0.004]))
    np.testing.assert_allclose(sfm_view.camera_offset(T, T @ rig), rig, atol=1e-12)


def test_one_move_of_the_whole_recording_is_found_and_undone(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    gt = _poses(40, rng)
    move = make_pose(_rotation(1.5, 1), np.array([0.03, -0.01, 0.02]))
    poses = np.stack([invert_pose(move) @ T for T in gt])   # every estimate off by the same world move
    poses[3] = np.nan                                        # a failed frame stays failed
    path = tmp_path / "scores" / "x" / "dslam_f1.npz"
    path.parent.mkdir(parents=True)
    np.savez(path, gt=gt, pose_rgb=poses)
    monkeypatch.setitem(bench_folds.SELECTED, "folds", [1])
    monkeypatch.setitem(bench_folds.SELECTED, "gts", ["dslam"])
    row = bench_folds.recording_moves(tmp_path, "x").splitlines()[2]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:2] == ["dslam_f1", "rgb"]
    assert cells[3] == "97.5 %"                  # 39 of 40: all but the failed frame
    assert cells[5].startswith("0.0 / 0.00")     # nothing left once moved back
    assert cells[6].startswith("1.50, ")
