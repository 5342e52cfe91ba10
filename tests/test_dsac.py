"""DSAC (pose/dsac.py): exact gradients of the expected loss, SoftAM, differentiable solvers, fine-tuning, CLI."""

import json
import shutil

import cv2
import numpy as np
import pytest
import torch

from sceneloc.cli.main import main
from sceneloc.data.dataset import load_scene
from sceneloc.geometry import backproject, intrinsics_matrix, make_pose, pose_errors, read_pose_file, transform_points
from sceneloc.mapping.dsac_training import finetune_dsac, frame_objective
from sceneloc.mapping.scene_map import Map
from sceneloc.pose.config import PoseConfig
from sceneloc.pose.dsac import (
    DSACConfig,
    ScoreCNN,
    estimate_pose_dsac,
    kabsch_hypotheses,
    make_matches,
    pnp_hypotheses,
    refine_on_inliers,
    softam,
)


def _problem(h=4, w=5, noise=0.0, outliers=0, seed=0):
    """A camera looking at random depths on an ``h x w`` pixel grid: pixels ``(N, 2)``, scene
    coordinates ``(N, 3)`` (with noise and gross outliers), camera points ``(N, 3)``, K, true pose."""
    rng = np.random.default_rng(seed)
    K = intrinsics_matrix(100.0, 100.0, 40.0, 30.0)
    v, u = np.meshgrid(np.linspace(5, 55, h), np.linspace(5, 75, w), indexing="ij")
    pixels = np.stack([u, v], -1).reshape(-1, 2)
    camera = backproject(pixels, rng.uniform(1.5, 3.0, len(pixels)), K)
    R, _ = cv2.Rodrigues(rng.normal(size=3) * 0.5)
    T_gt = make_pose(R, rng.normal(size=3))
    scene = transform_points(T_gt, camera) + rng.normal(size=camera.shape) * noise
    bad = rng.choice(len(scene), outliers, replace=False)
    scene[bad] += rng.normal(size=(outliers, 3))
    return pixels, scene, camera, K, T_gt


# ------------------------------------------------------------------------------- (1) gradients


@pytest.mark.parametrize("solver", ["kabsch", "pnp"])
def test_expected_loss_gradient_matches_finite_differences(solver):
    torch.manual_seed(0)
    h, w = 4, 5
    pixels, scene, camera, K, T_gt = _problem(h, w, noise=0.02, outliers=3)
    config = DSACConfig(hypotheses=6, alpha=20.0)
    score_net = ScoreCNN(width=4).double()
    torch.nn.init.normal_(score_net.head.weight, std=0.5)  # zero at init: make every layer matter
    T = torch.as_tensor(T_gt)

    def loss(Y):
        m = make_matches(pixels, Y, K, (h, w), camera if solver == "kabsch" else None)
        return frame_objective(m, T, config, score_net, np.random.default_rng(1))[0]

    Y = torch.tensor(scene, requires_grad=True)
    loss(Y).backward()
    params = [score_net.head.weight, score_net.features[0].weight]
    assert Y.grad.abs().max() > 0 and all(p.grad.abs().max() > 0 for p in params)

    eps = 1e-6
    with torch.no_grad():
        for i, j in [(0, 0), (3, 1), (7, 2), (11, 0), (19, 1)]:
            Yp, Ym = Y.detach().clone(), Y.detach().clone()
            Yp[i, j] += eps
            Ym[i, j] -= eps
            fd = (loss(Yp) - loss(Ym)) / (2 * eps)
            assert float(fd) == pytest.approx(float(Y.grad[i, j]), rel=1e-4, abs=1e-5), (i, j)
        for p in params:
            flat, grad = p.view(-1), p.grad.view(-1)
            for k in range(3):
                old = float(flat[k])
                flat[k] = old + eps
                up = loss(Y.detach())
                flat[k] = old - eps
                down = loss(Y.detach())
                flat[k] = old
                assert float((up - down) / (2 * eps)) == pytest.approx(float(grad[k]), rel=1e-4, abs=1e-5)


def test_sampled_objective_gives_finite_gradients():
    pixels, scene, camera, K, T_gt = _problem(4, 5, noise=0.02, outliers=3)
    Y = torch.tensor(scene, requires_grad=True)
    m = make_matches(pixels, Y, K, (4, 5), camera)
    surrogate, value = frame_objective(m, torch.as_tensor(T_gt), DSACConfig(hypotheses=8, objective="sampled",
                                                                          score="soft-inliers"),
                                       None, np.random.default_rng(0))
    surrogate.backward()
    assert np.isfinite(value) and torch.isfinite(Y.grad).all() and Y.grad.abs().max() > 0


