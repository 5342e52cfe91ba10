"""Whose camera the mapping poses are (``MappingConfig.pose_camera``): on a map of the colour camera's poses,
an RGB-D query's pose is the image's, started from the depth's; on a map of the depth camera's (the default)
it is the depth's. Exact synthetic geometry: a room corner, the depth camera 2.5 cm beside the colour one
and its depth read on the colour pixel grid as it is (no baseline), as 7-Scenes' Kinect gives it."""

import json
import shutil

import numpy as np
import pytest
import torch
from test_depth_evidence import HW, K, corner_depth, corner_pose, network_matches

from sceneloc.data.dataset import load_scene
from sceneloc.errors import SceneLocError
from sceneloc.geometry import make_pose, pose_errors, solve_pnp
from sceneloc.mapping.build import map_scene
from sceneloc.mapping.scene_map import Map, Prediction
from sceneloc.pose.estimate import PoseConfig, estimate_pose
from sceneloc.training.trainers import MappingConfig

#: the depth camera in the colour camera's frame: 2.5 cm to its right, as a Kinect's
RIG = make_pose(np.eye(3), np.array([0.025, 0.0, 0.0]))


def corner_map(pose_camera: str) -> Map:
    config = {"format_version": 3, "network": {"arch": "xfeat"}, "input_height": HW[0], "image_size": list(HW),
              "intrinsics": K.tolist(), "normalisation": {"center": [0.0, 0.0, 0.0], "scale": 1.0},
              "pose_camera": pose_camera}
    return Map(config, torch.nn.Identity(), device="cpu")   # localize(prediction=...): no network runs


def corner_query():
    """The colour image's exact matches, and the depth camera's depth read on the colour pixel grid."""
    T_colour = corner_pose()
    pixels, scene = network_matches(T_colour, corner_depth(T_colour))
    prediction = Prediction(pixels.reshape(1, -1, 2), scene.reshape(1, -1, 3), None, 0.0)
    return T_colour, prediction, corner_depth(T_colour @ RIG).astype(np.float32)


@pytest.mark.parametrize("pose_camera", ["colour", "depth"])
def test_an_rgbd_pose_is_the_camera_the_map_was_made_for(pose_camera):
    T_colour, prediction, depth = corner_query()
    image = np.zeros((*HW, 3), np.uint8)   # the map has no scene view: the image's pixels are not read
    config = PoseConfig(depth_image_offset_max_px=0)
    res = corner_map(pose_camera).localize(image, depth, K, estimator=config, prediction=prediction,
                                           rng=np.random.default_rng(0))
    rot, trans = pose_errors(res.pose, T_colour)
    if pose_camera == "colour":   # the image's pose: exact, where the depth alone is centimetres off
        assert rot < 0.01 and trans < 1e-4, (rot, trans)
        assert res.inliers == len(prediction.pixels.reshape(-1, 2)) and res.depth_offset_m == 0.0
    else:                         # the depth's pose: near the depth camera's, not the colour camera's
        assert trans > 0.01
        depth_trans = pose_errors(res.pose, T_colour @ RIG)[1]
        assert depth_trans < trans


def test_estimate_pose_from_a_given_pose_is_the_image_pose():
    T_colour, prediction, _ = corner_query()
    pixels, scene = prediction.pixels.reshape(-1, 2), prediction.coords.reshape(-1, 3)
    scene = scene.copy()
    scene[::10] += np.array([1.5, -1.0, 0.8])   # a tenth of the matches wrong by two metres
    start = T_colour @ make_pose(np.eye(3), np.array([0.025, 0.01, -0.01]))
    res = estimate_pose(pixels, scene, K, start_T_wc=start, rng=0)
    rot, trans = pose_errors(res.pose, T_colour)
    assert rot < 0.01 and trans < 1e-4
    assert res.n_inliers == len(pixels) - len(pixels[::10])
    ref = solve_pnp(np.delete(scene, np.s_[::10], 0), np.delete(pixels, np.s_[::10], 0), K)
    assert pose_errors(res.pose, ref)[1] < 1e-4
    # a start that explains nothing gives no pose, never a wrong one
    far = estimate_pose(pixels, scene, K, start_T_wc=T_colour @ make_pose(np.eye(3), np.array([2.0, 0, 0])), rng=0)
    assert far.pose is None and "inliers" in far.failure


def test_the_dataset_says_whose_camera_its_poses_are_unless_the_option_does(overfit_scene, tmp_path):
    data = tmp_path / "scene"
    shutil.copytree(overfit_scene, data, symlinks=True)
    cfg = dict(arch="fcn", width=8, input_height=96, iterations=2, batch_size=2, confidence=False)
    quiet = dict(device="cpu", evaluate_test=False, log=lambda *a: None)
    made = lambda name: json.loads((tmp_path / name / "config.json").read_text())["pose_camera"]   # noqa: E731
    map_scene(data, tmp_path / "plain", MappingConfig(**cfg), **quiet)
    (data / "pose-camera.txt").write_text("colour\n")
    assert load_scene(data).pose_camera == "colour"
    map_scene(data, tmp_path / "said", MappingConfig(**cfg), **quiet)
    map_scene(data, tmp_path / "told", MappingConfig(pose_camera="depth", **cfg), **quiet)
    assert (made("plain"), made("said"), made("told")) == ("depth", "colour", "depth")
    (data / "pose-camera.txt").write_text("infrared\n")
    with pytest.raises(SceneLocError, match="pose-camera.txt: says 'infrared'"):
        map_scene(data, tmp_path / "bad", MappingConfig(**cfg), **quiet)


def test_the_pose_camera_is_stored_and_checked(tiny_map, overfit_scene, tmp_path):
    assert Map.load(tiny_map).pose_camera == "depth"           # the default, and maps from before it
    bad = tmp_path / "map"
    shutil.copytree(tiny_map, bad)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "pose_camera": "infrared"}))
    with pytest.raises(SceneLocError, match="pose_camera"):
        Map.load(bad)
    (bad / "config.json").write_text(json.dumps({**config, "pose_camera": "colour"}))
    assert Map.load(bad).pose_camera == "colour"
    with pytest.raises(SceneLocError, match="--pose-camera"):
        map_scene(overfit_scene, tmp_path / "new", MappingConfig(pose_camera="rgb"), log=lambda *a: None)
