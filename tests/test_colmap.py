"""COLMAP import, SfM and the capture check: round trips from known poses, errors, scale, intrinsics."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from sceneloc.capture.sfm import umeyama
from sceneloc.cli.main import main
from sceneloc.data.dataset import load_scene
from sceneloc.geometry import invert_pose, make_pose, pose_errors

pycolmap = pytest.importorskip("pycolmap", reason="pycolmap absent: pip install 'sceneloc[colmap]'")


def random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


# ----------------------------------------------------------------------------------- umeyama


def test_umeyama_recovers_a_known_similarity_exactly():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(20, 3))
    R, s, t = random_rotation(rng), 2.7, np.array([1.0, -3.0, 0.5])
    s_est, R_est, t_est = umeyama(src, s * src @ R.T + t)
    assert abs(s_est - s) < 1e-10 and np.allclose(R_est, R, atol=1e-10) and np.allclose(t_est, t, atol=1e-10)


def test_umeyama_never_returns_a_reflection():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(10, 3))
    dst = src * np.array([1.0, 1.0, -1.0])          # a mirror image: the best rotation is not the mirror
    _, R, _ = umeyama(src, dst)
    assert np.linalg.det(R) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        umeyama(np.zeros((5, 3)), dst[:5])


# ----------------------------------------------------------------------- a model from known poses

CAMERAS = {1: ("PINHOLE", 64, 48, [60.0, 62.0, 32.5, 24.0]), 2: ("SIMPLE_PINHOLE", 80, 60, [70.0, 40.25, 30.5])}


def write_images(image_dir: Path, names_sizes: list[tuple[str, int, int]]) -> None:
    rng = np.random.default_rng(0)
    for name, w, h in names_sizes:
        p = image_dir / name
        p.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(p), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def known_model(tmp_path: Path, n: int = 6, fmt: str = "bin", cameras=CAMERAS, seed: int = 0):
    """A COLMAP model of ``n`` images alternating between the cameras, with random camera-to-world
    poses; returns (model_dir, image_dir, {name: T_wc}, {name: camera_id})."""
    rng = np.random.default_rng(seed)
    rec = pycolmap.Reconstruction()
    for cid, (model, w, h, params) in cameras.items():
        rec.add_camera_with_trivial_rig(pycolmap.Camera(camera_id=cid, model=model, width=w, height=h, params=params))
    poses, cams = {}, {}
    ids = list(cameras)
    for i in range(n):
        name = f"seq{i % 2}/img{i:03d}.png"
        cid = ids[i % len(ids)]
        T_wc = make_pose(random_rotation(rng), rng.normal(size=3) * 3)
        rec.add_image_with_trivial_frame(pycolmap.Image(name=name, camera_id=cid, image_id=i + 1),
                                         pycolmap.Rigid3d(invert_pose(T_wc)[:3]))
        poses[name], cams[name] = T_wc, cid
    model_dir, image_dir = tmp_path / "model", tmp_path / "images"
    model_dir.mkdir()
    (rec.write_binary if fmt == "bin" else rec.write_text)(str(model_dir))
    write_images(image_dir, [(nm, cameras[c][1], cameras[c][2]) for nm, c in cams.items()])
    return model_dir, image_dir, poses, cams


def expected_K(cid: int) -> np.ndarray:
    model, _, _, p = CAMERAS[cid]
    fx, fy, cx, cy = (p[0], p[0], p[1], p[2]) if model == "SIMPLE_PINHOLE" else p
    return np.array([[fx, 0, cx - 0.5], [0, fy, cy - 0.5], [0, 0, 1]])   # COLMAP's pixel centres are at +0.5


@pytest.mark.parametrize("fmt", ["bin", "txt", "txt-legacy"])
def test_import_round_trip_poses_and_per_camera_intrinsics(tmp_path, fmt, capsys):
    model_dir, image_dir, poses, cams = known_model(tmp_path, fmt=fmt[:3])
    if fmt == "txt-legacy":           # COLMAP < 3.12 wrote no rigs.txt / frames.txt
        (model_dir / "rigs.txt").unlink(), (model_dir / "frames.txt").unlink()
    out = tmp_path / "ds"
    assert main(["import", "colmap", str(model_dir), str(image_dir), str(out), "--test-every", "3"]) == 0
    assert "6 of 6 images registered" in capsys.readouterr().out
    scene = load_scene(out)
    assert len(scene.frames("train")) == 4 and len(scene.frames("test")) == 2
    for split in ("train", "test"):
        for f in scene.frames(split):
            name = Path(f.name).name.replace("_", "/", 1)
            np.testing.assert_allclose(f.pose, poses[name], atol=1e-6)
            np.testing.assert_allclose(f.K, expected_K(cams[name]), atol=1e-9)
            assert f.load_image().shape[:2] == CAMERAS[cams[name]][2:0:-1]
    info = json.loads((out / "import_info.json").read_text())
    assert info["units"].startswith("the model's own units") and info["scale_applied"] == 1.0
    assert scene.pose_camera == "colour"   # SfM poses: the colour camera's, for `sceneloc map --pose-camera`
    assert info["images"] == "copies" and not (out / "train" / "rgb").iterdir().__next__().is_symlink()


def test_import_scale_link_and_split_list(tmp_path):
    model_dir, image_dir, poses, _ = known_model(tmp_path)
    (tmp_path / "test.txt").write_text("seq1/img001.png\n")
    out = tmp_path / "ds"
    assert main(["import", "colmap", str(model_dir), str(image_dir), str(out), "--scale", "0.5", "--link",
                 "--test-list", str(tmp_path / "test.txt")]) == 0
    (f,) = load_scene(out).frames("test")
    assert f.image_path.is_symlink()
    np.testing.assert_allclose(f.pose[:3, 3], 0.5 * poses["seq1/img001.png"][:3, 3], atol=1e-6)
    np.testing.assert_allclose(f.pose[:3, :3], poses["seq1/img001.png"][:3, :3], atol=1e-6)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("sceneloc: error:") and "\n" not in err, err
    return err


def test_import_errors_are_one_line_with_exit_2(tmp_path, capsys):
    model_dir, image_dir, _, _ = known_model(tmp_path)
    out = tmp_path / "ds"
    args = ["import", "colmap", str(model_dir), str(image_dir), str(out)]
    (image_dir / "seq0/img002.png").unlink()
    assert main(args) == 2 and "absent" in one_line_error(capsys) and not out.exists()
    write_images(image_dir, [("seq0/img002.png", 64, 48)])
    assert main(["import", "colmap", str(tmp_path / "nope"), str(image_dir), str(out)]) == 2
    assert "does not exist" in one_line_error(capsys)
    assert main(["import", "colmap", str(image_dir), str(image_dir), str(out)]) == 2
    assert "not a COLMAP sparse model" in one_line_error(capsys)
    assert main(args + ["--test-every", "1"]) == 2 and "at least 2" in one_line_error(capsys)
    (tmp_path / "empty").mkdir()
    assert main(args + ["--depth-dir", str(tmp_path / "empty")]) == 2 and "no depth map" in one_line_error(capsys)
    # the images themselves as "depth": found by name, refused by type
    assert main(args + ["--depth-dir", str(image_dir)]) == 2 and "uint16" in one_line_error(capsys)
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2 and "--force" in one_line_error(capsys)
    assert main(args + ["--force"]) == 0


def test_distorted_camera_and_empty_model_are_refused(tmp_path, capsys):
    cams = {1: ("OPENCV", 64, 48, [60.0, 60.0, 32.0, 24.0, 0.1, 0.0, 0.0, 0.0])}
    (tmp_path / "a").mkdir()
    model_dir, image_dir, _, _ = known_model(tmp_path / "a", n=3, cameras=cams)
    assert main(["import", "colmap", str(model_dir), str(image_dir), str(tmp_path / "o")]) == 2
    assert "OPENCV model with distortion" in one_line_error(capsys)
    # the same model with all distortion terms zero is a pinhole and imports
    cams = {1: ("OPENCV", 64, 48, [60.0, 60.0, 32.0, 24.0, 0.0, 0.0, 0.0, 0.0])}
    (tmp_path / "b").mkdir()
    model_dir, image_dir, _, _ = known_model(tmp_path / "b", n=3, cameras=cams)
    assert main(["import", "colmap", str(model_dir), str(image_dir), str(tmp_path / "o")]) == 0
    # a model whose images have no pose: zero registered images
    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(pycolmap.Camera(camera_id=1, model="PINHOLE", width=64, height=48,
                                                    params=[60, 60, 32, 24]))
    rec.add_image_with_trivial_frame(pycolmap.Image(name="seq0/img000.png", camera_id=1, image_id=1))
    empty = tmp_path / "empty"
    empty.mkdir()
    rec.write_text(str(empty))
    assert main(["import", "colmap", str(empty), str(image_dir), str(tmp_path / "o2")]) == 2
    assert "no registered images" in one_line_error(capsys)


# ---------------------------------------------------------------------- metric scale from depth


def test_depth_scale_recovers_metres_from_a_scaled_model(tmp_path, capsys):
    """A model in half-metre units with observed 3D points, and depth maps in metres: the import
    finds the factor 2 from the keypoints' depths and writes metric poses."""
    rng = np.random.default_rng(3)
    w, h, f = 64, 48, 50.0
    K = np.array([[f, 0, w / 2 - 0.5], [0, f, h / 2 - 0.5], [0, 0, 1]])
    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(pycolmap.Camera(camera_id=1, model="PINHOLE", width=w, height=h,
                                                    params=[f, f, w / 2, h / 2]))
    X_m = rng.uniform([-1, -1, 3], [1, 1, 4], size=(40, 3))      # metres, in front of every camera
    units = 2.0                                                  # model units per metre
    image_dir, depth_dir, model_dir = (tmp_path / d for d in ("images", "depth", "model"))
    for d in (image_dir, depth_dir, model_dir):
        d.mkdir()
    point_ids = [rec.add_point3D(X * units, pycolmap.Track(), np.zeros(3, np.uint8)) for X in X_m]
    poses_m = {}
    for i in range(3):
        T_wc = make_pose(np.eye(3), np.array([0.2 * i, 0.0, 0.0]))          # metres
        T_cw = invert_pose(T_wc)
        cam = X_m @ T_cw[:3, :3].T + T_cw[:3, 3]
        uv = cam[:, :2] / cam[:, 2:] * f + K[:2, 2]
        depth = np.zeros((h, w), np.uint16)
        px = np.rint(uv).astype(int)
        ok = (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
        depth[px[ok, 1], px[ok, 0]] = np.rint(cam[ok, 2] * 1000).astype(np.uint16)
        name = f"img{i}.png"
        T_cw_units = T_cw.copy()
        T_cw_units[:3, 3] *= units
        rec.add_image_with_trivial_frame(pycolmap.Image(name=name, keypoints=uv + 0.5, camera_id=1, image_id=i + 1),
                                         pycolmap.Rigid3d(T_cw_units[:3]))
        for j in np.flatnonzero(ok):
            rec.add_observation(point_ids[j], pycolmap.TrackElement(i + 1, int(j)))
        cv2.imwrite(str(depth_dir / f"img{i}.png"), depth)
        write_images(image_dir, [(name, w, h)])
        poses_m[name] = T_wc
    rec.write(str(model_dir))
    out = tmp_path / "ds"
    assert main(["import", "colmap", str(model_dir), str(image_dir), str(out), "--depth-dir", str(depth_dir)]) == 0
    info = json.loads((out / "import_info.json").read_text())
    assert info["scale_applied"] == pytest.approx(1 / units, rel=2e-3) and info["units"].startswith("metres")
    for fr in load_scene(out).frames("train"):
        assert fr.depth_path is not None
        np.testing.assert_allclose(fr.pose, poses_m[Path(fr.name).name], atol=2e-3)


# ----------------------------------------------------------- per-camera intrinsics in localization


@pytest.mark.slow
def test_per_camera_intrinsics_survive_through_localization(tiny_map, overfit_scene, tmp_path):
    """Frame 1 of the tiny scene without its 10 left columns is a second camera (cx - 10): imported
    with its own K it localizes as well as the original; with the first camera's K it does not.
    (Rows are kept so the network sees the image at the scale it was mapped at, and 10 px are
    8 px of the 0.8-scaled input, a whole output cell: the over-fitted map then still recognises it.)"""
    from sceneloc.mapping.queries import localize_frames
    from sceneloc.mapping.scene_map import Map
    frames = load_scene(overfit_scene).frames("train")
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    rec = pycolmap.Reconstruction()
    for i, fr in enumerate(frames):
        img = cv2.imread(str(fr.image_path))
        if i == 1:
            img = img[:, 10:]
        K = fr.K.copy()
        K[0, 2] -= 10 * i
        rec.add_camera_with_trivial_rig(pycolmap.Camera(camera_id=i + 1, model="PINHOLE", width=img.shape[1],
                                                        height=img.shape[0],
                                                        params=[K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5]))
        cv2.imwrite(str(image_dir / f"f{i}.png"), img)
        rec.add_image_with_trivial_frame(pycolmap.Image(name=f"f{i}.png", camera_id=i + 1, image_id=i + 1),
                                         pycolmap.Rigid3d(invert_pose(fr.pose)[:3]))
    model = tmp_path / "model"
    model.mkdir()
    rec.write(str(model))
    assert main(["import", "colmap", str(model), str(image_dir), str(tmp_path / "ds")]) == 0
    imported = load_scene(tmp_path / "ds").frames("train")
    assert not np.allclose(imported[0].K, imported[1].K)
    the_map = Map.load(tiny_map)
    errors = [pose_errors(res.pose, fr.pose) for fr, res in localize_frames(the_map, imported, "rgb", progress=False)]
    assert all(rot < 5 and trans < 0.05 for rot, trans in errors), errors
    wrong = imported[1]
    wrong.K = imported[0].K
    ((_, res),) = localize_frames(the_map, [wrong], "rgb", progress=False)
    assert res.pose is None or pose_errors(res.pose, wrong.pose)[0] > errors[1][0] + 1.0


# ------------------------------------------------------------------------------ capture check


def test_check_reports_unregistered_images_and_missing_depth(tmp_path, capsys):
    model_dir, image_dir, _, _ = known_model(tmp_path)
    out = tmp_path / "ds"
    assert main(["import", "colmap", str(model_dir), str(image_dir), str(out), "--test-every", "2"]) == 0
    info = json.loads((out / "import_info.json").read_text())
    info["unregistered"] = ["a.png", "b.png", "c.png"]
    (out / "import_info.json").write_text(json.dumps(info))
    capsys.readouterr()
    assert main(["check", str(out)]) == 0
    text = capsys.readouterr().out
    assert "not registered     3: a.png" in text
    assert "3 of 3 mapping frames have no depth" in text
    assert "arbitrary units" in text and "only 3 mapping (train) frames" in text


def test_check_on_a_good_synthetic_capture_finds_no_problem(tiny_scene, capsys):
    assert main(["check", str(tiny_scene)]) == 0
    text = capsys.readouterr().out
    assert "without depth" in text and "view directions" in text


# -------------------------------------------------------------------------------------- sfm


def test_sfm_input_errors(tmp_path, capsys):
    assert main(["sfm", str(tmp_path / "none"), str(tmp_path / "o")]) == 2
    assert "does not exist" in one_line_error(capsys)
    write_images(tmp_path / "two", [("a.png", 32, 32), ("b.png", 32, 32)])
    assert main(["sfm", str(tmp_path / "two"), str(tmp_path / "o")]) == 2
    assert "needs at least 3" in one_line_error(capsys)
    (tmp_path / "two" / "c.png").write_bytes(b"not an image")
    assert main(["sfm", str(tmp_path / "two"), str(tmp_path / "o")]) == 2
    assert "c.png" in one_line_error(capsys)
    write_images(tmp_path / "two", [("c.png", 32, 32)])
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "mine.txt").write_text("keep")
    assert main(["sfm", str(tmp_path / "two"), str(tmp_path / "o")]) == 2     # checked before any work
    assert "--force" in one_line_error(capsys) and (tmp_path / "o" / "mine.txt").read_text() == "keep"


