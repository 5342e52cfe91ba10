"""The peer benchmark (benchmarks/bench_peers.py and benchmarks/peers/) cannot rot: its localizers
are checked on exact synthetic data and the harness runs end to end in --quick mode."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import bench_peers
from peers.feature_localizer import FeatureLocalizer, build_map
from peers.posenet import PoseNetConfig, PoseNetLocalizer, train_posenet
from peers.ransac_backends import opencv_pnp, poselib_available, poselib_pnp
from sceneloc.data.dataset import load_scene
from sceneloc.geometry import (
    make_pose,
    matrix_to_quaternion,
    pose_errors,
    project,
    quaternion_to_matrix,
    transform_points,
)
from sceneloc.pose.config import PoseConfig

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def feature_map(tiny_scene, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("feature_map")
    stats = build_map(load_scene(tiny_scene).frames("train"), out, log=lambda *a: None)
    assert stats["keypoints_kept"] > 500 and stats["map_bytes"] > 0
    return out


@pytest.mark.parametrize("mode", ["rgb", "rgbd"])
def test_feature_localizer_recovers_training_frames(feature_map, tiny_scene, mode):
    """Every training frame, localized against the map built from it, lands within a few cm: this
    fails if keypoints are lifted with the wrong pose convention, pixel offset or depth."""
    loc = FeatureLocalizer(feature_map)
    limit_deg, limit_m = (2.0, 0.05) if mode == "rgb" else (1.0, 0.02)
    for frame in load_scene(tiny_scene).frames("train"):
        image = frame.load_image()
        res = loc.localize(image, frame.K, frame.load_depth() if mode == "rgbd" else None)
        assert res.pose is not None, (frame.name, res.failure)
        rot, trans = pose_errors(res.pose, frame.pose)
        assert rot < limit_deg and trans < limit_m, (frame.name, float(rot), float(trans))
        assert res.inliers >= loc.config.min_inliers and len(res.retrieved) == loc.config.top_k


def test_feature_localizer_reports_failure_on_a_blank_image(feature_map, tiny_scene):
    frame = load_scene(tiny_scene).frames("test")[0]
    res = FeatureLocalizer(feature_map).localize(np.full((120, 160, 3), 128, np.uint8), frame.K)
    assert res.pose is None and res.failure and res.matches == 0


def test_posenet_trains_and_its_output_is_the_pose_it_regresses(tiny_scene, tmp_path):
    """A few training steps write a loadable model; with its head forced to output a frame's
    (centred position, quaternion), localize returns exactly that frame's camera-to-world pose."""
    frames = load_scene(tiny_scene).frames("train")
    report = train_posenet(frames, tmp_path, PoseNetConfig(iterations=3, batch_size=4, width=8), device="cpu",
                           log=lambda *a: None)
    assert report["steps"] == 3 and np.isfinite(report["final_loss"])
    loc = PoseNetLocalizer(tmp_path, device="cpu")
    target = frames[3]
    last = loc.model.head[-1]
    last.weight.data.zero_()
    output = np.r_[target.pose[:3, 3] - loc.center, matrix_to_quaternion(target.pose[:3, :3])]
    last.bias.data = torch.tensor(output, dtype=torch.float32)
    rot, trans = pose_errors(loc.localize(target.load_image()), target.pose)
    assert rot < 1e-3 and trans < 1e-5


def _exact_correspondences(n: int = 600, outliers: float = 0.4, seed: int = 0):
    """``(pixels (n, 2), world points (n, 3), K, camera-to-world pose)`` with a share of outliers."""
    rng = np.random.default_rng(seed)
    K = np.array([[585.0, 0, 319.5], [0, 585.0, 239.5], [0, 0, 1]])
    T_wc = make_pose(quaternion_to_matrix(rng.normal(size=4)), rng.normal(size=3))
    z = rng.uniform(1, 4, n)
    cam = np.c_[rng.uniform(-0.5, 0.5, (n, 2)) * z[:, None], z]
    pixels = project(cam, K)
    bad = rng.random(n) < outliers
    pixels[bad] = rng.uniform([0, 0], [640, 480], (int(bad.sum()), 2))
    return pixels, transform_points(T_wc, cam), K, T_wc


