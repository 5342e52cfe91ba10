"""benchmarks/check_poses.py: pose differences between two versions, and a record-then-compare run."""

import numpy as np

import check_poses
from sceneloc.geometry import make_pose


def _turned(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return make_pose(np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]), np.zeros(3))


def test_differences_are_the_largest_move_and_turn_and_count_one_sided_failures():
    before = np.stack([np.eye(4), np.eye(4), np.eye(4), check_poses.NO_POSE])
    after = before.copy()
    after[0, :3, 3] = [0.0, 0.002, 0.0]       # 2 mm
    after[1] = _turned(0.05)
    after[2] = check_poses.NO_POSE            # a pose lost
    d = check_poses.differences(before, after)
    assert np.isclose(d["max_mm"], 2.0) and np.isclose(d["max_deg"], 0.05, atol=1e-6)
    assert d["one_sided"] == 1 and d["frames"] == 4
    same = check_poses.differences(before, before)
    assert same["max_mm"] == 0.0 and same["max_deg"] == 0.0 and same["one_sided"] == 0


def test_the_same_code_gives_the_same_poses_and_a_moved_pose_fails(tiny_map, overfit_scene, tmp_path, capsys):
    recorded = tmp_path / "before.npz"
    args = ["--map", str(tiny_map), "--data", str(overfit_scene), "--frames", "2"]
    assert check_poses.main([*args, "--out", str(recorded), "--one-thread"]) == 0
    with np.load(recorded) as z:
        poses = {k: z[k] for k in z.files}
    assert poses["pose_rgb"].shape == (2, 4, 4) and poses["cpu_ms_rgbd"].shape == (2,)
    assert (poses["ms_rgb"] > 0).all() and (poses["cpu_ms_rgb"] > 0).all()
    assert check_poses.main([*args, "--against", str(recorded)]) == 0
    assert "same poses" in capsys.readouterr().out
    moved = dict(poses)
    moved["pose_rgbd"] = poses["pose_rgbd"].copy()
    moved["pose_rgbd"][0, 0, 3] += 0.005      # 5 mm: beyond the 1 mm tolerance
    np.savez(recorded, **moved)
    assert check_poses.main([*args, "--against", str(recorded)]) == 1
    assert "poses differ beyond 1.0 mm" in capsys.readouterr().out
