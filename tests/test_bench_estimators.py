"""benchmarks/bench_estimators.py: the depth misregistration it simulates, and one end-to-end run."""

import json

import numpy as np

import bench_estimators


def test_shift_depth_moves_the_map_and_pushes_depth_along_the_rays():
    depth = np.arange(1, 13, dtype=float).reshape(3, 4)
    depth[0, 0] = 0.0                                          # no depth stays no depth
    out = bench_estimators.shift_depth(depth, 1, 0.05)
    assert (out[0] == 0).all() and (out[:, 0] == 0).all()      # uncovered border: no depth
    np.testing.assert_allclose(out[1:, 1:][depth[:-1, :-1] > 0], depth[:-1, :-1][depth[:-1, :-1] > 0] + 0.05)
    assert out[1, 1] == 0.0
    np.testing.assert_array_equal(bench_estimators.shift_depth(depth, 0, 0.0), depth)


def test_rows_and_subsampling():
    assert bench_estimators.variants(["rgb", "rgbd"], 4, 0.0) == [("rgb", "-"), ("rgbd", "clean"), ("rgbd", "shifted")]
    assert bench_estimators.variants(["rgbd"], 0, 0.0) == [("rgbd", "clean")]
    assert bench_estimators.subsample(list(range(10)), 3) == [0, 4, 9]
    assert bench_estimators.subsample(list(range(3)), None) == [0, 1, 2]


def test_benchmark_runs_end_to_end(tiny_map, overfit_scene, tmp_path, capsys):
    out = tmp_path / "rows.json"
    bench_estimators.main(["--map", str(tiny_map), "--data", str(overfit_scene), "--methods", "ransac,joint,dsac",
                           "--dsac-score", "soft-inliers", "--frames", "1", "--shift-px", "2", "--json", str(out)])
    text = capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    variants = (("rgb", "-"), ("rgbd", "clean"), ("rgbd", "shifted"))
    assert [(r["method"], r["mode"], r["depth"]) for r in rows] == [
        (m, mode, d) for m in ("ransac", "joint", "dsac") for mode, d in variants]
    assert all(r["frames"] == 1 and r["ms_median"] >= r["pose_ms_median"] > 0 for r in rows)
    assert text.count("| joint |") == 3 and text.count("| dsac |") == 3 and "5 cm / 5 deg" in text
