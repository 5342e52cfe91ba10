"""The pretrained-encoder map: encoder, training buffer (exact targets under augmentation), head
training, and a tiny map that maps and localizes end to end."""

import json

import numpy as np
import pytest
import torch

from sceneloc.data.dataset import load_scene
from sceneloc.errors import SceneLocError
from sceneloc.geometry import (
    backproject,
    invert_pose,
    pose_errors,
    project,
    reprojection_errors,
    transform_points,
)
from sceneloc.mapping.build import map_scene
from sceneloc.mapping.scene_map import Map
from sceneloc.nets.encoders import encoder_identity, load_encoder, use_bf16
from sceneloc.nets.models import CoordinateHead, EncoderHeadNet, SceneNormalisation, build_coordinate_network
from sceneloc.pose.calibration import PoseCalibration
from sceneloc.pose.config import PoseConfig, inlier_settings
from sceneloc.synth.dataset import SensorOptions, generate
from sceneloc.training.buffer import (
    PixelBuffer,
    augmentation_matrix,
    cell_source_pixels,
    entries_for_memory,
    fill_buffer,
    novel_view,
    resize_matrix,
)
from sceneloc.training.head import WeightAverage, head_loss, reprojection_error, train_head
from sceneloc.training.trainers import MappingConfig


@pytest.fixture(scope="module")
def net() -> EncoderHeadNet:
    return EncoderHeadNet("xfeat", head_width=32, head_blocks=1)


def test_encoder_loads_offline_with_documented_shape():
    enc = load_encoder("xfeat")
    with torch.no_grad():
        f = enc(torch.rand(2, 3, 96, 128))
    assert f.shape == (2, 256, 12, 16)
    assert torch.isfinite(f).all() and f.std() > 0.1
    assert not any(p.requires_grad for p in enc.parameters())
    ident = encoder_identity("xfeat")
    assert ident["name"] == "xfeat" and len(ident["weights_sha256"]) == 64


def test_encoder_is_frozen_and_outside_the_state_dict(net):
    keys = set(net.state_dict())
    assert keys and all(k.startswith("head.") for k in keys)
    assert all(p.requires_grad for p in net.parameters())
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in net.head.parameters())
    out = net(torch.rand(1, 3, 64, 96))
    assert out.shape == (1, 3, 8, 12)


def test_wrong_encoder_weights_are_refused():
    with pytest.raises(SceneLocError, match="encoder weights"):
        load_encoder("xfeat", expected_sha256="0" * 64)
    with pytest.raises(SceneLocError, match="unknown encoder"):
        encoder_identity("resnet")


def test_cell_source_pixels_closed_form():
    # no resize, no augmentation: cell j looks at pixel 8 j + 3.5
    M = resize_matrix((64, 96), (64, 96))
    uv = cell_source_pixels(M, (8, 12), 8)
    assert np.allclose(uv[2, 5], [8 * 5 + 3.5, 8 * 2 + 3.5])
    # zoom by s about the input centre c: source = c + (p - c) / s
    s, c = 1.25, np.array([(96 - 1) / 2, (64 - 1) / 2])
    uv = cell_source_pixels(augmentation_matrix((64, 96), s, 0.0) @ M, (8, 12), 8)
    p = np.array([8 * 5 + 3.5, 8 * 2 + 3.5])
    assert np.allclose(uv[2, 5], c + (p - c) / s)
    # a 90 degree roll of a square image maps the top-left cell onto a corner of the original
    uv = cell_source_pixels(augmentation_matrix((64, 64), 1.0, 90.0), (8, 8), 8)
    assert np.allclose(np.sort(uv[0, 0]), [3.5, 64 - 1 - 3.5])
    # halving the resolution: input pixel p is full-resolution pixel 2 p + 0.5
    uv = cell_source_pixels(resize_matrix((128, 192), (64, 96)), (8, 12), 8)
    assert np.allclose(uv[0, 0], [2 * 3.5 + 0.5] * 2)


