"""Depth as evidence: the image offset a pose shows, re-registering query depth that disagrees with the
image (or falling back to the image's pose), and refinements kept only where they keep the inliers;
exact synthetic geometry (a room corner seen by a 640 x 480 camera)."""

import numpy as np
import pytest
from test_scene_cloud import corner_cloud

from sceneloc.data.dataset import camera_points
from sceneloc.geometry import invert_pose, make_pose, pose_errors, project, solve_pnp, transform_points
from sceneloc.pose.estimate import PoseConfig, estimate_pose
from sceneloc.pose.fit import depth_agreeing_pose, image_offset_px, keeps_inliers, moved_image
from sceneloc.surface.cloud import align_depth, depth_points
from sceneloc.synth.trajectory import look_at

K = np.array([[525.0, 0, 319.5], [0, 525.0, 239.5], [0, 0, 1]])
HW = (480, 640)


def corner_pose() -> np.ndarray:
    """A camera-to-world pose looking into the corner of the floor z = 0 and the walls x = 0, y = 0."""
    centre = np.array([2.6, 2.3, 1.6])
    return make_pose(look_at(centre, np.array([0.4, 0.5, 0.3])), centre)


def corner_depth(T_wc: np.ndarray) -> np.ndarray:
    """``(480, 640)`` metres: the corner's depth along z seen from ``T_wc``, by casting each pixel's ray."""
    v, u = np.mgrid[0:HW[0], 0:HW[1]].astype(np.float64)
    rays_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1)
    rays = rays_cam @ T_wc[:3, :3].T          # world direction of a unit step in camera z
    centre = T_wc[:3, 3]
    best = np.full(HW, np.inf)
    for axis in range(3):                     # planes x = 0, y = 0, z = 0
        with np.errstate(divide="ignore", invalid="ignore"):
            t = -centre[axis] / rays[..., axis]
        hit = centre + t[..., None] * rays
        inside = (t > 0) & np.all((hit > -1e-9) & (hit < 2.0), axis=-1)
        best = np.where(inside & (t < best), t, best)
    return np.where(np.isfinite(best), best, 0.0)


