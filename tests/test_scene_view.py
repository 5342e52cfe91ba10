"""The grey scene view, its rendering and the alignment of an RGB pose to it, on exact synthetic geometry."""

import numpy as np
import pytest

from sceneloc.data.dataset import load_scene
from sceneloc.errors import SceneLocError
from sceneloc.geometry import invert_pose, make_pose, pose_errors, project, transform_points
from sceneloc.mapping.scene_map import Map
from sceneloc.pose.config import PoseConfig
from sceneloc.surface.view import (
    SCENE_VIEW_FILE,
    Rendering,
    SceneView,
    align_image,
    fill_holes,
    gauss_newton_pnp,
    match_rendering,
    refit_robust,
    render_view,
)
from sceneloc.synth.trajectory import look_at

K = np.array([[250.0, 0, 159.5], [0, 250.0, 119.5], [0, 0, 1]])   # 320 x 240: renderings at full size
HW = (240, 320)


def texture(points: np.ndarray) -> np.ndarray:
    """Smooth grey texture ``(N,)`` in [20, 235] at world ``points (N, 3)``: periods of 9-31 cm."""
    x, y, z = points.T
    t = (np.sin(21 * x + 3 * y) + np.sin(17 * y - 9 * z + 1) + np.sin(29 * z + 11 * x + 2)
         + 0.6 * np.sin(53 * (x + y + z)) + 0.5 * np.sin(70 * (x - z) + 4 * y))
    return 127.5 + 107.5 * t / 3.1


def corner_points(spacing: float) -> np.ndarray:
    """Floor z = 0 and walls x = 0, y = 0 over [0, 2] m on a grid at cell centres."""
    g = np.arange(spacing / 2, 2.0, spacing)
    a, b = (m.ravel() for m in np.meshgrid(g, g))
    zero = np.zeros_like(a)
    return np.concatenate([np.stack(p, 1) for p in ((zero, a, b), (a, zero, b), (a, b, zero))])


def corner_scene_view(spacing: float = 0.01) -> SceneView:
    points = corner_points(spacing)
    return SceneView(points.astype(np.float32), np.clip(np.round(texture(points)), 0, 255).astype(np.uint8), spacing)


def camera() -> np.ndarray:
    centre = np.array([2.6, 2.3, 1.6])
    return make_pose(look_at(centre, np.array([0.5, 0.6, 0.4])), centre)


