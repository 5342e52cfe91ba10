"""Data layer (issue 2): 7-Scenes and DSAC*/ACE layouts, poses, ground-truth scene coordinates.

Real data is read in place from ../shared/data (fixtures skip when absent); tiny synthetic
datasets are built in tmp_path.
"""

import re

import cv2
import numpy as np
import pytest

from sceneloc import geometry as g
from sceneloc.data.dataset import (
    KINECT_COLOUR_INTRINSICS,
    KINECT_DEPTH_INTRINSICS,
    load_scene,
    scene_coordinates,
    seven_scenes_cameras,
)
from sceneloc.data.readers import read_depth, read_image, read_matrix, read_pose, register_depth
from sceneloc.errors import SceneLocError


def _count_listed_frames(root, split_file):
    """Colour images in the folders a 7-Scenes split file lists, counted independently of sceneloc."""
    n = 0
    for line in (root / split_file).read_text().split():
        seq = root / f"seq-{int(line.replace('sequence', '')):02d}"
        n += len(list(seq.glob("frame-*.color.*")))
    return n


# ------------------------------------------------------------------------------------ real data


@pytest.fixture(scope="module")
def kitchen_scene(redkitchen):
    return load_scene(redkitchen)


@pytest.fixture(scope="module")
def kitchen_frames(kitchen_scene):
    fr = kitchen_scene.frames("train")
    return {i: fr[i].load() for i in (0, 5, 40)}


def test_redkitchen_splits(kitchen_scene, redkitchen):
    assert kitchen_scene.layout == "7scenes"
    assert len(kitchen_scene.frames("train")) == _count_listed_frames(redkitchen, "TrainSplit.txt") == 600
    assert len(kitchen_scene.frames("test")) == _count_listed_frames(redkitchen, "TestSplit.txt") == 200
    f = kitchen_scene.frames("test")[0]
    assert f.name == "seq-02/frame-000400.color.jpg" and f.image_path.is_absolute()
    assert f.depth_path is not None and f.depth_path.name == "frame-000400.depth.png"
    # camera-intrinsics.txt is the Kinect's depth camera: the images are the colour camera's
    np.testing.assert_array_equal(f.depth_K, np.loadtxt(redkitchen / "camera-intrinsics.txt"))
    np.testing.assert_array_equal(f.K, g.intrinsics_matrix(*KINECT_COLOUR_INTRINSICS))


def test_7scenes_poses_projected_onto_so3(kitchen_scene, redkitchen):
    frames = kitchen_scene.frames("train")[::25] + kitchen_scene.frames("test")[::25]
    max_change, min_raw_det = 0.0, 2.0
    for f in frames:
        raw = np.loadtxt(f.image_path.parent / f.image_path.name.replace(".color.jpg", ".pose.txt"))
        R = f.pose[:3, :3]
        assert abs(np.linalg.det(R) - 1) < 1e-9
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
        np.testing.assert_array_equal(f.pose[:3, 3], raw[:3, 3])
        np.testing.assert_array_equal(f.pose[3], [0, 0, 0, 1])
        max_change = max(max_change, np.abs(R - raw[:3, :3]).max())
        min_raw_det = min(min_raw_det, np.linalg.det(raw[:3, :3]))
    # the raw KinectFusion rotations are slightly off SO(3) (det ~ 0.9997): the projection is needed
    # but only moves entries slightly
    assert min_raw_det < 1 - 1e-5
    assert 0 < max_change < 1e-3