def test_sfm_of_unrelated_images_registers_nothing_clearly(tmp_path, capsys):
    write_images(tmp_path / "noise", [(f"{i}.png", 96, 72) for i in range(4)])
    assert main(["sfm", str(tmp_path / "noise"), str(tmp_path / "o"), "--quiet"]) == 2
    assert "registered no images" in one_line_error(capsys)


@pytest.mark.slow
def test_sfm_on_real_frames_matches_ground_truth(redkitchen, tmp_path):
    """12 redkitchen frames (every 20th of seq-01, enough parallax for COLMAP's initial pair): >= 90 %
    registered and, after a similarity to the ground truth, median camera-centre error <= 5 cm;
    depth gives a metric scale."""
    frames = load_scene(redkitchen).frames("train")[:240:20]
    images, depths = tmp_path / "images", tmp_path / "depth"
    images.mkdir(), depths.mkdir()
    for fr in frames:
        stem = Path(fr.name).name.split(".color")[0]
        (images / f"{stem}.color.jpg").symlink_to(fr.image_path)
        (depths / f"{stem}.depth.png").symlink_to(fr.depth_path)
    out = tmp_path / "ds"
    assert main(["sfm", str(images), str(out), "--depth-dir", str(depths), "--max-features", "1024",
                 "--intrinsics", "585,585,320,240", "--quiet"]) == 0
    got = {Path(f.name).name.split(".color")[0]: f.pose for f in load_scene(out).frames("train")}
    assert len(got) >= 0.9 * len(frames)
    gt = {Path(f.name).name.split(".color")[0]: f.pose for f in frames}
    est = np.array([got[k][:3, 3] for k in got])
    ref = np.array([gt[k][:3, 3] for k in got])
    s, R, t = umeyama(est, ref)
    err = np.linalg.norm(est @ (s * R).T + t - ref, axis=1)
    assert np.median(err) <= 0.05, err
    assert 0.85 < s < 1.15          # the depth-derived scale is metric to ~15 % (Kinect depth is not registered to RGB)