@pytest.mark.parametrize("backend", ["opencv", "poselib"])
def test_ransac_backends_recover_an_exact_pose_and_refuse_noise(backend):
    if backend == "poselib" and not poselib_available():
        pytest.skip("poselib not installed: pip install -e '.[bench]'")
    # 10 px: this scene's outliers are near enough that poselib's refinement lets some in at 25 px
    px10 = PoseConfig(method="ransac", inlier_threshold_px=10.0)

    def solve(p, X, K):
        return opencv_pnp(p, X, K, px10) if backend == "opencv" else poselib_pnp(p, X, K, (480, 640), px10)

    pixels, points, K, T_wc = _exact_correspondences()
    pose, inliers = solve(pixels, points, K)
    assert pose is not None and inliers > 300
    rot, trans = pose_errors(pose, T_wc)
    assert rot < 1e-3 and trans < 1e-4
    noise = np.random.default_rng(1).uniform([0, 0], [640, 480], pixels.shape)
    assert solve(noise, points, K)[0] is None   # fewer than sceneloc's required inliers: a failure, not a pose


def _rows(errors_m: float | None, method: str) -> dict:
    """A fake row of 10 frames all at ``errors_m`` (None: all failed)."""
    records = [{"name": str(i), "rot_deg": None if errors_m is None else 1.0, "trans_m": errors_m, "ms": 10.0,
                "inliers": 0} for i in range(10)]
    mapping = {"wall_s": 60.0, "cpu_s": 90.0, "peak_rss_mb": 500.0, "map_mb": 5.0}
    return bench_peers.make_row("d", method, "rgb", mapping, {"peak_rss_mb": 300.0}, records)


def test_verdict_says_plainly_where_sceneloc_loses():
    lost = bench_peers.verdict([_rows(None, "sceneloc"), _rows(0.01, "features-sift")])
    assert any("**sceneloc is less accurate than SIFT features + VLAD**" in s for s in lost)
    won = bench_peers.verdict([_rows(0.01, "sceneloc"), _rows(0.5, "features-sift")])
    assert any("sceneloc is more accurate than SIFT features + VLAD" in s for s in won)
    assert not any("less accurate" in s for s in won)


@pytest.mark.slow
def test_bench_peers_quick_end_to_end(tmp_path):
    """--quick on a tiny synthetic scene: every method maps and localizes in its own process and the
    JSON has every field for every (method, mode) row, with numbers where the method applies."""
    proc = subprocess.run([sys.executable, str(BENCH / "bench_peers.py"), "--quick", "--out", str(tmp_path),
                           "--work", str(tmp_path / "work"), "--write", str(tmp_path / "BENCHMARKS.md")],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "bench_peers.json").read_text())
    per_frame = json.loads((tmp_path / "bench_peers_frames.json").read_text())
    for key in ("date", "command", "machine", "datasets", "rows"):
        assert key in results
    rows = results["rows"]
    methods = {"sceneloc", "sceneloc-ransac", "sceneloc+opencv", "sceneloc+poselib", "features-sift", "posenet"}
    assert {(r["method"], r["mode"]) for r in rows} == {(m, mode) for m in methods for mode in ("rgb", "rgbd")}
    for r in rows:
        assert set(bench_peers.ROW_FIELDS) <= set(r), set(bench_peers.ROW_FIELDS) - set(r)
        assert not r["note"].startswith("failed"), r["note"]
        assert r["map_mb"] > 0 and r["peak_rss_mapping_mb"] > 0
        if r["applicable"]:
            assert r["frames"] == results["datasets"]["synth-tiny"]["test"] and r["loc_ms_median"] > 0
            assert r["peak_rss_localize_mb"] > 0 and 0 <= r["within_5cm_5deg"] <= r["within_10cm_10deg"] <= 1
            assert len(per_frame[f"{r['dataset']}/{r['method']}/{r['mode']}"]) == r["frames"]
        else:
            assert r["note"] and r["frames"] is None
    applicable = {(r["method"], r["mode"]) for r in rows if r["applicable"]}
    assert ("posenet", "rgbd") not in applicable and ("features-sift", "rgbd") in applicable
    assert bench_peers.HEADING in (tmp_path / "BENCHMARKS.md").read_text()
