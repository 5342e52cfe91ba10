"""The scene surface and the ICP of a query's depth to it, against closed forms and exact geometry."""

import numpy as np
import pytest

from sceneloc.data.dataset import load_scene
from sceneloc.errors import SceneLocError
from sceneloc.geometry import invert_pose, make_pose, pose_errors, transform_points
from sceneloc.mapping.scene_map import Map
from sceneloc.pose.config import PoseConfig
from sceneloc.surface.cloud import (
    SCENE_CLOUD_FILE,
    SceneCloud,
    align_depth,
    depth_grid,
    depth_points,
    fuse,
    grid_normals,
)
from sceneloc.synth.trajectory import look_at

K = np.array([[100.0, 0, 80], [0, 100.0, 60], [0, 0, 1]])


def corner_cloud(spacing: float = 0.02) -> SceneCloud:
    """Floor z = 0 and walls x = 0, y = 0 over [0, 2] m, on a regular grid, with exact normals."""
    g = np.arange(0.0, 2.0 + 1e-9, spacing)
    a, b = (m.ravel() for m in np.meshgrid(g, g))
    zero = np.zeros_like(a)
    points = np.concatenate([np.stack(p, 1) for p in ((zero, a, b), (a, zero, b), (a, b, zero))])
    normals = np.repeat(np.eye(3), len(a), axis=0)
    return SceneCloud(points, normals, spacing)


def corner_view(rng: np.random.Generator, n: int = 1500) -> tuple[np.ndarray, np.ndarray]:
    """A camera-to-world pose looking into the corner and camera-frame points on its three planes."""
    centre = np.array([2.6, 2.3, 1.6])
    T_wc = make_pose(look_at(centre, np.array([0.4, 0.5, 0.3])), centre)
    u = rng.uniform(0.05, 1.95, size=(n, 2))
    plane = rng.integers(0, 3, n)
    world = np.zeros((n, 3))
    for k, (i, j) in enumerate(((1, 2), (0, 2), (0, 1))):
        world[plane == k, i], world[plane == k, j] = u[plane == k, 0], u[plane == k, 1]
    camera = transform_points(invert_pose(T_wc), world)
    assert (camera[:, 2] > 0.5).all()
    return T_wc, camera


def nudged(T_wc: np.ndarray, metres: float, degrees: float) -> np.ndarray:
    angle = np.radians(degrees)
    R = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    return make_pose(R @ T_wc[:3, :3], T_wc[:3, 3] + metres * np.array([0.6, -0.8, 0.0]))