@pytest.mark.slow
def test_sfm_with_a_camera_per_folder_keeps_each_devices_intrinsics(redkitchen, tmp_path, capsys):
    """Two devices: 6 redkitchen frames as recorded and 6 at half resolution, each in its own folder.
    --camera-per-folder gives each its own camera (focal lengths in the ratio 2:1) and the poses still
    match the ground truth after a similarity; the depth of the full-resolution frames makes them metric."""
    frames = load_scene(redkitchen).frames("train")[:240:20]
    images, depths = tmp_path / "images", tmp_path / "depth" / "full"
    for d in (images / "full", images / "half", depths):
        d.mkdir(parents=True)
    for i, fr in enumerate(frames):
        stem = Path(fr.name).name.split(".color")[0]
        if i % 2 == 0:
            (images / "full" / f"{stem}.color.jpg").symlink_to(fr.image_path)
            (depths / f"{stem}.depth.png").symlink_to(fr.depth_path)
        else:
            half = cv2.resize(cv2.imread(str(fr.image_path)), (320, 240), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(images / "half" / f"{stem}.color.jpg"), half)
    out = tmp_path / "ds"
    assert main(["sfm", str(images), str(out), "--camera-per-folder", "--depth-dir", str(tmp_path / "depth"),
                 "--max-features", "1024", "--quiet"]) == 0
    assert "cameras: 2" in capsys.readouterr().out
    got = load_scene(out).frames("train")
    assert len(got) >= 0.9 * len(frames)
    focal = {folder: {round(f.K[0, 0], 3) for f in got if f"{folder}_" in Path(f.name).name}
             for folder in ("full", "half")}
    assert len(focal["full"]) == len(focal["half"]) == 1          # one camera per folder
    (f_full,), (f_half,) = focal["full"], focal["half"]
    assert f_full / f_half == pytest.approx(2.0, rel=0.05) and 500 < f_full < 650
    gt = {Path(f.name).name.split(".color")[0]: f.pose for f in frames}
    keys = [Path(f.name).name.split(".color")[0].split("_", 1)[1] for f in got]
    est, ref = np.array([f.pose[:3, 3] for f in got]), np.array([gt[k][:3, 3] for k in keys])
    s, R, t = umeyama(est, ref)
    assert np.median(np.linalg.norm(est @ (s * R).T + t - ref, axis=1)) <= 0.05
    assert 0.85 < s < 1.15