@pytest.mark.parametrize("novel_views", [0, 1])
def test_buffer_targets_project_onto_their_source_pixels(tiny_scene, net, novel_views):
    frames = load_scene(tiny_scene).frames("train")[:3]
    buf = fill_buffer(frames, net, input_height=96, entries=3000, copies=3, seed=0, aug_scale=1.5,
                      aug_rotation_deg=20.0, aug_brightness=0.2, aug_contrast=0.2, novel_views=novel_views)
    assert len(buf) > 1000 and buf.features.dtype == torch.float16 and buf.features.shape[1] == 256
    assert set(buf.frames.unique().tolist()) == {0, 1, 2}
    f = buf.frames.long()
    px, front = reprojection_error(buf.targets, buf.T_cw[f], buf.K[f], buf.pixels)
    assert front.all() and px.max() < 1e-2
    # and each target is the scene point of the nearest depth pixel on that ray
    for i in torch.randint(len(buf), (20,)).tolist():
        fd = frames[int(f[i])].load()
        u, v = buf.pixels[i].tolist()
        z = fd.depth[int(round(v)), int(round(u))]
        X_c = np.linalg.inv(fd.pose) @ np.append(buf.targets[i].numpy(), 1.0)
        assert abs(X_c[2] - z) < 1e-4


def test_buffer_is_reproducible(tiny_scene, net):
    frames = load_scene(tiny_scene).frames("train")[:2]
    a = fill_buffer(frames, net, 96, 500, 2, seed=3)
    b = fill_buffer(frames, net, 96, 500, 2, seed=3)
    assert torch.equal(a.targets, b.targets) and torch.equal(a.features, b.features)


def test_entries_for_memory():
    assert entries_for_memory(1.0, 256) == 2 ** 20 // (512 + 24)


def test_head_loss_hand_computed():
    pred = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    target = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 20.0]])  # errors 5 m and 20 m
    loss = head_loss("euclidean", pred, target, None, None, 0.0)
    assert loss.item() == pytest.approx((5.0 + np.sqrt(5.0 * 20.0)) / 2)
    with pytest.raises(SceneLocError, match="unknown head loss"):
        head_loss("l7", pred, target, None, None, 0.0)


def test_reprojection_error_closed_form():
    K = torch.tensor([[[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]]])
    T_cw = torch.tensor([[[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 1.0]]])  # camera 1 m behind the origin
    X = torch.tensor([[0.1, -0.2, 1.0]])                                        # depth 2 m
    px, front = reprojection_error(X, T_cw, K, torch.tensor([[55.0, 30.0]]))
    assert front.item() and px.item() == pytest.approx(0.0, abs=1e-5)
    px, front = reprojection_error(torch.tensor([[0.0, 0.0, -1.5]]), T_cw, K, torch.tensor([[50.0, 40.0]]))
    assert not front.item()


def test_head_fits_a_buffer(tiny_scene, net):
    frames = load_scene(tiny_scene).frames("train")[:2]
    buf = fill_buffer(frames, net, 96, 2000, 1, seed=0)
    norm = SceneNormalisation(tuple(buf.targets.mean(0).tolist()), 2.0)
    head = EncoderHeadNet("xfeat", head_width=64, head_blocks=1)
    before = torch.linalg.vector_norm(norm.scale * head.head(buf.features.float()) +
                                      torch.tensor(norm.center) - buf.targets, dim=1).median()
    budget = train_head(head, norm, buf, minutes=None, iterations=150, batch=512, lr=3e-3)
    after = torch.linalg.vector_norm(norm.scale * head.head(buf.features.float()) +
                                     torch.tensor(norm.center) - buf.targets, dim=1).median()
    assert budget.step == 150 and after < 0.5 * before


@pytest.mark.slow
def test_tiny_xfeat_map_maps_and_localizes(overfit_scene, tmp_path):
    cfg = MappingConfig(arch="xfeat", head_width=64, head_blocks=1, input_height=128, buffer_mb=4, buffer_copies=2,
                        iterations=300, pixel_batch=1024, confidence_minutes=0.05)
    map_scene(overfit_scene, tmp_path / "map", cfg, device="cpu", evaluate_test=False, log=lambda *a: None)
    config = json.loads((tmp_path / "map" / "config.json").read_text())
    assert config["format_version"] == 3 and config["network"]["arch"] == "xfeat"
    assert config["network"]["encoder_sha256"] == encoder_identity("xfeat")["weights_sha256"]
    assert (tmp_path / "map" / "coordinates.pt").stat().st_size < 200_000  # the head alone
    report = json.loads((tmp_path / "map" / "mapping_report.json").read_text())
    assert report["scene_surface"]["points"] > 50 and (tmp_path / "map" / "scene_cloud.npz").exists()
    the_map = Map.load(tmp_path / "map")
    assert the_map.cloud is not None and len(the_map.cloud.points) == report["scene_surface"]["points"]
    frame = load_scene(overfit_scene).frames("train")[0]
    res = the_map.localize(frame.load_image(), depth=frame.load_depth(), estimator="ransac",
                           rng=np.random.default_rng(0))
    assert res.success, res.failure
    rot, trans = pose_errors(res.pose, frame.pose)
    assert rot < 5 and trans < 0.05, (rot, trans)