def network_matches(T_wc: np.ndarray, depth: np.ndarray, step: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Exact "network" matches: pixels ``(N, 2)`` on a grid and their world points ``(N, 3)``."""
    v, u = np.mgrid[step // 2:HW[0]:step, step // 2:HW[1]:step]
    pixels = np.stack([u.ravel(), v.ravel()], axis=1).astype(np.float64)
    cam = camera_points(depth, pixels, K)
    ok = np.isfinite(cam).all(axis=1) & (cam[:, 2] > 0)
    return pixels[ok], transform_points(T_wc, cam[ok])


def misregistered(depth: np.ndarray, right_px: int, down_px: int, scale: float = 1.0) -> np.ndarray:
    """Depth moved right and down against the image (and scaled), as a misregistered sensor gives it."""
    return scale * moved_image(depth, np.array([-right_px, -down_px]))


def rgbd_fit(pixels: np.ndarray, scene: np.ndarray):
    """What Map.localize does with a depth map: the RGB-D estimator on the matches with camera points
    from the depth, then the ICP of the depth to the scene's surface (which sees no pixels: depth moved
    against the image turns it)."""
    cloud = corner_cloud()

    def fit(depth: np.ndarray):
        res = estimate_pose(pixels, scene, K, camera_points=camera_points(depth, pixels, K), rng=0)
        aligned = None if res.pose is None else align_depth(depth_points(depth, K), res.pose, cloud)
        return None if aligned is None else (aligned.pose, aligned.offset_m)
    return fit


def test_moved_image_reads_the_pixel_that_far_away():
    image = np.arange(48.0).reshape(6, 8)
    out = moved_image(image, np.array([2.0, -1.0]))
    assert out[1, 0] == image[0, 2] and out[5, 5] == image[4, 7]
    assert (out[0] == 0).all() and (out[:, 6:] == 0).all()      # from outside the image: no depth
    assert np.array_equal(moved_image(image, np.array([0.2, -0.3])), image)   # rounds to whole pixels


def test_image_offset_is_zero_at_the_true_pose_and_the_move_of_a_turned_one():
    T_wc = corner_pose()
    pixels, scene = network_matches(T_wc, corner_depth(T_wc))
    assert np.abs(image_offset_px(pixels, scene, K, T_wc)).max() < 1e-6
    # turn the camera 0.5 deg about its own y axis: every point moves 525 tan(0.5 deg) = 4.6 px along x at
    # the centre, (1 + x^2) times that off it
    a = np.radians(0.5)
    turn = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    turned = T_wc @ make_pose(turn, np.zeros(3))
    offset = image_offset_px(pixels, scene, K, turned)
    assert -1.15 * 525 * np.tan(a) < offset[0] < -525 * np.tan(a) and abs(offset[1]) < 0.3
    # a pose that puts nothing near where the network saw it gives no evidence
    far = T_wc @ make_pose(np.eye(3), np.array([1.0, 0.0, 0.0]))
    assert image_offset_px(pixels, scene, K, far) is None


def test_clean_depth_keeps_its_pose_and_misregistered_depth_is_re_registered():
    T_wc = corner_pose()
    depth = corner_depth(T_wc)
    pixels, scene = network_matches(T_wc, depth)
    fit = rgbd_fit(pixels, scene)
    image_calls = []

    def image_pose():
        image_calls.append(1)
        return solve_pnp(scene, pixels, K), 0.0

    clean = fit(depth)
    pose, _, what = depth_agreeing_pose(depth, clean, fit, image_pose, pixels, scene, K, 4.0, 2)
    assert what == "agrees" and np.array_equal(pose, clean[0]) and not image_calls
    rot, trans = pose_errors(pose, T_wc)
    assert rot < 0.01 and trans < 0.002

    shifted = misregistered(depth, 6, 10)
    start = fit(shifted)
    rot0, trans0 = pose_errors(start[0], T_wc)
    assert rot0 > 0.5 and trans0 > 0.02          # the trap: the depth alone puts the camera centimetres off
    assert np.linalg.norm(image_offset_px(pixels, scene, K, start[0])) > 4.0   # ... and the image says so
    pose, _, what = depth_agreeing_pose(shifted, start, fit, image_pose, pixels, scene, K, 4.0, 2)
    rot, trans = pose_errors(pose, T_wc)
    assert what == "reregistered" and not image_calls
    assert rot < 0.15 and trans < 0.006, (rot, trans)    # from 0.57 deg, 3.6 cm


def test_depth_the_image_still_disagrees_with_falls_back_to_the_image_pose():
    T_wc = corner_pose()
    depth = corner_depth(T_wc)
    pixels, scene = network_matches(T_wc, depth)
    fit = rgbd_fit(pixels, scene)
    from_image = (solve_pnp(scene, pixels, K), 0.0)
    # a re-registration that cannot help (the fit ignores the moved depth): the image's pose wins
    stuck = misregistered(depth, 6, 10, 1.02)
    start = fit(stuck)
    pose, offset, what = depth_agreeing_pose(stuck, start, lambda d: start, lambda: from_image,
                                             pixels, scene, K, 4.0, 2)
    assert what == "image" and pose is from_image[0] and offset == 0.0
    # a depth pose that explains none of the network's matches is no evidence for the depth: the image wins
    far = (T_wc @ make_pose(np.eye(3), np.array([1.0, 0.0, 0.0])), 0.0)
    pose, _, what = depth_agreeing_pose(depth, far, fit, lambda: from_image, pixels, scene, K, 4.0, 2)
    assert what == "image" and pose is from_image[0]
    # no re-registration asked: the image's pose at once, even where re-registering would have helped
    shifted = misregistered(depth, 6, 10)
    _, _, what = depth_agreeing_pose(shifted, fit(shifted), fit, lambda: from_image, pixels, scene, K, 4.0, 0)
    assert what == "image"
    # 0 px would flag every pose; a huge limit none
    _, _, what = depth_agreeing_pose(stuck, start, fit, lambda: from_image, pixels, scene, K, 1e3, 2)
    assert what == "agrees"


def test_a_refinement_is_kept_only_where_it_keeps_the_inliers():
    T_wc = corner_pose()
    pixels, scene = network_matches(T_wc, corner_depth(T_wc))
    # a quarter of the matches are wrong (as a network's are): the inlier count is over the rest
    rng = np.random.default_rng(0)
    wrong = rng.random(len(scene)) < 0.25
    scene = np.where(wrong[:, None], scene + rng.normal(0, 0.5, scene.shape), scene)
    sharpened = T_wc @ make_pose(np.eye(3), np.array([0.002, 0.0, 0.0]))   # 2 mm: the same inliers
    moved_off = T_wc @ make_pose(np.eye(3), np.array([0.25, 0.1, 0.0]))    # 27 cm: most of them lost
    assert keeps_inliers(pixels, scene, K, T_wc, sharpened, 20.0, 0.5)
    assert not keeps_inliers(pixels, scene, K, T_wc, moved_off, 20.0, 0.5)
    assert keeps_inliers(pixels, scene, K, T_wc, moved_off, 20.0, 0.0)     # 0: off
    share = ((np.linalg.norm(project(transform_points(invert_pose(moved_off), scene), K) - pixels, axis=1) < 20).sum()
             / (~wrong).sum())
    assert share < 0.5


def test_pose_config_checks_the_evidence_options():
    assert PoseConfig().depth_image_offset_max_px == 4.0 and PoseConfig().refine_min_inlier_share == 0.5
    with pytest.raises(ValueError, match="depth_image_offset_max_px"):
        PoseConfig(depth_image_offset_max_px=-1.0)
    with pytest.raises(ValueError, match="refine_min_inlier_share"):
        PoseConfig(refine_min_inlier_share=1.5)