# ---------------------------------------------------------------------------------- (2) SoftAM


def test_softam_of_identical_hypotheses_is_that_hypothesis():
    _, _, _, _, T = _problem()
    poses = torch.as_tensor(np.stack([T] * 5))
    out = softam(poses, torch.softmax(torch.randn(5, dtype=torch.float64), 0))
    assert torch.allclose(out, poses[0], atol=1e-12)


def test_softam_of_two_rotations_is_their_midpoint():
    rng = np.random.default_rng(3)
    R1, R2 = (cv2.Rodrigues(rng.normal(size=3))[0] for _ in range(2))
    t1, t2 = rng.normal(size=3), rng.normal(size=3)
    poses = torch.as_tensor(np.stack([make_pose(R1, t1), make_pose(R2, t2)]))
    out = softam(poses, torch.tensor([0.5, 0.5], dtype=torch.float64)).numpy()
    half, _ = cv2.Rodrigues(cv2.Rodrigues(R1.T @ R2)[0] / 2)   # geodesic midpoint R1 exp(log(R1^T R2) / 2)
    assert np.allclose(out[:3, :3], R1 @ half, atol=1e-10)
    assert np.allclose(out[:3, 3], (t1 + t2) / 2, atol=1e-12)
    # a certain selection is that hypothesis
    assert np.allclose(softam(poses, torch.tensor([1.0, 0.0], dtype=torch.float64)).numpy(), poses[0].numpy())


# ------------------------------------------------------------------- (3) differentiable solvers


def test_kabsch_and_pnp_hypotheses_recover_exact_poses():
    pixels, scene, camera, K, T_gt = _problem(6, 8)
    sets = np.stack([np.random.default_rng(i).choice(len(scene), 4, replace=False) for i in range(10)])
    Y = torch.tensor(scene, requires_grad=True)
    for solver in ("kabsch", "pnp"):
        m = make_matches(pixels, Y, K, (6, 8), camera if solver == "kabsch" else None)
        poses = kabsch_hypotheses(m, sets[:, :3]) if solver == "kabsch" else pnp_hypotheses(m, sets)[0]
        assert len(poses) == 10 and poses.requires_grad
        rot, trans = pose_errors(poses.detach().numpy(), T_gt)
        assert rot.max() < 1e-6 and trans.max() < 1e-9, solver
        refined = refine_on_inliers(poses, m, 10.0 if solver == "pnp" else 0.1)
        rot, trans = pose_errors(refined.detach().numpy(), T_gt)
        assert rot.max() < 1e-6 and trans.max() < 1e-9, solver


@pytest.mark.parametrize("selection", ["argmax", "softam", "sample"])
@pytest.mark.parametrize("solver", ["kabsch", "pnp"])
def test_estimate_pose_dsac_rejects_outliers(solver, selection):
    pixels, scene, camera, K, T_gt = _problem(10, 12, noise=0.003, outliers=40)
    res = estimate_pose_dsac(pixels, scene, K, (10, 12), camera if solver == "kabsch" else None,
                             DSACConfig(score="soft-inliers"), selection=selection, hypotheses=64, rng=0)
    assert res.success, res.failure
    rot, trans = pose_errors(res.pose, T_gt)
    assert rot < 0.5 and trans < 0.02 and 70 <= res.n_inliers <= 85, (rot, trans, res.n_inliers)


# --------------------------------------------------------------------------- (4) fine-tuning


def _copy_map(tiny_map, tmp_path):
    out = tmp_path / "map"
    shutil.copytree(tiny_map, out)
    for name in ("coordinates_dsac.pt", "score.pt", "dsac_config.json", "dsac_report.json"):
        (out / name).unlink(missing_ok=True)
    return out


@pytest.mark.slow
def test_finetuning_lowers_expected_pose_loss(tiny_map, overfit_scene, tmp_path):
    the_map = _copy_map(tiny_map, tmp_path)
    base = (the_map / "coordinates.pt").read_bytes()
    # no photometric jitter: the tiny map was over-fitted without it and mispredicts jittered images
    config = DSACConfig(iterations=30, hypotheses=32, lr_score=1e-3, aug_brightness=0.0, aug_contrast=0.0)
    report = finetune_dsac(overfit_scene, the_map, config, log=lambda *a: None)
    assert report["steps"] >= 25
    assert report["final_expected_loss"] < 0.9 * report["initial_expected_loss"], report
    assert (the_map / "coordinates.pt").read_bytes() == base
    assert json.loads((the_map / "dsac_config.json").read_text())["score"] == "cnn"
    frame = load_scene(overfit_scene).frames("train")[0]
    m = Map.load(the_map)
    for method in ("dsac", "softam"):
        res = m.localize(frame.load_image(), estimator=PoseConfig(method=method, min_inliers=20),
                         rng=np.random.default_rng(0))
        assert res.success, res.failure
        rot, trans = pose_errors(res.pose, frame.pose)
        assert rot < 5 and trans < 0.05, (method, rot, trans)


