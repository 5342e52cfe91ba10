"""The joint RGB-D estimator (``PoseConfig(method='joint')``, sceneloc.pose.ransac) on exact
synthetic geometry whose query depth is corrupted the way a Kinect's is: shifted against the
image by a few pixels, biased along the rays, or plain wrong."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from sceneloc import geometry as g
from sceneloc.pose.estimate import PoseConfig, estimate_pose
from sceneloc.pose.ransac import gauss_newton_pose, joint_scores, random_subsets

K = g.intrinsics_matrix(585.0, 585.0, 320.0, 240.0)  # 7-Scenes-like 640x480 camera
JOINT = PoseConfig(method="joint")
PNP = PoseConfig(method="ransac")                     # MAGSAC PnP without depth, Kabsch-RANSAC with


def depth_at(uv: np.ndarray) -> np.ndarray:
    """A room seen from inside, depth ``(N,)`` in metres at pixels ``uv (N, 2)``: a slanted back
    wall 3-4 m away and a box 1.5 m away in the middle of the image (depth edges 2 m deep)."""
    z = 3.0 + uv[:, 0] / 640.0 + 0.5 * uv[:, 1] / 480.0
    box = (uv[:, 0] > 220) & (uv[:, 0] < 420) & (uv[:, 1] > 140) & (uv[:, 1] < 340)
    return np.where(box, 1.5, z)


@dataclass
class Frame:
    T_wc: np.ndarray        # (4, 4) ground truth
    pixels: np.ndarray      # (N, 2)
    scene: np.ndarray       # (N, 3) exact for inliers, ~1 m off for outliers
    outlier: np.ndarray     # (N,) bool


def make_frame(seed: int, n: int = 3000, outlier_ratio: float = 0.4) -> Frame:
    rng = np.random.default_rng(seed)
    T_wc = g.make_pose(g.project_to_so3(rng.normal(size=(3, 3))), rng.uniform(-2, 2, 3))
    uv = np.stack([rng.uniform(0, 639, n), rng.uniform(0, 479, n)], axis=1)
    scene = g.transform_points(T_wc, g.backproject(uv, depth_at(uv), K))
    outlier = rng.random(n) < outlier_ratio
    scene[outlier] += rng.normal(scale=1.0, size=(outlier.sum(), 3))
    return Frame(T_wc, uv, scene, outlier)


def query_depth(f: Frame, shift_px=(0.0, 0.0), scale: float = 1.0, offset_m: float = 0.0,
                random_fraction: float = 0.0, seed: int = 0) -> np.ndarray:
    """Camera points ``(N, 3)`` from a depth map registered ``shift_px`` off the image, with depth
    ``scale * z + offset_m`` (a bias along the rays), and ``random_fraction`` of the depths random."""
    rng = np.random.default_rng(seed)
    z = scale * depth_at(f.pixels + np.asarray(shift_px)) + offset_m
    wrong = rng.random(len(z)) < random_fraction
    z[wrong] = rng.uniform(0.5, 5.0, wrong.sum())
    return g.backproject(f.pixels, z, K)


def errors(result, T_wc) -> tuple[float, float]:
    assert result.pose is not None, result.failure
    rot, trans = g.pose_errors(result.pose, T_wc)
    return float(rot), float(trans)


CORRUPTIONS = {
    "shifted-4px": dict(shift_px=(4.0, -3.0)),
    "shifted-and-biased": dict(shift_px=(5.0, 3.0), scale=1.03, offset_m=0.03),
    "30pc-random": dict(random_fraction=0.3),
    "all-corrupt": dict(shift_px=(3.0, 4.0), scale=0.98, offset_m=0.05, random_fraction=0.3),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_joint_recovers_the_exact_pose_whatever_the_depth(corruption):
    f = make_frame(0)
    camera = query_depth(f, **CORRUPTIONS[corruption])
    result = estimate_pose(f.pixels, f.scene, K, camera_points=camera, config=JOINT, rng=0)
    rot, trans = errors(result, f.T_wc)
    assert rot < 0.05 and trans < 0.001, (rot, trans)
    assert abs(result.n_inliers - (~f.outlier).sum()) <= 0.01 * len(f.outlier)
    assert f.outlier[result.used].mean() < 0.01


def test_corrupted_depth_does_mislead_kabsch():
    # The corruption the test above survives is real: Kabsch on that depth is centimetres off.
    f = make_frame(0)
    camera = query_depth(f, **CORRUPTIONS["shifted-and-biased"])
    rot, trans = errors(estimate_pose(f.pixels, f.scene, K, camera_points=camera, config=PNP, rng=0), f.T_wc)
    assert trans > 0.01


def test_joint_with_clean_depth_is_as_accurate_as_kabsch():
    # Noisy predictions (2 cm) and exact depth: depth determines the pose better than the pixels,
    # and the joint refinement must use it (PnP alone is worse here).
    f = make_frame(1)
    rng = np.random.default_rng(1)
    scene = f.scene + rng.normal(scale=0.02, size=f.scene.shape)
    camera = query_depth(f)
    kabsch = errors(estimate_pose(f.pixels, scene, K, camera_points=camera, config=PNP, rng=0), f.T_wc)
    pnp = errors(estimate_pose(f.pixels, scene, K, config=PNP, rng=0), f.T_wc)
    joint = errors(estimate_pose(f.pixels, scene, K, camera_points=camera, config=JOINT, rng=0), f.T_wc)
    assert joint[1] <= 1.1 * kabsch[1] + 1e-4 and joint[0] <= 1.1 * kabsch[0] + 1e-3, (joint, kabsch)
    assert joint[1] < pnp[1], (joint, pnp)


def moved_depth(f: Frame, seed: int, cm: float, deg: float) -> np.ndarray:
    """Camera points of depth captured from a pose ``cm`` / ``deg`` away from the colour image's
    (a Kinect's depth and colour frames are not taken at the same instant)."""
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=3)
    R = g.project_to_so3(g.quaternion_to_matrix(np.r_[np.cos(np.deg2rad(deg) / 2),
                                                      np.sin(np.deg2rad(deg) / 2) * axis / np.linalg.norm(axis)]))
    direction = rng.normal(size=3)
    return g.transform_points(g.make_pose(R, cm / 100 * direction / np.linalg.norm(direction)), query_depth(f))