# ----------------------------------------------------------------------------- small helpers


def test_split_rules_and_depth_names(tmp_path):
    from sceneloc.capture.colmap import find_depth, split_names
    from sceneloc.errors import SceneLocError
    names = [f"a/{i}.png" for i in range(6)]
    assert [n for n, s in split_names(names, test_every=3).items() if s == "test"] == ["a/2.png", "a/5.png"]
    assert set(split_names(names).values()) == {"train"}
    assert split_names(names, test_match="a/[01].png")["a/1.png"] == "test"
    with pytest.raises(SceneLocError, match="one split rule"):
        split_names(names, test_every=2, test_match="*")
    with pytest.raises(SceneLocError, match="every image in test"):
        split_names(names, test_match="*")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "frame-1.depth.png").write_bytes(b"")
    (tmp_path / "x" / "b.png").write_bytes(b"")
    assert find_depth(tmp_path, "x/frame-1.color.jpg") == tmp_path / "x" / "frame-1.depth.png"
    assert find_depth(tmp_path, "x/b.jpg") == tmp_path / "x" / "b.png"
    assert find_depth(tmp_path, "x/c.jpg") is None


def test_direction_coverage_grows_when_the_capture_looks_around():
    from sceneloc.capture.check import direction_coverage
    rng = np.random.default_rng(0)
    sweep = np.stack([make_pose(np.eye(3), np.array([0.1 * i, 0, 0])) for i in range(30)])
    around = np.stack([make_pose(random_rotation(rng), np.zeros(3)) for _ in range(200)])
    assert direction_coverage(sweep) == pytest.approx(1 / 26)
    assert direction_coverage(around) > 0.9


