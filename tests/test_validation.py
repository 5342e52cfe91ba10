"""Bad input is one line and exit 2 (or a SceneLocError from the API), checked before any work: each
test here is one item of issue 31's list (budgets, intrinsics, depth units, output paths, broken maps,
pose files, and the everyday oddities around them)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import sceneloc
from sceneloc.cli.main import main
from sceneloc.data.dataset import load_scene
from sceneloc.data.readers import parse_intrinsics
from sceneloc.errors import SceneLocError
from sceneloc.geometry import read_pose_file
from sceneloc.mapping.scene_map import Map
from sceneloc.pose.config import estimator_config
from sceneloc.training.loop import Budget
from sceneloc.validation import check_output_path, depth_in_metres


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("sceneloc: error:") and "\n" not in err, err
    return err


def refused(capsys, argv: list[str], *fragments: str) -> str:
    """``sceneloc argv`` exits 2 with one line holding every fragment."""
    assert main(argv) == 2
    err = one_line_error(capsys)
    for f in fragments:
        assert f in err, err
    return err


# ------------------------------------------------------------------------------------------ budgets


@pytest.mark.parametrize("option, value, fragment", [
    ("--minutes", "-1", "--minutes -1: must be greater than 0"),
    ("--minutes", "0", "--minutes 0: must be greater than 0"),
    ("--iterations", "-5", "--iterations -5: must be greater than 0"),
    ("--iterations", "0", "--iterations 0: must be greater than 0"),
    ("--confidence-minutes", "-1", "--confidence-minutes -1: must be greater than 0 or 0 to skip"),
    ("--buffer-mb", "0", "--buffer-mb 0: must be greater than 0"),
    ("--minutes", "nan", "must be a finite number"),
])
def test_map_budgets_are_refused_before_any_work(tiny_scene, tmp_path, capsys, option, value, fragment):
    out = tmp_path / "map"
    t0 = time.perf_counter()
    refused(capsys, ["map", str(tiny_scene), str(out), "--arch", "fcn", option, value], fragment)
    assert time.perf_counter() - t0 < 5 and not out.exists()   # refused, not trained then failed


def test_demo_negative_minutes_and_the_budget_itself(tmp_path, capsys):
    refused(capsys, ["demo", "--out", str(tmp_path / "d"), "--minutes", "-1"], "--minutes -1")
    assert not (tmp_path / "d").exists()
    # the loop refuses too, whoever builds it (it once ran forever on a negative budget)
    for kwargs in ({"minutes": -1.0}, {"minutes": 0.0}, {"iterations": 0}, {"iterations": -5}):
        with pytest.raises(SceneLocError, match="must be greater than 0"):
            Budget("x", show=False, **kwargs)
    assert Budget("x", iterations=3, show=False).fraction == 0.0


# --------------------------------------------------------------------------------------- intrinsics


def test_intrinsics_take_exactly_four_finite_numbers():
    np.testing.assert_array_equal(parse_intrinsics("585,586,320,240"),
                                  [[585, 0, 320], [0, 586, 240], [0, 0, 1]])
    for spec, fragment in (("585,585,320", "exactly four numbers"), ("585,585,320,240,1", "exactly four"),
                           ("nan,585,320,240", "nan or inf"), ("585,inf,320,240", "nan or inf"),
                           ("-585,585,320,240", "focal lengths must be positive"), ("a,b,c,d", "expected")):
        with pytest.raises(SceneLocError, match=fragment):
            parse_intrinsics(spec)


def test_query_intrinsics_are_checked_against_the_image(tiny_map, overfit_scene, tmp_path, capsys):
    frame = load_scene(overfit_scene).frames("test")[0]
    the_map = Map.load(tiny_map, device="cpu")
    image = frame.load_image()
    K_far = frame.K.copy()
    K_far[0, 2], K_far[1, 2] = 10 * K_far[0, 2], 10 * K_far[1, 2]
    with pytest.raises(SceneLocError, match="principal point .* outside the 160x120 image"):
        the_map.localize(image, intrinsics=K_far)
    K_nan = frame.K.copy()
    K_nan[0, 0] = np.nan
    with pytest.raises(SceneLocError, match="nan or inf"):
        the_map.localize(image, intrinsics=K_nan)
    fx, cx, cy = frame.K[0, 0], frame.K[0, 2], frame.K[1, 2]
    refused(capsys, ["localize", str(tiny_map), "--image", str(frame.image_path), "--intrinsics",
                     f"{fx},{fx},{10 * cx},{10 * cy}"], "outside")
    refused(capsys, ["localize", str(tiny_map), "--image", str(frame.image_path), "--intrinsics",
                     f"{fx},{cx},{cy}"], "exactly four numbers")


def test_import_colmap_refuses_negative_focal_and_a_camera_of_another_size(tmp_path, capsys):
    pytest.importorskip("pycolmap")
    from test_colmap import known_model
    (tmp_path / "neg").mkdir(), (tmp_path / "size").mkdir()
    model_dir, image_dir, _, _ = known_model(tmp_path / "neg", cameras={1: ("PINHOLE", 64, 48, [-60, 62, 32, 24])})
    refused(capsys, ["import", "colmap", str(model_dir), str(image_dir), str(tmp_path / "ds")],
            "focal lengths must be positive")
    model_dir, image_dir, _, _ = known_model(tmp_path / "size", cameras={1: ("PINHOLE", 128, 96, [120, 120, 64, 48])})
    for p in image_dir.rglob("*.png"):   # the images are 64x48, the camera says 128x96
        cv2.imwrite(str(p), np.zeros((48, 64, 3), np.uint8))
    refused(capsys, ["import", "colmap", str(model_dir), str(image_dir), str(tmp_path / "ds")],
            "camera 1 is 128x96 but its image", "is 64x48")
    assert not (tmp_path / "ds").exists()


# -------------------------------------------------------------------------------------------- depth


def test_depth_units_and_plausibility():
    mm = np.full((4, 5), 1500, np.uint16)
    mm[0, 0] = 0
    metres = depth_in_metres(mm, "d")
    assert metres.dtype == np.float32 and metres[1, 1] == pytest.approx(1.5) and metres[0, 0] == 0
    assert depth_in_metres(mm, "d", depth_scale_m=0.0001)[1, 1] == pytest.approx(0.15)
    with pytest.raises(SceneLocError, match="millimetres given as metres"):
        depth_in_metres(mm.astype(np.float32), "d")
    with pytest.raises(SceneLocError, match="no valid depth"):
        depth_in_metres(np.zeros((4, 5), np.float32), "d")
    with pytest.raises(SceneLocError, match="uint16 millimetres or float metres"):
        depth_in_metres(np.ones((4, 5), np.uint8), "d")


def test_millimetre_depth_given_to_localize_is_read_as_millimetres(tiny_map, overfit_scene):
    frame = load_scene(overfit_scene).frames("test")[0]
    the_map = Map.load(tiny_map, device="cpu")
    image, depth_m = frame.load_image(), frame.load_depth()
    depth_mm = cv2.imread(str(frame.depth_path), cv2.IMREAD_ANYDEPTH)   # what a user reads: uint16 mm
    assert depth_mm.dtype == np.uint16
    a = the_map.localize(image, depth=depth_m, estimator="ransac")
    b = the_map.localize(image, depth=depth_mm, estimator="ransac")
    assert a.pose is not None and b.pose is not None
    np.testing.assert_allclose(a.pose, b.pose, atol=1e-6)
    with pytest.raises(SceneLocError, match="no valid depth"):
        the_map.localize(image, depth=np.zeros_like(depth_m))


def test_check_refuses_the_depth_map_refuses(tiny_scene, tmp_path, capsys):
    data = tmp_path / "scene"
    shutil.copytree(tiny_scene, data)
    depth = next(p for p in sorted((data / "seq-01").glob("*.depth.png")))
    good = cv2.imread(str(depth), cv2.IMREAD_ANYDEPTH)
    cv2.imwrite(str(depth), (good // 256).astype(np.uint8))            # 8-bit depth
    refused(capsys, ["check", str(data)], str(depth), "uint16")
    refused(capsys, ["map", str(data), str(tmp_path / "m"), "--arch", "fcn", "--iterations", "1"], "uint16")
    cv2.imwrite(str(depth), cv2.resize(good, (80, 60), interpolation=cv2.INTER_NEAREST))   # wrong size
    refused(capsys, ["check", str(data)], "depth map is 80x60 but its image is 160x120")
    refused(capsys, ["map", str(data), str(tmp_path / "m"), "--arch", "fcn", "--iterations", "1"], "80x60")


def test_one_frame_without_depth_does_not_shrink_the_scene(tiny_scene, tmp_path):
    data = tmp_path / "scene"
    shutil.copytree(tiny_scene, data)
    full = load_scene(data).statistics().diameter
    next(iter(sorted((data / "seq-01").glob("*.depth.png")))).unlink()
    stats = load_scene(data).statistics()
    assert not stats.has_depth
    assert stats.diameter == pytest.approx(full, rel=0.05)   # was the camera centres' extent, a third of it


# ------------------------------------------------------------------------------------- output paths


def test_output_paths_are_checked_before_any_work(tiny_map, overfit_scene, tiny_scene, tmp_path, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    m, d = str(tiny_map), str(overfit_scene)
    refused(capsys, ["localize", m, d, "--out", str(tmp_path)], "is a directory")
    refused(capsys, ["localize", m, d, "--out", str(tmp_path / "no" / "p.txt")], "does not exist")
    refused(capsys, ["localize", m, d, "--out", str(a_file / "p.txt")], "is a file, not a directory")
    refused(capsys, ["localize", m, d, "--out", str(Path(d) / "p.txt")], "inside the input")
    refused(capsys, ["synth", str(a_file / "s")], "is a file")
    refused(capsys, ["map", d, str(a_file / "m"), "--arch", "fcn", "--iterations", "1"], "is a file")
    refused(capsys, ["map", d, str(Path(d) / "map"), "--arch", "fcn", "--iterations", "1"], "inside the input")
    refused(capsys, ["evaluate", m, d, "--out", str(a_file / "r")], "is a file")
    refused(capsys, ["export", m, d, "--out", str(tmp_path)], "is a directory")
    refused(capsys, ["table", str(tmp_path), "--out", str(a_file / "t.md")], "is a file")
    with pytest.raises(SceneLocError, match="exists and is not a directory"):
        check_output_path(a_file, "dir")
    assert not (Path(d) / "p.txt").exists()


# ------------------------------------------------------------------------------------ broken maps


def broken_copy(tiny_map: Path, tmp_path: Path) -> Path:
    out = tmp_path / "map"
    shutil.copytree(tiny_map, out)
    return out


@pytest.mark.parametrize("edit, fragment", [
    (lambda c: c.pop("normalisation"), "lacks 'normalisation'"),
    (lambda c: c.update(network=["fcn"]), "'network' must be a dict"),
    (lambda c: c["network"].update(arch="resnet"), "unknown network arch 'resnet'"),
    (lambda c: c["network"].update(width="wide"), "bad 'network' entry"),
    (lambda c: c["normalisation"].update(scale=-1), "scale > 0"),
    (lambda c: c.update(intrinsics=[[1, 0], [0, 1]]), "intrinsics"),
])
def test_a_map_config_that_cannot_load_names_the_key_and_the_rebuild(tiny_map, tmp_path, edit, fragment):
    d = broken_copy(tiny_map, tmp_path)
    config = json.loads((d / "config.json").read_text())
    edit(config)
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(SceneLocError) as e:
        Map.load(d, device="cpu")
    assert fragment in str(e.value) and f"sceneloc map DATASET {d} --force" in str(e.value)
    assert "\n" not in str(e.value)


def test_a_config_that_is_a_list_and_truncated_map_files(tiny_map, tmp_path, capsys):
    d = broken_copy(tiny_map, tmp_path)
    (d / "config.json").write_text("[1, 2]")
    refused(capsys, ["localize", str(d), "--image", "x.png"], "must be a JSON object")
    shutil.copy(tiny_map / "config.json", d / "config.json")
    for name in ("scene_view.npz", "scene_cloud.npz", "coordinates.pt", "confidence.pt"):
        data = (tiny_map / name).read_bytes()
        (d / name).write_bytes(data[: len(data) // 2])
        with pytest.raises(SceneLocError) as e:
            Map.load(d, device="cpu")
        message = str(e.value)
        assert str(d / name) in message and "--force" in message and "miniz" not in message, message
        (d / name).write_bytes(data)
    Map.load(d, device="cpu")   # restored: loads


# -------------------------------------------------------------------------------------- pose files


def test_pose_files_empty_binary_or_off_unit_quaternions_are_refused(tmp_path):
    p = tmp_path / "p.txt"
    for content, fragment in ((b"", "lists no image"), (b"# only a comment\n", "lists no image"),
                              (b"\x89PNG\r\n\x1a\n\x00\x00", "binary"), (b"\xff\xfe img 1 0", "not UTF-8"),
                              (b"a.png 2 0.5 0.3 0.2 0 0 0\n", "quaternion norm 2.09")):
        p.write_bytes(content)
        with pytest.raises(SceneLocError, match=fragment):
            read_pose_file(p)
    p.write_bytes(b"a.png 1.001 0 0 0 1 2 3\n")   # rounding in a written file: accepted, normalised
    (rec,) = read_pose_file(p)
    np.testing.assert_allclose(rec.pose[:3, :3], np.eye(3), atol=1e-12)


def test_evaluate_refuses_a_pose_file_that_misses_frames(tiny_map, overfit_scene, tmp_path, capsys):
    frames = load_scene(overfit_scene).frames("test")
    p = tmp_path / "poses.txt"
    p.write_text(f"{frames[0].name} 1 0 0 0 0 0 0\n")
    refused(capsys, ["evaluate", str(tiny_map), str(overfit_scene), "--out", str(tmp_path / "r"), "--poses", str(p),
                     "--quiet"], f"lists 1 of the {len(frames)} frames", "--allow-missing")
    p.write_bytes(b"")
    refused(capsys, ["evaluate", str(tiny_map), str(overfit_scene), "--out", str(tmp_path / "r"), "--poses", str(p),
                     "--quiet"], "lists no image")


# ------------------------------------------------------------------------------- the other items


def test_localize_refuses_a_dataset_and_an_image_together(tiny_map, overfit_scene, capsys):
    refused(capsys, ["localize", str(tiny_map), str(overfit_scene), "--image", "x.png"], "DATASET and --image")
    refused(capsys, ["localize", str(tiny_map)], "give a DATASET")


def test_export_keeping_no_point_and_table_of_one_report_twice(tiny_map, overfit_scene, tmp_path, capsys):
    ply = tmp_path / "m.ply"
    refused(capsys, ["export", str(tiny_map), str(overfit_scene), "--out", str(ply), "--min-confidence", "5",
                     "--quiet"], "--min-confidence 5: keeps no point")
    assert not ply.exists()
    report = tmp_path / "r"
    report.mkdir()
    refused(capsys, ["table", str(report), str(tmp_path / "." / "r")], "report given twice")


def test_info_does_not_print_metres_for_sfm_units(tiny_scene, tmp_path, capsys):
    data = tmp_path / "scene"
    shutil.copytree(tiny_scene, data)
    assert main(["info", str(data)]) == 0
    assert "diameter" in (out := capsys.readouterr().out) and " m  (Tukey" in out
    (data / "import_info.json").write_text(json.dumps({"units": "the model's own units (unknown)"}))
    assert main(["info", str(data)]) == 0
    out = capsys.readouterr().out
    assert " m  (Tukey" not in out and "units  (Tukey" in out and "arbitrary SfM units" in out


def test_sfm_checks_known_distance_names_before_running(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        cv2.imwrite(str(images / f"im{i}.png"), np.full((32, 32, 3), 40 * i, np.uint8))
    out = tmp_path / "out"
    refused(capsys, ["sfm", str(images), str(out), "--known-distance", "im0.png", "nope.png", "1.0"],
            "'nope.png' is not an image")
    assert not out.exists()   # nothing left behind: the rerun needs no --force


def test_sfm_matching_bar_ends_done_when_no_pair_matched(tmp_path, capsys):
    from sceneloc.capture.sfm import _db_progress
    with _db_progress(tmp_path / "database.db", "matches", 66, "matching", "pair", True):
        pass   # a successful step that stored no rows (no pair matched)
    err = capsys.readouterr().err
    assert "stopped at" not in err and "done, 66 pair" in err, err


def test_bad_estimator_name_and_public_names():
    with pytest.raises(SceneLocError, match="unknown pose estimator 'magic'"):
        estimator_config("magic")
    assert {"Map", "PoseConfig", "SceneLocError", "find_queries"} <= set(dir(sceneloc))
    assert set(sceneloc.__all__) <= set(dir(sceneloc)) and sceneloc.PoseConfig().method == "ransac"
    # the names are lazy: importing the package does not import torch
    done = subprocess.run([sys.executable, "-c", "import sys, sceneloc; print('torch' in sys.modules)"],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


# ----------------------------------------------------------------------------------- repeatability


def test_localize_is_repeatable_in_one_process(tiny_map, overfit_scene, capsys):
    frame = load_scene(overfit_scene).frames("test")[1]
    the_map = Map.load(tiny_map, device="cpu")
    image = frame.load_image()
    a, b = the_map.localize(image), the_map.localize(image)
    assert a.pose is not None
    np.testing.assert_array_equal(a.pose, b.pose)
    seeded = [the_map.localize(image, rng=np.random.default_rng(7)).pose for _ in range(2)]
    np.testing.assert_array_equal(*seeded)
    lines = []
    for _ in range(2):
        assert main(["localize", str(tiny_map), "--image", str(frame.image_path)]) == 0
        lines.append(capsys.readouterr().out.splitlines()[-1])
    assert lines[0] == lines[1] and lines[0].startswith(Path(frame.image_path).name)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["fcn", "xfeat"])
def test_map_is_repeatable_given_iterations(overfit_scene, tmp_path, arch):
    """Two maps from the same --iterations and --seed have bit-identical weights on the CPU."""
    import torch

    from sceneloc.mapping.build import map_scene
    from sceneloc.training.trainers import MappingConfig
    cfg = MappingConfig(arch=arch, width=16, input_height=96 if arch == "fcn" else 120, iterations=15, batch_size=2,
                        buffer_mb=8, confidence=False, calibration_minutes=0, cloud_voxel_m=0, view_voxel_m=0)
    weights = []
    for k in range(2):
        map_scene(overfit_scene, tmp_path / f"m{k}", cfg, evaluate_test=False, log=lambda *a: None)
        weights.append(torch.load(tmp_path / f"m{k}" / "coordinates.pt", weights_only=True))
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name


def test_check_output_path_keeps_an_existing_file_without_force(tmp_path):
    out = tmp_path / "poses.txt"
    out.write_text("the user's")
    with pytest.raises(SceneLocError, match="poses.txt: exists \\(use --force to overwrite\\)"):
        check_output_path(out, "file", option="--out", force=False)
    assert check_output_path(out, "file", option="--out", force=True) == out
    assert check_output_path(out, "file") == out   # no force given: the caller decides
    assert out.read_text() == "the user's"