def ray_cast(T_wc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The corner seen by a camera ``T_wc`` with ``K`` at ``HW``: grey image ``(H, W)`` float and world
    hit points ``(H, W, 3)`` (NaN where a ray misses)."""
    v, u = np.mgrid[0:HW[0], 0:HW[1]].astype(np.float64)
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1) @ T_wc[:3, :3].T
    origin = T_wc[:3, 3]
    best = np.full(HW, np.inf)
    for axis in range(3):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = -origin[axis] / rays[..., axis]
        hit = origin + t[..., None] * rays
        others = [a for a in range(3) if a != axis]
        ok = (t > 0) & np.all((hit[..., others] >= 0) & (hit[..., others] <= 2), axis=-1)
        best = np.where(ok & (t < best), t, best)
    points = origin + best[..., None] * rays
    points[~np.isfinite(best)] = np.nan
    grey = np.nan_to_num(texture(points.reshape(-1, 3)).reshape(HW), nan=0.0)
    return grey, points


def nudged(T_wc: np.ndarray, metres: float, degrees: float) -> np.ndarray:
    angle = np.radians(degrees)
    R = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    return make_pose(R @ T_wc[:3, :3], T_wc[:3, 3] + metres * np.array([0.6, -0.8, 0.0]))


def test_render_view_puts_each_point_on_its_nearest_pixel_and_covers_the_surface():
    view, T_wc = corner_scene_view(0.01), camera()
    r = render_view(view, T_wc, K, HW)
    _, hits = ray_cast(T_wc)
    seen = np.isfinite(hits[..., 0])
    assert r.valid.sum() > 0.9 * seen.sum() and (r.valid & ~seen).sum() < 0.01 * seen.sum()
    v, u = np.nonzero(r.valid)
    uv = project(transform_points(invert_pose(T_wc), r.points[v, u].astype(np.float64)), K)
    assert np.abs(uv - np.stack([u, v], 1)).max() <= 0.5 + 1e-3
    # each pixel shows the surface it looks at: its point lies within a cell or two of the ray's hit
    both = seen[v, u]
    assert np.linalg.norm(r.points[v, u][both] - hits[v, u][both], axis=1).max() < 0.03
    # and that point's grey value
    expected = np.clip(np.round(texture(r.points[v, u].astype(np.float64))), 0, 255)
    np.testing.assert_allclose(r.grey[v, u], expected, atol=1.0)


def test_render_view_hides_a_far_surface_behind_a_near_one():
    far = np.stack(np.meshgrid(np.arange(-1, 1, 0.005), np.arange(-1, 1, 0.005)), -1).reshape(-1, 2)
    near = far[(far[:, 0] < 0) & (np.abs(far[:, 1]) < 0.5)] * 0.5   # a smaller patch, left half, at 1 m
    points = np.concatenate([np.c_[far, np.full(len(far), 2.0)], np.c_[near, np.full(len(near), 1.0)]])
    grey = np.r_[np.full(len(far), 200), np.full(len(near), 50)].astype(np.uint8)
    r = render_view(SceneView(points.astype(np.float32), grey, 0.005), np.eye(4), K, HW)
    centre_left = r.points[100:140, 80:150]
    assert r.valid[100:140, 80:150].all() and np.allclose(centre_left[..., 2], 1.0)
    assert (r.grey[100:140, 80:150] == 50).all() and (r.grey[100:140, 200:270] == 200).all()


def test_fill_holes_keeps_valid_pixels_and_fills_holes_smoothly():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, HW).astype(np.float32)
    valid = rng.uniform(size=HW) > 0.3
    valid[50:90, 60:140] = False
    filled = fill_holes(image, valid)
    np.testing.assert_allclose(filled[valid], image[valid], rtol=1e-5)
    assert np.isfinite(filled).all() and filled.min() >= 0 and filled.max() <= 255
    constant = fill_holes(np.full(HW, 42.0, np.float32), valid)
    np.testing.assert_allclose(constant, 42.0, rtol=1e-5)


def test_gauss_newton_pnp_converges_to_the_exact_pose():
    rng = np.random.default_rng(1)
    T_wc = camera()
    _, hits = ray_cast(T_wc)
    pick = np.isfinite(hits[..., 0])
    v, u = np.nonzero(pick)
    sample = rng.choice(len(v), 400, replace=False)
    pixels, points = np.stack([u, v], 1)[sample].astype(np.float64), hits[v, u][sample]
    T_cw = gauss_newton_pnp(pixels, points, K, invert_pose(nudged(T_wc, 0.03, 2.0)), steps=6)
    rot, trans = pose_errors(invert_pose(T_cw), T_wc)
    assert rot < 1e-6 and trans < 1e-8, (rot, trans)


def test_refit_robust_ignores_outliers():
    rng = np.random.default_rng(2)
    T_wc = camera()
    _, hits = ray_cast(T_wc)
    v, u = np.nonzero(np.isfinite(hits[..., 0]))
    sample = rng.choice(len(v), 1000, replace=False)
    pixels, points = np.stack([u, v], 1)[sample].astype(np.float64), hits[v, u][sample]
    wrong = rng.uniform(size=len(pixels)) < 0.3
    pixels[wrong] += rng.uniform(30, 60, size=(wrong.sum(), 2)) * rng.choice([-1, 1], size=(wrong.sum(), 2))
    fit = refit_robust(pixels, points, K, nudged(T_wc, 0.02, 1.0))
    assert fit is not None
    rot, trans = pose_errors(fit[0], T_wc)
    assert rot < 1e-5 and trans < 1e-6, (rot, trans)
    assert fit[1] == (~wrong).sum()
    assert refit_robust(pixels[:20], points[:20], K, T_wc) is None   # too few to trust


def test_match_rendering_measures_an_image_motion():
    grey, hits = ray_cast(camera())
    valid = np.isfinite(hits[..., 0])
    candidates = np.c_[np.nan_to_num(hits).reshape(-1, 3), np.ones(valid.size)].astype(np.float32)
    rendering = Rendering(grey.astype(np.float32), valid, np.arange(valid.size).reshape(HW), candidates,
                          np.zeros(valid.size, np.uint8))
    shifted = np.roll(grey, (1, 3), axis=(0, 1))    # the query: the same picture 3 px right, 1 px down
    pixels, points = match_rendering(rendering, np.clip(shifted * 0.8 + 20, 0, 255).astype(np.uint8))
    assert len(pixels) > 1000
    # where each matched surface point is in the query: its rendered pixel (where it projects), moved
    expected = project(transform_points(invert_pose(camera()), points), K) + np.array([3.0, 1.0])
    assert np.median(np.linalg.norm(pixels - expected, axis=1)) < 0.25


def test_align_image_recovers_the_pose_from_a_few_centimetres_off():
    view, T_wc = corner_scene_view(0.01), camera()
    grey, _ = ray_cast(T_wc)
    image = np.repeat(np.clip(np.round(grey), 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    start = nudged(T_wc, 0.04, 1.5)
    fit = align_image(image, K, start, view)
    assert fit is not None and fit.inliers > 1000
    rot, trans = pose_errors(fit.pose, T_wc)
    assert rot < 0.2 and trans < 0.005, (rot, trans)
    # a rendering that covers too little of the image (looking away from the corner) is refused
    away = make_pose(look_at(T_wc[:3, 3], T_wc[:3, 3] + np.array([1.0, 1.0, 0.2])), T_wc[:3, 3])
    assert align_image(image, K, away, view) is None


def test_scene_view_build_fuses_cells_seen_twice_at_their_centres():
    # one sample cell is seen once (dropped), another twice with grey 10 and 30 (kept, grey 20)
    samples = [(np.array([[0.004, 0.004, 1.004], [0.5, 0.5, 0.5]], np.float32), np.array([10, 99], np.uint8)),
               (np.array([[0.006, 0.001, 1.009]], np.float32), np.array([30], np.uint8))]
    view = SceneView.from_samples(samples, 0.01)
    assert view is not None and len(view.points) == 1
    np.testing.assert_allclose(view.points[0], [0.005, 0.005, 1.005], atol=1e-6)
    assert view.grey[0] == 20
    assert SceneView.from_samples([(np.zeros((0, 3), np.float32), np.zeros(0, np.uint8))]) is None


def test_scene_view_file_round_trip_and_bad_file(tmp_path):
    rng = np.random.default_rng(3)
    cells = np.unique(rng.integers(-150, 150, size=(5000, 3)), axis=0)   # distinct voxels, as mapping fuses
    view = SceneView(((cells + 0.5) * 0.02).astype(np.float32), rng.integers(0, 256, len(cells)).astype(np.uint8), 0.02)
    view.save(tmp_path)
    back = SceneView.load(tmp_path)
    assert back is not None and back.voxel_m == view.voxel_m and len(back.points) == len(view.points)
    order, back_order = np.lexsort(view.points.T), np.lexsort(back.points.T)
    np.testing.assert_allclose(back.points[back_order], view.points[order], atol=1e-6)
    np.testing.assert_array_equal(back.grey[back_order], view.grey[order])
    assert SceneView.load(tmp_path / "elsewhere") is None
    (tmp_path / SCENE_VIEW_FILE).write_bytes(b"not a zip")
    with pytest.raises(SceneLocError, match=SCENE_VIEW_FILE):
        SceneView.load(tmp_path)


def test_map_keeps_its_view_and_aligns_rgb_queries_to_it(tiny_map, overfit_scene, tmp_path):
    the_map = Map.load(tiny_map)
    assert the_map.view is not None    # mapping fused the training depth and images
    frame = load_scene(overfit_scene).frames("train")[0]
    assert the_map.estimator_for(None, frame.K).view_rounds == PoseConfig().view_rounds > 0
    image = frame.load_image()
    aligned = the_map.localize(image, rng=np.random.default_rng(0))
    plain = the_map.localize(image, estimator=PoseConfig(view_rounds=0), rng=np.random.default_rng(0))
    assert aligned.success and plain.success
    assert aligned.timings["refinement_ms"] > plain.timings["refinement_ms"]
    rot, trans = pose_errors(aligned.pose, frame.pose)
    assert rot < 1.0 and trans < 0.02, (rot, trans)
    the_map.view = None
    assert the_map.estimator_for(None, frame.K).view_rounds == 0   # no view: no alignment
    the_map.save(tmp_path / "map")
    assert not (tmp_path / "map" / SCENE_VIEW_FILE).exists()   # a stale view never outlives its map


def test_view_rounds_must_not_be_negative():
    with pytest.raises(ValueError, match="view_rounds"):
        PoseConfig(view_rounds=-1)