# ---------------------------------------------------------------------------------- (5) the CLI


@pytest.mark.slow
def test_cli_stage_dsac_then_localize(tiny_map, overfit_scene, tmp_path, capsys):
    the_map = _copy_map(tiny_map, tmp_path)
    base = (the_map / "coordinates.pt").read_bytes()
    stage = ["map", str(overfit_scene), str(the_map), "--stage", "dsac", "--iterations", "4", "--hypotheses", "16"]
    assert main(stage) == 0
    for name in ("coordinates_dsac.pt", "score.pt", "dsac_config.json", "dsac_report.json"):
        assert (the_map / name).exists(), name
    assert (the_map / "coordinates.pt").read_bytes() == base
    first = {name: torch.load(the_map / name) for name in ("coordinates_dsac.pt", "score.pt")}
    capsys.readouterr()

    assert main(stage) == 2  # the stage exists: not without --force
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--force" in err[0], err
    assert main(stage + ["--force", "--score", "soft-inliers"]) == 0
    assert not (the_map / "score.pt").exists()  # a soft-inlier stage has no Score CNN
    assert main(stage + ["--force"]) == 0
    for name, weights in first.items():  # seeded: the same run gives the same weights
        again = torch.load(the_map / name)
        assert all(torch.equal(weights[k], again[k]) for k in weights), name
    capsys.readouterr()

    frames = load_scene(overfit_scene).frames("train")
    for method in ("dsac", "softam"):
        out = tmp_path / f"{method}.txt"
        assert main(["localize", str(the_map), str(overfit_scene), "--split", "train", "--method", method,
                     "--min-inliers", "20", "--out", str(out)]) == 0
        recs = read_pose_file(out)
        assert [r.image for r in recs] == [f.name for f in frames]
        assert f"--method {method}" in out.read_text().splitlines()[0]
        for r, f in zip(recs, frames, strict=True):
            assert r.pose is not None and pose_errors(r.pose, f.pose)[1] < 0.05, method


@pytest.mark.slow
def test_cli_dsac_without_stage_is_a_one_line_error(tiny_map, overfit_scene, tmp_path, capsys):
    the_map = _copy_map(tiny_map, tmp_path)
    frame = load_scene(overfit_scene).frames("train")[0]
    out = tmp_path / "p.txt"
    assert main(["localize", str(the_map), str(overfit_scene), "--split", "train", "--method", "dsac",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--stage dsac" in err[0], err
    assert not out.exists()
    # the soft inlier score needs no weights: it runs on the base network
    assert main(["localize", str(the_map), "--image", str(frame.image_path), "--method", "softam",
                 "--dsac-score", "soft-inliers", "--min-inliers", "20"]) == 0
    # a stage whose weights went missing
    assert main(["map", str(overfit_scene), str(the_map), "--stage", "dsac", "--iterations", "1",
                 "--hypotheses", "8"]) == 0
    (the_map / "score.pt").unlink()
    capsys.readouterr()
    assert main(["localize", str(the_map), "--image", str(frame.image_path), "--method", "dsac"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "score.pt" in err[0] and "missing" in err[0], err


@pytest.mark.slow
def test_evaluate_with_dsac_soft_inliers_scores_its_own_pose_file(tiny_map, overfit_scene, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["evaluate", str(tiny_map), str(overfit_scene), "--split", "train", "--mode", "rgbd",
                 "--method", "dsac", "--dsac-score", "soft-inliers", "--min-inliers", "20", "--out", str(out),
                 "--quiet"]) == 0
    capsys.readouterr()
    m = json.loads((out / "metrics.json").read_text())
    assert m["pose_source"] == "localized (dsac)"
    frames = load_scene(overfit_scene).frames("train")
    recs = read_pose_file(out / "poses.txt")
    errors = [pose_errors(r.pose, f.pose) for r, f in zip(recs, frames, strict=True)]
    assert m["frames"] == len(frames) and m["failures"] == 0
    assert m["median_translation_m"] == pytest.approx(float(np.median([e[1] for e in errors])), abs=1e-5)
    assert m["median_translation_m"] < 0.05  # the over-fitted training frames localize