@pytest.mark.parametrize("depth", ["shifted-and-biased", "moved-3cm-1deg"])
def test_joint_with_misregistered_depth_is_no_worse_than_pnp_on_noisy_predictions(depth):
    f = make_frame(2)
    rng = np.random.default_rng(2)
    scene = f.scene + rng.normal(scale=0.02, size=f.scene.shape)
    camera = (query_depth(f, **CORRUPTIONS[depth]) if depth in CORRUPTIONS else moved_depth(f, 2, 3.0, 1.0))
    pnp = errors(estimate_pose(f.pixels, scene, K, config=PNP, rng=0), f.T_wc)
    kabsch = errors(estimate_pose(f.pixels, scene, K, camera_points=camera, config=PNP, rng=0), f.T_wc)
    joint = errors(estimate_pose(f.pixels, scene, K, camera_points=camera, config=JOINT, rng=0), f.T_wc)
    assert kabsch[1] > 2 * pnp[1]                                # the depth is misleading
    assert joint[1] <= 1.2 * pnp[1] + 1e-3 and joint[0] <= 1.2 * pnp[0] + 0.02, (joint, pnp)


@pytest.mark.parametrize("seed", range(3))
def test_joint_without_depth_is_a_pnp_ransac(seed):
    f = make_frame(3 + seed, outlier_ratio=0.6)
    result = estimate_pose(f.pixels, f.scene, K, config=JOINT, rng=seed)
    rot, trans = errors(result, f.T_wc)
    # Not 1e-9: a few outliers, moved along their pixel's ray, reproject within 10 px and join the fit.
    assert rot < 0.05 and trans < 0.001, (rot, trans)
    assert abs(result.n_inliers - (~f.outlier).sum()) <= 0.01 * len(f.outlier)


def test_missing_depth_rows_are_kept_as_2d_matches():
    f = make_frame(4)
    camera = query_depth(f)
    camera[::2] = np.nan                    # no depth on half the matches
    camera[1::4, 2] = 0.0                   # Kinect's "no depth" is 0
    result = estimate_pose(f.pixels, f.scene, K, camera_points=camera, config=JOINT, rng=0)
    errors(result, f.T_wc)
    assert result.n_inliers >= (~f.outlier).sum() - 0.01 * len(f.outlier)   # every inlier counts, depth or not
    assert np.isin(np.flatnonzero(~f.outlier)[::2], result.used).mean() > 0.99


# ------------------------------------------------------------------------------------ the parts


def test_depth_that_disagrees_with_the_image_is_ignored_and_consistent_depth_is_used():
    from sceneloc.pose.ransac import refine_joint
    f = make_frame(6)
    rng = np.random.default_rng(6)
    scene = f.scene + rng.normal(scale=0.02, size=f.scene.shape)
    start = g.make_pose(g.project_to_so3(np.eye(3) + 0.002 * rng.normal(size=(3, 3))), np.zeros(3)) @ f.T_wc
    T_2d, _ = refine_joint(start, scene, f.pixels, K, None, 10.0, 0.1)
    biased, _ = refine_joint(start, scene, f.pixels, K, query_depth(f, scale=1.03, offset_m=0.03), 10.0, 0.1)
    np.testing.assert_array_equal(biased, T_2d)                   # the gate fell back to PnP
    clean, used = refine_joint(start, scene, f.pixels, K, query_depth(f), 10.0, 0.1)
    assert g.pose_errors(clean, f.T_wc)[1] < 0.7 * g.pose_errors(T_2d, f.T_wc)[1]
    assert f.outlier[used].mean() < 0.002           # the final fit used inliers (an outlier may land within 10 cm)
    # With the gate shut (0), depth is never used.
    shut, _ = refine_joint(start, scene, f.pixels, K, query_depth(f), 10.0, 0.1, depth_gate=0.0)
    np.testing.assert_array_equal(shut, T_2d)