def test_map_with_other_encoder_weights_fails_in_one_line(overfit_scene, tmp_path):
    cfg = MappingConfig(arch="xfeat", head_width=16, head_blocks=0, input_height=64, buffer_mb=1, buffer_copies=1,
                        iterations=2, pixel_batch=64, confidence=False)
    map_scene(overfit_scene, tmp_path / "map", cfg, device="cpu", evaluate_test=False, log=lambda *a: None)
    path = tmp_path / "map" / "config.json"
    config = json.loads(path.read_text())
    config["network"]["encoder_sha256"] = "f" * 64
    path.write_text(json.dumps(config))
    with pytest.raises(SceneLocError, match="re-map"):
        Map.load(tmp_path / "map")


def test_version_1_maps_still_load(tiny_map):
    path = tiny_map / "config.json"
    config = json.loads(path.read_text())
    assert config["network"]["arch"] == "fcn"
    config["format_version"] = 1
    path.write_text(json.dumps(config))
    try:
        assert Map.load(tiny_map).config["format_version"] == 1
    finally:
        config["format_version"] = 3
        path.write_text(json.dumps(config))


def test_map_of_unregistered_7scenes_images_is_refused(tiny_map):
    """Before format 3, 7-Scenes images were learned with the depth camera's 585 px: such a map is one
    line and a re-map, never a wrong pose; the same camera in a format-3 map (e.g. a rendered scene) loads."""
    path = tiny_map / "config.json"
    config = json.loads(path.read_text())
    saved = dict(config)
    config.update(format_version=2, image_size=[480, 640],
                  intrinsics=[[585.0, 0.0, 320.0], [0.0, 585.0, 240.0], [0.0, 0.0, 1.0]])
    path.write_text(json.dumps(config))
    try:
        with pytest.raises(SceneLocError, match="config.json: this map learned 7-Scenes images with the depth"):
            Map.load(tiny_map)
        config["format_version"] = 3
        path.write_text(json.dumps(config))
        assert Map.load(tiny_map).config["format_version"] == 3
    finally:
        path.write_text(json.dumps(saved))


def test_build_network_unknown_arch():
    with pytest.raises(ValueError, match="xfeat"):
        build_coordinate_network({"arch": "vit"})


def _one_frame_buffer(T_cw: torch.Tensor, K: torch.Tensor, uv: torch.Tensor, target: torch.Tensor):
    n = len(uv)
    return PixelBuffer(torch.zeros(n, 4, dtype=torch.float16), target, uv, torch.zeros(n, dtype=torch.int32),
                       T_cw[None], K[None])


def test_rgb_only_loss_hand_computed():
    K = torch.tensor([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]])
    T_cw = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]])   # camera at the origin
    uv = torch.tensor([[60.0, 40.0], [50.0, 40.0]])
    no_target = torch.full((2, 3), float("nan"))
    buf = _one_frame_buffer(T_cw, K, uv, no_target)
    idx = torch.arange(2)
    # entry 0: in front, projects 10 px left of its pixel; entry 1: behind the camera (invalid)
    pred = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, -1.0]])
    loss = head_loss("euclidean", pred, no_target, buf, idx, fraction=1.0, reprojection_weight=0.005,
                     min_px=1.0, max_px=50.0, prior_depth_m=3.0)
    tau = 1.0  # at the end of training
    valid_term = 0.005 * tau * np.tanh(10.0 / tau)
    invalid_term = 4.0  # distance from (0, 0, -1) to the prior point (0, 0, 3) on pixel (50, 40)'s ray
    assert loss.item() == pytest.approx((valid_term + invalid_term) / 2, rel=1e-5)
    # with depth targets the Euclidean loss alone (plain 'euclidean')
    target = torch.tensor([[0.1, 0.0, 2.0], [0.0, 0.0, 3.0]])
    loss = head_loss("euclidean", pred, target, buf, idx, fraction=1.0)
    assert loss.item() == pytest.approx((0.1 + 4.0) / 2, rel=1e-5)


