"""Mapping stage: exact targets and augmentation, over-fitting, save/load, resume, CLI errors."""

import json

import numpy as np
import pytest
import torch

from sceneloc.cli.main import main
from sceneloc.data.dataset import load_scene
from sceneloc.geometry import invert_pose, project, transform_points
from sceneloc.mapping.build import calibration_group, map_scene
from sceneloc.mapping.scene_map import Map
from sceneloc.nets.models import SceneNormalisation, build_coordinate_network, output_pixel_centres
from sceneloc.training.frame_cache import FrameCache, augment
from sceneloc.training.trainers import MappingConfig, coordinate_accuracy, predict_cache, train_coordinates


@pytest.mark.parametrize("arch,stride,input_height", [("unet", 1, 64), ("fcn", 8, 96)])
def test_cached_targets_project_onto_output_pixel_centres(tiny_scene, arch, stride, input_height):
    """Each output cell's target is a scene point on the ray through the cell's full-res centre."""
    frame = load_scene(tiny_scene).frames("train")[0]
    multiple = 16 if arch == "unet" else 8
    cache = FrameCache.build([frame], input_height, stride, multiple)
    uv = output_pixel_centres(cache.masks.shape[1:], stride, (120, 160), cache.images.shape[1:3]).numpy()
    X, m = cache.coords[0][cache.masks[0]], cache.masks[0]
    assert m.mean() > 0.9
    uv_proj = project(transform_points(invert_pose(frame.pose), X.astype(np.float64)), frame.K)
    assert np.abs(uv_proj - uv[m]).max() < 1e-3


def test_augment_identity_and_quarter_turn_are_exact():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    coords = rng.normal(size=(8, 8, 3)).astype(np.float32)
    mask = rng.random((8, 8)) > 0.2
    depth = rng.random((8, 8)).astype(np.float32)
    i2, c2, m2, d2 = augment(img, coords, mask, depth, 1, 1.0, 0.0)
    assert np.array_equal(i2, img) and np.array_equal(c2, coords) and np.array_equal(m2, mask)
    # A 90 degree roll of a square image maps pixel centres onto pixel centres: targets move with it.
    i3, c3, m3, d3 = augment(img, coords, mask, depth, 1, 1.0, 90.0)
    assert np.array_equal(c3, np.rot90(coords, 1, axes=(0, 1)))
    assert np.array_equal(m3, np.rot90(mask, 1)) and np.array_equal(d3, np.rot90(depth, 1))
    assert np.array_equal(i3, np.rot90(img, 1, axes=(0, 1)))


def test_augment_zoom_keeps_targets_with_their_pixels():
    """Zoom by 2 about the centre: output cell q shows input point (q - c) / 2 + c."""
    xs, ys = np.meshgrid(np.arange(16.0), np.arange(16.0), indexing="xy")
    coords = np.stack([xs, ys, np.zeros((16, 16))], -1).astype(np.float32)
    _, c2, m2, _ = augment(np.zeros((16, 16, 3), np.uint8), coords, np.ones((16, 16), bool),
                           np.ones((16, 16), np.float32), 1, 2.0, 0.0)
    c = 7.5
    for q in [(4, 4), (8, 11), (10, 6)]:
        src = ((q[1] - c) / 2 + c, (q[0] - c) / 2 + c)  # (x, y) in the input
        assert abs(c2[q][0] - src[0]) <= 0.5 and abs(c2[q][1] - src[1]) <= 0.5
    assert m2.all()


@pytest.mark.parametrize("arch,width,input_height,bound", [("unet", 8, 64, 0.15), ("fcn", 16, 96, 0.03)])
def test_tiny_model_overfits_one_frame(tiny_scene, arch, width, input_height, bound):
    scene = load_scene(tiny_scene)
    stats = scene.statistics()
    torch.manual_seed(0)
    net = build_coordinate_network({"arch": arch, "width": width})
    cache = FrameCache.build(scene.frames("train")[:1], input_height, net.stride, net.multiple)
    norm = SceneNormalisation(tuple(stats.center), stats.diameter / 2)
    before = coordinate_accuracy(predict_cache(net, norm, cache), cache)["median_error_m"]
    cfg = MappingConfig(arch=arch, width=width, input_height=input_height, iterations=300, batch_size=1,
                        aug_scale=1.0, aug_rotation_deg=0.0, aug_brightness=0.0, aug_contrast=0.0,
                        optimizer="adamw", lr=3e-3, loss="tukey")
    train_coordinates(net, norm, cache, cfg, stats.tukey_c)
    after = coordinate_accuracy(predict_cache(net, norm, cache), cache)["median_error_m"]
    assert before > 0.5 and after < bound, (before, after)


