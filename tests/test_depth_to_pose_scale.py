"""Depth whose metre is not the poses' unit (``MappingConfig.depth_to_pose_scale``): the mapping depth and
every RGB-D query's depth are multiplied by the map's scale, so a map of depth recorded in another unit
is the same map, and its queries get the same poses."""

import json
import shutil
from dataclasses import replace

import cv2
import numpy as np
import pytest

from sceneloc.data.dataset import load_scene
from sceneloc.errors import SceneLocError
from sceneloc.mapping.build import map_scene
from sceneloc.mapping.scene_map import Map
from sceneloc.surface.cloud import SceneCloud
from sceneloc.training.trainers import MappingConfig

#: the depth of the copied scene is recorded in units 1.25 times a metre: it reads 1/1.25 of the truth
UNIT = 1.25


@pytest.fixture(scope="module")
def short_depth_scene(overfit_scene, tmp_path_factory):
    """``overfit_scene`` with every depth map divided by ``UNIT`` (rounded to the millimetre)."""
    root = tmp_path_factory.mktemp("short_depth") / "scene"
    shutil.copytree(overfit_scene, root)
    for path in root.rglob("*.depth.png"):
        mm = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(path), np.round(mm / UNIT).astype(np.uint16))
    return root


def test_load_depth_multiplies_by_the_frames_scale(short_depth_scene):
    frame = load_scene(short_depth_scene).frames("train")[0]
    raw = frame.load_depth()
    scaled = replace(frame, depth_to_pose_scale=UNIT).load_depth()
    np.testing.assert_allclose(scaled, raw * UNIT, rtol=1e-6)
    assert scaled.dtype == np.float32 and (scaled[raw == 0] == 0).all()


def test_a_map_of_depth_in_another_unit_is_the_same_surface(overfit_scene, short_depth_scene, tmp_path):
    """The scene surface fused from the short depth with the scale given lies where the true depth's does
    (within the millimetre rounding of the copy), and 20 % off without it."""
    cfg = dict(arch="fcn", width=8, input_height=96, iterations=2, batch_size=2, confidence=False)
    quiet = dict(device="cpu", evaluate_test=False, log=lambda *a: None)
    map_scene(overfit_scene, tmp_path / "true", MappingConfig(**cfg), **quiet)
    map_scene(short_depth_scene, tmp_path / "scaled", MappingConfig(depth_to_pose_scale=UNIT, **cfg), **quiet)
    map_scene(short_depth_scene, tmp_path / "unscaled", MappingConfig(**cfg), **quiet)
    true, scaled, unscaled = (SceneCloud.load(tmp_path / name) for name in ("true", "scaled", "unscaled"))
    assert true is not None and scaled is not None and unscaled is not None
    gap = lambda cloud: np.median(true.tree.query(cloud.points)[0])   # noqa: E731
    assert gap(scaled) < 0.004 < 0.05 < gap(unscaled)
    assert json.loads((tmp_path / "scaled" / "config.json").read_text())["depth_to_pose_scale"] == UNIT


def test_queries_depth_is_multiplied_by_the_maps_scale(tiny_map, overfit_scene):
    """An RGB-D query whose depth reads 1/UNIT of the truth, on a map that says so, gets the pose of the
    true depth on the same map without it."""
    frame = load_scene(overfit_scene).frames("test")[0]
    image, depth = frame.load_image(), frame.load_depth()
    the_map = Map.load(tiny_map, device="cpu")
    truth = the_map.localize(image, depth=depth, intrinsics=frame.K, rng=np.random.default_rng(0))
    the_map.config["depth_to_pose_scale"] = UNIT
    short = the_map.localize(image, depth=depth / np.float32(UNIT), intrinsics=frame.K, rng=np.random.default_rng(0))
    assert truth.pose is not None and short.pose is not None
    np.testing.assert_allclose(short.pose, truth.pose, atol=1e-4)


def test_a_map_with_a_bad_scale_is_refused(tiny_map, tmp_path):
    bad = tmp_path / "map"
    shutil.copytree(tiny_map, bad)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "depth_to_pose_scale": -1}))
    with pytest.raises(SceneLocError, match="depth_to_pose_scale"):
        Map.load(bad)


def test_the_option_must_be_positive(overfit_scene, tmp_path):
    with pytest.raises(SceneLocError, match="--depth-to-pose-scale"):
        map_scene(overfit_scene, tmp_path / "map", MappingConfig(depth_to_pose_scale=0.0), log=lambda *a: None)