@pytest.mark.slow
def test_rgb_only_map_learns_consistent_geometry(overfit_scene, tmp_path):
    """A dataset without depth maps: the head learns from the poses alone (reprojection)."""
    import shutil
    data = tmp_path / "rgb_only"
    shutil.copytree(overfit_scene, data, ignore=shutil.ignore_patterns("*.depth.png"))
    scene = load_scene(data)
    assert all(f.depth_path is None for f in scene.frames("train"))
    cfg = MappingConfig(arch="xfeat", head_width=64, head_blocks=1, input_height=128, buffer_mb=4, buffer_copies=2,
                        iterations=400, pixel_batch=1024)
    logs = []
    map_scene(data, tmp_path / "map", cfg, device="cpu", log=logs.append)
    assert any("RGB-only" in line for line in logs) and any("skipped" in line for line in logs)
    the_map = Map.load(tmp_path / "map")
    assert the_map.confidence_net is None and the_map.config["supervision"] == "reprojection"
    frame = scene.frames("train")[0]
    # such a map localizes at 15 px (at a 525 px focal length), not the depth maps' 20: its inliers are those
    res = the_map.localize(frame.load_image(), estimator="ransac", rng=np.random.default_rng(0))
    if res.pose is not None:
        err = reprojection_errors(res.pose, res.coords.reshape(-1, 3), res.pixels.reshape(-1, 2), frame.K)
        assert res.inliers == int((err < 15.0 * frame.K[0, 0] / 525.0).sum())
    pred = the_map.predict(frame.load_image())
    K = torch.from_numpy(frame.K).float()
    T_cw = torch.from_numpy(np.linalg.inv(frame.pose)[:3]).float()
    n = pred.coords.reshape(-1, 3).shape[0]
    px, front = reprojection_error(torch.from_numpy(pred.coords.reshape(-1, 3)).float(), T_cw.expand(n, 3, 4),
                                   K.expand(n, 3, 3), torch.from_numpy(pred.pixels.reshape(-1, 2)).float())
    assert front.float().mean() > 0.95 and px.median() < 3.0, (front.float().mean(), px.median())


def test_fcn_still_needs_depth(overfit_scene, tmp_path):
    import shutil
    data = tmp_path / "rgb_only"
    shutil.copytree(overfit_scene, data, ignore=shutil.ignore_patterns("*.depth.png"))
    with pytest.raises(SceneLocError, match="missing depth"):
        map_scene(data, tmp_path / "map", MappingConfig(arch="fcn", iterations=1), log=lambda *a: None)


def test_use_bf16_explicit_and_unknown():
    assert use_bf16("bf16", "cpu") and not use_bf16("fp32", "cpu")
    assert use_bf16("auto", "mps") is False
    with pytest.raises(SceneLocError, match="unknown precision"):
        use_bf16("fp8", "cpu")