def test_sampling_stops_as_soon_as_a_clean_set_is_certain():
    from sceneloc.pose.ransac import joint_ransac
    f = make_frame(7, outlier_ratio=0.0)
    _, score, drawn = joint_ransac(f.scene, f.pixels, K, query_depth(f), 10.0, 0.1, 64, 1024, 0.9999,
                                   np.random.default_rng(0))
    assert drawn == 64 and score == 2 * len(f.scene)             # every point a 2D and a 3D inlier
    rng = np.random.default_rng(7)
    _, _, drawn = joint_ransac(rng.uniform(-3, 3, (1000, 3)), f.pixels[:1000], K, None, 10.0, 0.1, 64, 320,
                               0.9999, rng)
    assert drawn == 320                                          # no structure: up to the cap


def test_gauss_newton_converges_to_the_exact_pose_with_and_without_depth():
    f = make_frame(8, outlier_ratio=0.0)
    start = g.make_pose(g.project_to_so3(np.eye(3) + 0.02 * np.random.default_rng(8).normal(size=(3, 3))),
                        np.array([0.05, -0.03, 0.04])) @ f.T_wc
    idx = np.arange(len(f.scene))
    for camera in (None, query_depth(f)):
        T = gauss_newton_pose(start, f.scene, f.pixels, K, idx, 1.0, camera, idx[::2], 0.01)
        rot, trans = g.pose_errors(T, f.T_wc)
        assert rot < 1e-7 and trans < 1e-9


@pytest.mark.parametrize("rgbd", [False, True], ids=["rgb", "rgbd"])
def test_frames_without_a_trustworthy_pose_fail_with_a_reason(rgbd):
    rng = np.random.default_rng(9)
    pixels = np.stack([rng.uniform(0, 640, 4800), rng.uniform(0, 480, 4800)], axis=1)
    scene = rng.uniform(-3, 3, (4800, 3))                      # belongs to no pose
    camera = g.backproject(pixels, rng.uniform(1, 4, 4800), K) if rgbd else None
    result = estimate_pose(pixels, scene, K, camera_points=camera, config=JOINT, rng=0)
    assert result.pose is None and "inliers" in result.failure
    few = estimate_pose(pixels[:3], scene[:3], K, camera_points=None if camera is None else camera[:3],
                        config=JOINT, rng=0)
    assert few.pose is None and "valid correspondences" in few.failure


def test_joint_scores_count_2d_and_3d_inliers_separately():
    f = make_frame(10, n=100, outlier_ratio=0.0)
    camera = query_depth(f)
    camera[:30] = np.nan                                       # no depth
    camera[30:40] += 0.5                                       # depth 50 cm off
    n2, n3 = joint_scores(f.T_wc[None], f.scene, f.pixels, K, camera, 10.0, 0.1)
    assert n2[0] == 100 and n3[0] == 60


def test_random_subsets_are_distinct_and_from_the_pool():
    pool = np.array([3, 5, 7, 11, 13])
    subsets = random_subsets(pool, 2000, 4, np.random.default_rng(0))
    assert subsets.shape == (2000, 4) and np.isin(subsets, pool).all()
    assert (np.diff(np.sort(subsets, axis=1), axis=1) > 0).all()


def test_confidences_steer_sampling_to_likely_inliers():
    # 90 % outliers: P3P sets are clean with p = 1e-4, beyond 1024 hypotheses; with confidences
    # that rank inliers higher (noisily, as a network does) a clean set turns up in the first rounds.
    from sceneloc.pose.ransac import joint_ransac
    f = make_frame(11, n=4800, outlier_ratio=0.9)
    rng = np.random.default_rng(11)
    confidence = np.clip(np.where(f.outlier, 0.1, 0.9) + 0.15 * rng.normal(size=len(f.outlier)), 0, 1)
    args = (f.scene, f.pixels, K, None, 10.0, 0.1, 64, 1024, 0.9999)
    _, blind, drawn_blind = joint_ransac(*args, np.random.default_rng(0))
    _, guided, drawn_guided = joint_ransac(*args, np.random.default_rng(0), confidence)
    assert guided >= (~f.outlier).sum() - 10 and drawn_guided < drawn_blind
    result = estimate_pose(f.pixels, f.scene, K, confidence, config=JOINT, rng=0)
    rot, trans = errors(result, f.T_wc)
    assert rot < 0.05 and trans < 0.001