def test_db_progress_reports_the_rows_a_step_wrote(tmp_path, capsys):
    """pycolmap's extraction and matching have no callback: the bar counts database rows."""
    import sqlite3

    from sceneloc.capture.sfm import _db_progress
    db = tmp_path / "database.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE keypoints (image_id INTEGER)")
    with _db_progress(db, "keypoints", 4, "features", "image", True):
        with sqlite3.connect(db) as con:
            con.executemany("INSERT INTO keypoints VALUES (?)", [(i,) for i in range(4)])
    err = capsys.readouterr().err
    assert "features: start (4 image)" in err and "done, 4 image" in err, err


def test_partial_depth_is_attached_where_it_exists_and_checked(tmp_path, capsys):
    model_dir, image_dir, _, cams = known_model(tmp_path)
    for name in ("seq0/img000.png", "seq1/img001.png"):
        p = tmp_path / "depth" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        w, h = CAMERAS[cams[name]][1:3]
        cv2.imwrite(str(p), np.full((h, w), 1500, np.uint16))
    out = tmp_path / "ds"
    assert main(["import", "colmap", str(model_dir), str(image_dir), str(out), "--depth-dir", str(tmp_path / "depth"),
                 "--scale", "1"]) == 0
    frames = {Path(f.name).name: f for f in load_scene(out).frames("train")}
    assert frames["seq0_img000.png"].load_depth()[0, 0] == pytest.approx(1.5)
    assert frames["seq0_img002.png"].depth_path is None
    info = json.loads((out / "import_info.json").read_text())
    assert len(info["frames_without_depth"]) == 4
    capsys.readouterr()
    assert main(["check", str(out)]) == 0
    assert "4 of 6 mapping frames have no depth" in capsys.readouterr().out
    # a depth map that belongs to no image is still an error
    cv2.imwrite(str(out / "train" / "depth" / "stray.png"), np.zeros((4, 4), np.uint16))
    assert main(["check", str(out)]) == 2 and "stray.png matches no image" in one_line_error(capsys)