def test_head_output_is_fp32_under_bf16_autocast():
    # bf16 keeps ~3 significant digits: the output layer must stay fp32 to resolve millimetres
    head = CoordinateHead(8, 16, 1)
    x = torch.randn(5, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = head(x)
    assert y.dtype == torch.float32
    ref = head(x)
    assert torch.allclose(y, ref, atol=0.05) and not torch.equal(y, ref)


def test_forward_runs_the_head_in_the_precision_it_trained_in():
    net = EncoderHeadNet("xfeat", head_width=32, head_blocks=1, precision="bf16")
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        features = net.features(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            expected = net.regress(features)
        assert torch.equal(net(x), expected)
        net.precision = "fp32"
        fp32 = net(x)
        assert torch.equal(fp32, net.regress(net.features(x)))
    assert fp32.dtype == torch.float32 and not torch.equal(fp32, expected)
    assert torch.allclose(fp32, expected, atol=0.05)


@pytest.mark.slow
def test_map_holds_out_frames_and_calibrates_pose_probabilities(tmp_path):
    data = generate(tmp_path / "room", frames=20, train_sequences=2, test_sequences=1, width=160, height=120,
                    sensor=SensorOptions.clean(), force=True, progress=False)
    cfg = MappingConfig(arch="xfeat", head_width=32, head_blocks=1, input_height=96, buffer_mb=2, buffer_copies=1,
                        iterations=100, pixel_batch=512, confidence=False)
    logged = []
    map_scene(data, tmp_path / "map", cfg, device="cpu", evaluate_test=False, log=logged.append)
    assert any("a head trained without 20 of the 40 training frames localizes 20 of them" in line
               for line in logged), logged
    cal = PoseCalibration.load(tmp_path / "map")
    frame = load_scene(data).frames("test")[0]
    assert set(cal.modes) == {"rgb", "rgbd"} and cal.modes["rgb"].frames == 20
    assert cal.settings == inlier_settings(PoseConfig(), frame.K)   # fitted with the default estimator
    the_map = Map.load(tmp_path / "map")
    res = the_map.localize(frame.load_image(), rng=np.random.default_rng(0))
    assert 0.0 <= res.probability <= 1.0
    assert res.pose is not None or res.probability == 0.0
    other = the_map.localize(frame.load_image(), estimator="random", rng=np.random.default_rng(0))  # not calibrated
    assert np.isnan(other.probability) if other.pose is not None else other.probability == 0.0
    # the same method at another threshold: its inlier counts mean something else
    wider = the_map.localize(frame.load_image(), estimator=PoseConfig(inlier_threshold_px=30.0),
                             rng=np.random.default_rng(0))
    assert np.isnan(wider.probability) if wider.pose is not None else wider.probability == 0.0


def test_weight_average_is_the_mean_of_the_added_steps():
    layer = torch.nn.Linear(2, 1)
    average = WeightAverage(layer)
    average.apply()                                   # nothing added: the weights stay
    with torch.no_grad():
        layer.weight.fill_(5.0)
    average.apply()
    assert torch.all(layer.weight == 5.0)
    for value in (1.0, 2.0, 6.0):
        with torch.no_grad():
            layer.weight.fill_(value)
            layer.bias.fill_(-value)
        average.add()
    average.apply()
    assert torch.allclose(layer.weight, torch.full_like(layer.weight, 3.0))
    assert torch.allclose(layer.bias, torch.full_like(layer.bias, -3.0))


def _plane_view(orbit_deg: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    depth = np.full((48, 64), 2.0)
    depth[10:14, 20:30] = 0.0          # no depth here: nothing to render from
    K = np.array([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]])
    return image, depth, K, novel_view(image, depth, K, np.random.default_rng(seed), orbit_deg)


def test_novel_view_without_orbit_is_the_image():
    image, depth, K, (rendered, source, T_sv) = _plane_view(0.0)
    assert np.allclose(T_sv, np.eye(4))
    v, u = np.mgrid[:48, :64]
    seen = np.isfinite(source[..., 0])
    assert seen.mean() > 0.8 and not seen[11, 25]      # the pixels without depth stay empty
    assert np.allclose(source[seen], np.stack([u, v], -1)[seen], atol=1e-4)
    assert np.array_equal(rendered[seen], image[seen])


def test_novel_view_shows_each_point_where_the_orbited_camera_sees_it():
    image, depth, K, (rendered, source, T_sv) = _plane_view(10.0, seed=3)
    turn = np.degrees(np.arccos((np.trace(T_sv[:3, :3]) - 1) / 2))
    assert 0.1 < turn <= 10.0 and np.linalg.norm(T_sv[:3, 3]) > 0.001
    v, u = np.mgrid[:48, :64]
    seen = np.isfinite(source[..., 0])
    assert seen.mean() > 0.5
    # the source pixel's scene point (the plane at 2 m), in the orbited camera, projects onto the rendered pixel
    X = backproject(source[seen].astype(np.float64), np.full(int(seen.sum()), 2.0), K)
    uv = project(transform_points(invert_pose(T_sv), X), K)
    err = np.linalg.norm(uv - np.stack([u[seen], v[seen]], 1), axis=1)
    # within the half-resolution rendering's rounding; a filled crack at the view's edge is off by a few px
    assert np.median(err) < 0.6 and np.percentile(err, 99) < 1.5