def test_grid_normals_of_a_tilted_plane_face_the_camera():
    # the plane z = 2 + 0.5 x seen by a camera at the origin: depth of pixel (u, v) in closed form
    v, u = np.mgrid[0:120, 0:160].astype(float)
    x_over_z = (u - K[0, 2]) / K[0, 0]
    depth = 2.0 / (1.0 - 0.5 * x_over_z)
    points, normals = grid_normals(depth_grid(depth, K, 4))
    expected = np.array([0.5, 0.0, -1.0]) / np.linalg.norm([0.5, 0.0, -1.0])
    assert len(points) == (120 // 4 - 2) * (160 // 4 - 2)
    np.testing.assert_allclose(normals, np.broadcast_to(expected, normals.shape), atol=1e-9)
    np.testing.assert_allclose(points[:, 2], 2.0 + 0.5 * points[:, 0], atol=1e-9)


def test_grid_normals_skip_missing_depth_and_occlusion_edges():
    depth = np.full((40, 40), 2.0)
    depth[:, 20:] = 3.0          # a step of 1 m: an occlusion edge
    depth[5, 5] = 0.0            # a hole
    points, _ = grid_normals(depth_grid(depth, K, 1))
    assert len(points) == 38 * 38 - 2 * 38 - 5   # minus the two edge columns and the hole with its 4 neighbours
    assert not np.any(np.isclose(points[:, 2], 0.0))


def test_fuse_averages_each_voxel_and_drops_single_and_contradicting_samples():
    up, down = np.array([[0.0, 0.0, 1.0]]), np.array([[0.0, 0.0, -1.0]])
    points = [np.array([[0.01, 0.01, 0.01]]), np.array([[0.03, 0.01, 0.01]]), np.array([[0.5, 0.5, 0.5]]),
              np.array([[1.01, 1.01, 1.01]]), np.array([[1.01, 1.01, 1.01]])]
    normals = [up, up, up, up, down]
    P, N = fuse(points, normals, voxel=0.1)
    np.testing.assert_allclose(P, [[0.02, 0.01, 0.01]])   # the lone sample and the flipped pair are gone
    np.testing.assert_allclose(N, up)


def test_align_depth_recovers_the_exact_pose():
    T_wc, camera = corner_view(np.random.default_rng(0))
    cloud = corner_cloud()
    fit = align_depth(camera, nudged(T_wc, 0.05, 1.0), cloud, offset_sigma_m=0.0)   # ~9 cm at the points
    assert fit is not None and fit.offset_m == 0.0 and fit.matched > 0.99
    rot, trans = pose_errors(fit.pose, T_wc)
    assert rot < 1e-6 and trans < 1e-6, (rot, trans)   # exact: the points lie on the surface


def test_align_depth_fits_depth_that_reads_long():
    T_wc, camera = corner_view(np.random.default_rng(1))
    long = camera * ((camera[:, 2:3] + 0.03) / camera[:, 2:3])   # every depth 3 cm long, along its ray
    cloud = corner_cloud()
    rigid = align_depth(long, T_wc, cloud, offset_sigma_m=0.0)
    fitted = align_depth(long, T_wc, cloud, offset_sigma_m=0.05)
    assert rigid is not None and fitted is not None
    assert abs(fitted.offset_m - 0.03) < 1e-3
    assert pose_errors(fitted.pose, T_wc)[1] < 1e-3 < pose_errors(rigid.pose, T_wc)[1]
    known = align_depth(long, T_wc, cloud, offset_sigma_m=0.0, offset_m=0.03)   # an offset known beforehand
    assert known is not None and known.offset_m == 0.03 and pose_errors(known.pose, T_wc)[1] < 1e-6


def test_align_depth_fits_depth_whose_scale_is_off():
    """The corner's three planes meet in one point, about which scaling maps them onto themselves (a
    scale is a translation there): a table top at z = 0.8 m makes the scale observable."""
    T_wc, camera = corner_view(np.random.default_rng(3))
    g = np.arange(0.3, 1.2 + 1e-9, 0.02)
    a, b = (m.ravel() for m in np.meshgrid(g, g))
    table = np.stack([a, b, np.full_like(a, 0.8)], axis=1)
    corner = corner_cloud()
    cloud = SceneCloud(np.concatenate([corner.points, table]),
                       np.concatenate([corner.normals, np.tile([0.0, 0.0, 1.0], (len(table), 1))]), 0.02)
    on_table = np.random.default_rng(4).uniform(0.35, 1.15, size=(500, 2))
    world = np.concatenate([on_table, np.full((500, 1), 0.8)], axis=1)
    camera = np.concatenate([camera, transform_points(invert_pose(T_wc), world)])
    scaled = camera * 1.02                       # a depth camera reading 2 % long: far points move most
    rigid = align_depth(scaled, T_wc, cloud, offset_sigma_m=0.0)
    fitted = align_depth(scaled, T_wc, cloud, offset_sigma_m=0.0, scale_sigma=0.05)
    assert rigid is not None and fitted is not None and rigid.scale_error == 0.0
    assert abs(fitted.scale_error - 0.02 / 1.02) < 1e-3, fitted.scale_error   # 1.02 (1 - k) = 1
    assert pose_errors(fitted.pose, T_wc)[1] < 2e-3 < pose_errors(rigid.pose, T_wc)[1]


def test_align_depth_drops_a_scale_the_scene_does_not_constrain():
    """In the corner alone a scale about the planes' meeting point is a translation: with depth noise
    the fitted scale is not measured, so the gate fits again without it; ungated it runs off."""
    T_wc, camera = corner_view(np.random.default_rng(5))
    noisy = camera * (1 + np.random.default_rng(6).normal(0, 0.003, size=(len(camera), 1)))
    cloud = corner_cloud()
    gated = align_depth(noisy, T_wc, cloud, offset_sigma_m=0.0, scale_sigma=0.05)
    rigid = align_depth(noisy, T_wc, cloud, offset_sigma_m=0.0)
    ungated = align_depth(noisy, T_wc, cloud, offset_sigma_m=0.0, scale_sigma=0.05, scale_min_sigmas=0.0)
    assert gated is not None and rigid is not None and gated.scale_error == 0.0
    np.testing.assert_allclose(gated.pose, rigid.pose)   # the same fit as without a scale
    assert pose_errors(gated.pose, T_wc)[1] < 2e-3
    assert ungated is None or pose_errors(ungated.pose, T_wc)[1] > 2e-3   # None: it moved past the limit


def test_align_depth_refuses_a_start_too_far_to_match():
    T_wc, camera = corner_view(np.random.default_rng(2))
    assert align_depth(camera, nudged(T_wc, 0.0, 40.0), corner_cloud()) is None   # nothing matches within 10 cm


def test_scene_cloud_file_round_trip_and_bad_file(tmp_path):
    cloud = corner_cloud(0.1)
    cloud.save(tmp_path)
    back = SceneCloud.load(tmp_path)
    assert back is not None and back.voxel_m == cloud.voxel_m
    np.testing.assert_allclose(back.points, cloud.points, atol=2e-3)
    np.testing.assert_allclose(back.normals, cloud.normals, atol=1e-2)
    assert SceneCloud.load(tmp_path / "elsewhere") is None
    (tmp_path / SCENE_CLOUD_FILE).write_bytes(b"not a zip")
    with pytest.raises(SceneLocError, match=SCENE_CLOUD_FILE):
        SceneCloud.load(tmp_path)


def test_map_keeps_its_surface_and_aligns_rgbd_queries_to_it(tiny_map, overfit_scene, tmp_path):
    the_map = Map.load(tiny_map)
    assert the_map.cloud is not None    # mapping fused the training depth
    the_map.cloud = None
    assert the_map.estimator_for(None, K).icp_distances_m == ()   # no surface: no ICP
    frames = load_scene(overfit_scene).frames("train")
    the_map.cloud = SceneCloud.build(frames, voxel=0.02, stride=2)
    assert the_map.cloud is not None
    the_map.save(tmp_path / "map")
    loaded = Map.load(tmp_path / "map")
    assert loaded.cloud is not None and len(loaded.cloud.points) == len(the_map.cloud.points)
    assert loaded.estimator_for(None, K).icp_distances_m == PoseConfig().icp_distances_m
    frame = frames[0]
    with_icp = loaded.localize(frame.load_image(), depth=frame.load_depth(), rng=np.random.default_rng(0))
    assert with_icp.success
    rot, trans = pose_errors(with_icp.pose, frame.pose)
    assert rot < 1.0 and trans < 0.01, (rot, trans)
    points = depth_points(frame.load_depth(), frame.K)
    assert len(points) == np.count_nonzero(frame.load_depth()[1::3, 1::3])   # stride 12 at 640 px is 3 at 160
    loaded.cloud = None
    loaded.save(tmp_path / "map")
    assert not (tmp_path / "map" / SCENE_CLOUD_FILE).exists()   # a stale surface never outlives its map