def _two_frame_agreement(A, B, T_a, T_b):
    """World points of frame A seen from B: distance to B's own world point at the nearest pixel
    for mutually visible points (in image, valid depth, depth consistent within 5 cm)."""
    XA, vA, _ = scene_coordinates(A.depth, T_a, A.K)
    XB, _, _ = scene_coordinates(B.depth, T_b, B.K)
    P = XA[vA].astype(np.float64)
    x_b = g.transform_points(g.invert_pose(T_b), P)
    px = np.rint(g.project(x_b, B.K)).astype(int)
    h, w = B.depth.shape
    inside = (x_b[:, 2] > 0) & (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
    px, x_b, P = px[inside], x_b[inside], P[inside]
    d_b = B.depth[px[:, 1], px[:, 0]]
    ok = (d_b > 0) & (np.abs(d_b - x_b[:, 2]) < 0.05)
    dist = np.linalg.norm(XB[px[ok, 1], px[ok, 0]] - P[ok], axis=1)
    return float(np.median(dist)), ok.sum() / vA.sum()


@pytest.mark.parametrize("a,b,bound", [(0, 5, 0.01), (0, 40, 0.015)])
def test_two_frames_agree_in_world(kitchen_frames, a, b, bound):
    """Measured (2026-11): median 3.3 mm for frames 0/5 (4 mm, 0.2 deg apart), 7.6 mm for 0/40
    (10 cm, 4 deg apart), with 98 % / 78 % of A's valid points mutually visible."""
    A, B = kitchen_frames[a], kitchen_frames[b]
    median, share = _two_frame_agreement(A, B, A.pose, B.pose)
    assert median < bound, median
    assert share > 0.7, share
    if b == 40:
        # discrimination: ignoring the camera motion, or using the inverse pose convention,
        # must be visibly worse (median > 2x, far fewer consistent points)
        for T_a, T_b in [(A.pose, A.pose), (g.invert_pose(A.pose), g.invert_pose(B.pose))]:
            m_bad, s_bad = _two_frame_agreement(A, B, T_a, T_b)
            assert m_bad > 2 * median and s_bad < 0.5 * share, (m_bad, s_bad)


@pytest.mark.parametrize("factor", [2, 3, 8])
def test_reduced_resolution_scene_coordinates(kitchen_frames, factor):
    A = kitchen_frames[0]
    X_full, v_full, K_full = A.scene_coordinates()
    np.testing.assert_array_equal(K_full, A.K)
    X, valid, K_r = A.scene_coordinates(factor)
    h, w = 480 // factor, 640 // factor
    assert X.shape == (h, w, 3) and X.dtype == np.float32 and valid.shape == (h, w)
    assert valid.mean() > 0.5 and np.all(X[~valid] == 0)
    np.testing.assert_allclose(K_r, g.scale_intrinsics(A.K, 1.0 / factor))
    # each reduced-grid point projects onto its own output pixel centre with the returned K
    # (to float32 resolution: ~3e-5 px for world coordinates of a few metres)
    x_cam = g.transform_points(g.invert_pose(A.pose), X[valid].astype(np.float64))
    np.testing.assert_allclose(g.project(x_cam, K_r), g.pixel_grid(h, w)[valid], atol=1e-4)
    # ... and lies at the depth of the nearest full-resolution pixel, f*j + f//2, whose point is
    # on a ray offset by delta = f//2 - (f-1)/2 pixels (0.5 for even f, 0 for odd) in u and v
    rows, cols = np.arange(h) * factor + factor // 2, np.arange(w) * factor + factor // 2
    Xn, vn = X_full[np.ix_(rows, cols)], v_full[np.ix_(rows, cols)]
    np.testing.assert_array_equal(vn, valid)
    delta = factor // 2 - (factor - 1) / 2
    z = x_cam[:, 2]
    expected = z * delta * np.hypot(1 / A.K[0, 0], 1 / A.K[1, 1])
    dist = np.linalg.norm(Xn[valid].astype(np.float64) - X[valid], axis=1)
    np.testing.assert_allclose(dist, expected, atol=2e-6)


def test_statistics_redkitchen(kitchen_scene):
    st = kitchen_scene.statistics(max_frames=10, factor=8)
    assert st.frames == {"train": 600, "test": 200}
    assert st.image_size == (480, 640) and st.has_depth
    assert 0.5 < st.valid_depth_share <= 1
    # the robust box holds nearly all scene points of training frames it did not sample
    for i in (33, 333, 555):
        X, valid, _ = kitchen_scene.frames("train")[i].load().scene_coordinates(4)
        P = X[valid]
        inside = np.all((P > st.extent_min - 0.05) & (P < st.extent_max + 0.05), axis=1)
        assert inside.mean() > 0.95, (i, inside.mean())
    assert np.all(st.extent_min <= st.center) and np.all(st.center <= st.extent_max)
    assert st.diameter == pytest.approx(np.linalg.norm(st.extent_max - st.extent_min))
    assert st.tukey_c == pytest.approx(st.diameter / 2)


# --------------------------------------------------------------------- original 7-Scenes format


def test_stairs_sample_original_format(stairs):
    scene = load_scene(stairs)
    for split, fname in (("train", "TrainSplit.txt"), ("test", "TestSplit.txt")):
        raw = (stairs / fname).read_bytes()
        assert b"\r\n" in raw  # the original CRLF split files
        seqs = [int(s) for s in re.findall(rb"sequence(\d+)", raw)]
        frames = scene.frames(split)
        assert len(frames) == _count_listed_frames(stairs, fname)
        assert sorted({int(f.name[4:6]) for f in frames}) == sorted(seqs)
    # hand-parsed from seq-01/frame-000000.pose.txt (tab separated, CRLF, '9.3817085e-001' numbers)
    path = stairs / "seq-01" / "frame-000000.pose.txt"
    assert b"\t" in path.read_bytes() and b"\r\n" in path.read_bytes() and b"e-001" in path.read_bytes()
    raw = read_matrix(path, (4, 4), "pose")
    assert raw[0, 0] == 0.93817085 and raw[0, 3] == -1.4903377
    assert raw[1, 2] == 0.39159104 and raw[2, 3] == -0.054694783
    np.testing.assert_array_equal(raw[3], [0, 0, 0, 1])
    f = next(f for f in scene.frames("test") if f.name == "seq-01/frame-000000.color.jpg")
    np.testing.assert_array_equal(f.pose[:3, 3], raw[:3, 3])
    np.testing.assert_allclose(f.pose[:3, :3], raw[:3, :3], atol=1e-3)
    assert f.load().image.shape == (480, 640, 3)
    # no intrinsics file: 7-Scenes' Kinect, depth registered onto the colour grid as it is read
    np.testing.assert_array_equal(f.K, g.intrinsics_matrix(*KINECT_COLOUR_INTRINSICS))
    np.testing.assert_array_equal(f.depth_K, g.intrinsics_matrix(*KINECT_DEPTH_INTRINSICS))
    raw_depth = read_depth(f.depth_path)
    np.testing.assert_array_equal(f.load_depth(), register_depth(raw_depth, f.depth_K, f.K, raw_depth.shape))
    # the colour camera sees wider than the depth camera: its outer columns have no depth
    assert not f.load_depth()[:, :30].any() and f.load_depth()[:, 100:540].any()


def test_register_depth_closed_form():
    """Depth encoding its own column and row: each colour pixel gets the depth pixel nearest its ray."""
    K_d, K_c = g.intrinsics_matrix(585.0, 585.0, 320.0, 240.0), g.intrinsics_matrix(525.0, 500.0, 300.0, 250.0)
    v, u = np.mgrid[0:480, 0:640]
    depth = (1.0 + u / 1000.0 + v / 1e6).astype(np.float32)
    out = register_depth(depth, K_d, K_c, (480, 640))
    ud = np.rint(320.0 + (u - 300.0) * 585.0 / 525.0)
    vd = np.rint(240.0 + (v - 250.0) * 585.0 / 500.0)
    inside = (ud >= 0) & (ud <= 639) & (vd >= 0) & (vd <= 479)
    np.testing.assert_allclose(out[inside], (1.0 + ud / 1000.0 + vd / 1e6)[inside], atol=1e-6)
    assert not out[~inside].any() and (~inside).any()
    # one camera: unchanged
    np.testing.assert_array_equal(register_depth(depth, K_d, K_d, (480, 640)), depth)


def _write_7scenes_intrinsics(root, shape, depth_K=None, colour_K=None):
    root.mkdir(parents=True)
    (root / "seq-01").mkdir()
    _write_png(root / "seq-01" / "frame-000000.color.png", shape)
    for name, K in (("camera-intrinsics.txt", depth_K), ("color-intrinsics.txt", colour_K)):
        if K is not None:
            np.savetxt(root / name, K)
    return root


def test_seven_scenes_cameras(tmp_path):
    kinect_d, kinect_c = g.intrinsics_matrix(*KINECT_DEPTH_INTRINSICS), g.intrinsics_matrix(*KINECT_COLOUR_INTRINSICS)
    other = g.intrinsics_matrix(500.0, 500.0, 30.0, 20.0)
    # 7-Scenes (no file, or the Kinect depth camera's) on 640x480 images: colour 525 px, depth 585 px
    for i, K_file in enumerate((None, kinect_d)):
        K, K_depth = seven_scenes_cameras(_write_7scenes_intrinsics(tmp_path / f"k{i}", (480, 640), K_file))
        np.testing.assert_array_equal(K, kinect_c)
        np.testing.assert_array_equal(K_depth, kinect_d)
    # the same numbers on images of another size are not a Kinect: one camera
    K, K_depth = seven_scenes_cameras(_write_7scenes_intrinsics(tmp_path / "small", (48, 64)))
    np.testing.assert_array_equal(K, kinect_d)
    assert K_depth is None
    # any other camera file: registered depth, one camera
    K, K_depth = seven_scenes_cameras(_write_7scenes_intrinsics(tmp_path / "o", (480, 640), other))
    np.testing.assert_array_equal(K, other)
    assert K_depth is None
    # a colour-camera file names the colour camera; equal to the depth camera means registered
    K, K_depth = seven_scenes_cameras(_write_7scenes_intrinsics(tmp_path / "c", (480, 640), kinect_d, other))
    np.testing.assert_array_equal(K, other)
    np.testing.assert_array_equal(K_depth, kinect_d)
    K, K_depth = seven_scenes_cameras(_write_7scenes_intrinsics(tmp_path / "s", (480, 640), kinect_d, kinect_d))
    np.testing.assert_array_equal(K, kinect_d)
    assert K_depth is None
    # an override is the camera of images and depth alike
    K, K_depth = seven_scenes_cameras(tmp_path / "k0", other)
    np.testing.assert_array_equal(K, other)
    assert K_depth is None


# ----------------------------------------------------------------------------- synthetic layouts


def _pose(i):
    R = g.quaternion_to_matrix([1.0, 0.1 * i, -0.05 * i, 0.02])
    return g.make_pose(R, [0.1 * i, -0.2, 0.3 + 0.05 * i])


def _write_png(path, shape=(48, 64), value=None):
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    img = rng.integers(0, 255, size=(*shape, 3), dtype=np.uint8) if value is None else value
    assert cv2.imwrite(str(path), img)


def _write_depth(path, shape=(48, 64), mm=1500):
    d = np.full(shape, mm, dtype=np.uint16)
    d[0, 0] = 0
    d[0, 1] = 65535
    assert cv2.imwrite(str(path), d)


def make_dsacstar(root, depth=True):
    for split, calib in (("train", "500\n"), ("test", "400 0 30\n0 410 20\n0 0 1\n")):
        for sub in ("rgb", "poses", "calibration") + (("depth",) if depth and split == "train" else ()):
            (root / split / sub).mkdir(parents=True)
        for i in range(3):
            stem = f"frame-{i:06d}"
            _write_png(root / split / "rgb" / f"{stem}.color.png")
            np.savetxt(root / split / "poses" / f"{stem}.pose.txt", _pose(i))
            (root / split / "calibration" / f"{stem}.calibration.txt").write_text(calib)
            if depth and split == "train":
                _write_depth(root / split / "depth" / f"{stem}.depth.png")
    return root


def test_dsacstar_layout(tmp_path):
    scene = load_scene(make_dsacstar(tmp_path / "ds"))
    assert scene.layout == "dsacstar"
    train, test = scene.frames("train"), scene.frames("test")
    assert [f.name for f in train] == [f"train/rgb/frame-{i:06d}.color.png" for i in range(3)]
    assert len(test) == 3
    # single focal length: principal point at the image centre (W/2, H/2), as DSAC*/ACE
    np.testing.assert_array_equal(train[0].K, [[500, 0, 32], [0, 500, 24], [0, 0, 1]])
    np.testing.assert_array_equal(test[2].K, [[400, 0, 30], [0, 410, 20], [0, 0, 1]])
    for i, f in enumerate(train):
        np.testing.assert_allclose(f.pose, _pose(i), atol=1e-12)
        assert f.depth_path is not None and f.depth_path.name == f"frame-{i:06d}.depth.png"
    assert all(f.depth_path is None for f in test)
    fd = train[1].load()
    assert fd.image.shape == (48, 64, 3) and fd.depth.shape == (48, 64)
    assert fd.depth[5, 5] == pytest.approx(1.5) and fd.depth[0, 0] == 0 and fd.depth[0, 1] == 0
    X, valid, _ = fd.scene_coordinates()
    assert valid.sum() == 48 * 64 - 2
    x_cam = g.transform_points(g.invert_pose(fd.pose), X[valid].astype(np.float64))
    np.testing.assert_allclose(x_cam[:, 2], 1.5, atol=1e-5)
    # RGB-only split loads without depth; asking for it names the problem
    assert test[0].load(need_depth=False).depth is None
    with pytest.raises(SceneLocError, match="missing depth"):
        test[0].load()
    st = scene.statistics()
    assert st.has_depth and st.frames == {"train": 3, "test": 3}


def test_dsacstar_rgb_only_statistics(tmp_path):
    scene = load_scene(make_dsacstar(tmp_path / "ds", depth=False))
    st = scene.statistics()
    assert not st.has_depth and st.valid_depth_share == 0
    centres = np.stack([_pose(i)[:3, 3] for i in range(3)])
    spread = np.percentile(centres, 99.5, 0) - np.percentile(centres, 0.5, 0)
    assert st.diameter == pytest.approx(np.linalg.norm(spread))


def test_dsacstar_depth_in_other_format(tmp_path):
    root = make_dsacstar(tmp_path / "ds", depth=False)
    (root / "train" / "depth").mkdir()
    for i in range(3):
        np.save(root / "train" / "depth" / f"frame-{i:06d}.depth.npy", np.ones((48, 64)))
    with pytest.raises(SceneLocError, match=r"depth.*no \.png depth maps"):
        load_scene(root)


def test_dsacstar_count_mismatch(tmp_path):
    root = make_dsacstar(tmp_path / "ds")
    (root / "test" / "poses" / "frame-000001.pose.txt").unlink()
    with pytest.raises(SceneLocError, match="2 pose files for 3 images"):
        load_scene(root)


def test_unknown_and_empty_split(tmp_path):
    scene = load_scene(make_dsacstar(tmp_path / "ds"))
    with pytest.raises(SceneLocError, match=r"unknown split 'val' \(this dataset has: train, test\)"):
        scene.frames("val")
    scene.splits["test"] = []
    with pytest.raises(SceneLocError, match="split 'test' is empty"):
        scene.frames("test")
    scene.splits = {"train": [], "test": []}
    with pytest.raises(SceneLocError, match="no frames"):
        scene.statistics()


def test_depth_reader(tmp_path):
    _write_depth(tmp_path / "d.png", mm=2345)
    d = read_depth(tmp_path / "d.png", (48, 64))
    assert d.dtype == np.float32 and d[3, 3] == pytest.approx(2.345) and d[0, 0] == 0 and d[0, 1] == 0
    with pytest.raises(SceneLocError, match="depth map is 64x48 but its image is 32x24"):
        read_depth(tmp_path / "d.png", (24, 32))
    _write_png(tmp_path / "rgb.png")
    with pytest.raises(SceneLocError, match="single-channel uint16"):
        read_depth(tmp_path / "rgb.png")


def test_read_image_rgb_order(tmp_path):
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 0] = 200  # blue in OpenCV's BGR
    cv2.imwrite(str(tmp_path / "b.png"), bgr)
    img = read_image(tmp_path / "b.png")
    assert img.shape == (4, 5, 3) and img[0, 0].tolist() == [0, 0, 200]


def test_read_pose_rejects_non_rigid(tmp_path):
    p = tmp_path / "pose.txt"
    np.savetxt(p, np.diag([1.0, 1.0, 1.2, 1.0]))
    with pytest.raises(SceneLocError, match="not a rigid transform"):
        read_pose(p)


def test_evenly_spaced_indices():
    from sceneloc.data.dataset import evenly_spaced
    assert evenly_spaced(10, 3).tolist() == [0, 4, 9]      # 4.5 rounds to even
    assert evenly_spaced(5, None).tolist() == [0, 1, 2, 3, 4]
    assert evenly_spaced(5, 9).tolist() == [0, 1, 2, 3, 4]
    assert evenly_spaced(3, 3).tolist() == [0, 1, 2]
    assert evenly_spaced(100, 1).tolist() == [0]