def test_map_directory_round_trip_gives_identical_predictions(tiny_map, overfit_scene):
    frame = load_scene(overfit_scene).frames("test")[0]
    image = frame.load_image()
    m1, m2 = Map.load(tiny_map), Map.load(tiny_map)
    p1, p2 = m1.predict(image), m2.predict(image)
    assert np.array_equal(p1.coords, p2.coords) and np.array_equal(p1.confidence, p2.confidence)
    cfg = json.loads((tiny_map / "config.json").read_text())
    assert cfg["format_version"] == 3 and cfg["network"]["arch"] == "fcn"
    # Everything localize needs is in the directory, nothing from the dataset.
    assert {p.name for p in tiny_map.iterdir()} >= {"config.json", "coordinates.pt", "confidence.pt"}
    report = json.loads((tiny_map / "mapping_report.json").read_text())
    assert report["train"]["median_error_m"] < 0.05 and "test" in report


def test_resume_continues_exactly_where_training_stopped(tiny_scene, tmp_path):
    base = dict(arch="fcn", width=8, input_height=96, batch_size=2, schedule="constant", confidence=False,
                optimizer="rmsprop", lr=1e-3)
    quiet = dict(evaluate_test=False, log=lambda *a: None)
    map_scene(tiny_scene, tmp_path / "straight", MappingConfig(iterations=8, **base), **quiet)
    map_scene(tiny_scene, tmp_path / "resumed", MappingConfig(iterations=4, **base), **quiet)
    map_scene(tiny_scene, tmp_path / "resumed", MappingConfig(iterations=8, **base), resume=True, **quiet)
    a = torch.load(tmp_path / "straight" / "coordinates.pt")
    b = torch.load(tmp_path / "resumed" / "coordinates.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)["step"] == 8
    # ... and differs from a run that stopped after 4 steps.
    map_scene(tiny_scene, tmp_path / "four", MappingConfig(iterations=4, **base), **quiet)
    c = torch.load(tmp_path / "four" / "coordinates.pt")
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_map_cli_refuses_to_overwrite_and_to_resume_nothing(tiny_scene, tmp_path, capsys):
    out = tmp_path / "m"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["map", str(tiny_scene), str(out), "--iterations", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not empty" in err[0] and "--force" in err[0]
    assert (out / "notes.txt").read_text() == "mine"
    assert main(["map", str(tiny_scene), str(tmp_path / "new"), "--resume", "--iterations", "1"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_map_needs_depth(tiny_scene, tmp_path, capsys):
    import shutil
    data = tmp_path / "nodepth"
    shutil.copytree(tiny_scene, data)
    next(data.glob("seq-01/*.depth.png")).unlink()
    # the from-scratch networks need depth everywhere (the default xfeat map learns such frames from poses)
    assert main(["map", str(data), str(tmp_path / "m"), "--arch", "fcn", "--iterations", "1"]) == 2
    assert "missing depth" in capsys.readouterr().err


def test_confidence_stage_retrains_stage_two_only(tiny_map, overfit_scene, tmp_path, capsys):
    import shutil

    import torch

    from sceneloc.cli.main import main
    from sceneloc.mapping.scene_map import Map
    m = tmp_path / "map"
    shutil.copytree(tiny_map, m)
    before = torch.load(m / "coordinates.pt", weights_only=True)
    old_conf = (m / "confidence.pt").read_bytes()
    args = ["map", str(overfit_scene), str(m), "--stage", "confidence", "--confidence-minutes", "0.05"]
    assert main(args) == 2
    assert "already has a confidence network" in capsys.readouterr().err
    # a context-normalised PointNet this time: its architecture travels with the map
    assert main(args + ["--force", "--seed", "3", "--confidence-blocks", "2", "--confidence-mode", "both"]) == 0
    assert (m / "confidence.pt").read_bytes() != old_conf
    after = Map.load(m)
    assert after.confidence_net is not None
    assert len(after.confidence_net.local) == 4 + 2 and after.classifier.arch["blocks"] == 2
    for k, v in before.items():  # the coordinate network is untouched
        assert torch.equal(after.coord_net.state_dict()[k], v)


def test_calibration_group_is_the_last_recording_or_the_middle_third():
    class F:
        def __init__(self, name):
            self.name = name
    frames = [F(f"seq-0{s}/frame-{i:06d}.color.png") for s in (1, 3) for i in range(5)]
    assert calibration_group(frames).tolist() == [5, 6, 7, 8, 9]
    flat = [F(f"img{i}.jpg") for i in range(9)]
    assert calibration_group(flat).tolist() == [3, 4, 5]
