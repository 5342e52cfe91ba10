"""sceneloc synth: exact geometry without noise, sensor effects with it, determinism, layout, CLI errors.

Small images (160x120 or less) and few frames keep every test well under a second or two.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sceneloc.cli.main import main
from sceneloc.data.dataset import load_scene
from sceneloc.data.readers import read_depth
from sceneloc.geometry import intrinsics_matrix, invert_pose, make_pose, transform_points
from sceneloc.synth import dataset as synth

CLEAN = synth.SensorOptions.clean()


def _gen(out: Path, **kw) -> Path:
    args = dict(frames=4, train_sequences=1, test_sequences=1, width=80, height=60, progress=False)
    args.update(kw)
    return synth.generate(out, **args)


def _world_points(frame) -> tuple[np.ndarray, np.ndarray]:
    """Frame's depth-derived world points (H, W, 3) float64 and validity (H, W)."""
    fd = frame.load()
    H, W = fd.depth.shape
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    z = fd.depth.astype(np.float64)
    x = np.stack([(u - fd.K[0, 2]) / fd.K[0, 0] * z, (v - fd.K[1, 2]) / fd.K[1, 1] * z, z], axis=-1)
    return x @ fd.pose[:3, :3].T + fd.pose[:3, 3], z > 0


def _cross_view_errors(fa, fb) -> np.ndarray:
    """Distances (m) between A's back-projected points and B's depth-derived surface at the sub-pixel
    where they project in B (bilinear over 4 valid neighbours on one surface), for points B sees."""
    Xa, va = _world_points(fa)
    Xb, vb = _world_points(fb)
    zb = fb.load_depth()
    pts = Xa[va]
    xb = transform_points(invert_pose(fb.pose), pts)
    K = fb.K
    front = xb[:, 2] > 0.1
    pts, xb = pts[front], xb[front]
    u = K[0, 0] * xb[:, 0] / xb[:, 2] + K[0, 2]
    v = K[1, 1] * xb[:, 1] / xb[:, 2] + K[1, 2]
    H, W = zb.shape
    inside = (u >= 0) & (v >= 0) & (u < W - 1) & (v < H - 1)
    pts, xb, u, v = pts[inside], xb[inside], u[inside], v[inside]
    u0, v0 = np.floor(u).astype(int), np.floor(v).astype(int)
    fu, fv = (u - u0)[:, None], (v - v0)[:, None]
    corners = [(v0, u0), (v0, u0 + 1), (v0 + 1, u0), (v0 + 1, u0 + 1)]
    zc = np.stack([zb[r, c] for r, c in corners], axis=1)
    same_surface = np.all(vb[v0, u0][:, None] & (zc > 0), axis=1) & (np.ptp(zc, axis=1) < 0.02 * zc.max(1))
    Xi = (Xb[v0, u0] * (1 - fu) * (1 - fv) + Xb[v0, u0 + 1] * fu * (1 - fv)
          + Xb[v0 + 1, u0] * (1 - fu) * fv + Xb[v0 + 1, u0 + 1] * fu * fv)
    zi = zc[:, 0] * ((1 - fu) * (1 - fv))[:, 0] + zc[:, 1] * (fu * (1 - fv))[:, 0] \
        + zc[:, 2] * ((1 - fu) * fv)[:, 0] + zc[:, 3] * (fu * fv)[:, 0]
    visible = same_surface & (np.abs(xb[:, 2] - zi) < 0.01)     # not occluded in B
    return np.linalg.norm(pts[visible] - Xi[visible], axis=1)


def test_multiview_consistency_without_noise(tmp_path):
    # 160x120 with fx = 146: a pixel-centre convention off by half a pixel would move points by
    # ~7 mm at 2 m, far above the half-millimetre depth quantisation this test tolerates
    root = _gen(tmp_path / "s", frames=30, width=160, height=120, sensor=CLEAN, train_sequences=1, test_sequences=0)
    frames = load_scene(root).frames("train")
    medians, counts = [], []
    for a in range(0, 29, 2):
        err = _cross_view_errors(frames[a], frames[a + 1])
        counts.append(len(err))
        if len(err) > 2000:
            medians.append(np.median(err))
    assert len(medians) >= 5, f"too few mutually visible points: {counts}"
    assert max(medians) < 1e-3, f"median cross-view error {max(medians) * 1000:.3f} mm"


def test_depth_of_a_known_wall_is_exact():
    # a camera 1.5 m from the room's x=0 wall, looking straight at it: depth is 1.5 m everywhere on it
    scene = synth.make_scene("room")
    K = intrinsics_matrix(60.0, 60.0, 39.5, 29.5)
    r = synth.Renderer(scene, K, 80, 60)
    C = np.array([1.5, 1.5, 1.3])
    T = make_pose(synth.look_at(C, C - np.array([1.0, 0, 0])), C)
    out = r.render(T)
    wall_index = next(i for i, q in enumerate(scene.quads) if np.allclose(q.normal, [1, 0, 0]) and q.origin[0] == 0)
    wall = out.quad == wall_index
    assert wall.sum() > 100
    np.testing.assert_allclose(out.depth[wall], 1.5, atol=1e-5)
    # the optical axis meets the wall at (0, 1.5, 1.3), i.e. the image centre (39.5, 29.5) sees y = 1.5
    v, u = np.nonzero(wall)
    y = C[1] - (u - K[0, 2]) / K[0, 0] * 1.5       # camera x (right) is world -y here
    np.testing.assert_allclose(np.sort(y)[[0, -1]], [C[1] - 39.5 / 60 * 1.5, C[1] + 39.5 / 60 * 1.5], atol=1e-9)


def test_unique_copies_make_two_uses_of_a_texture_differ():
    # two posters with the same photograph, each filmed head-on from the same distance (no lamp: the
    # light is then the same on both): identical images, unless the scene asks for unique copies (the
    # demo room does), which shifts the second poster's texture
    quads = [synth.rect((0, y, 1.0), (1, 0, 0), 1.6, 1.6, "astronaut") for y in (-1.0, 1.0)]
    K = intrinsics_matrix(60.0, 60.0, 40.0, 30.0)
    difference = {}
    for unique in (False, True):
        scene = synth.Scene("two", "", (2.0, 4.0, 2.0), quads, (np.zeros(3), np.ones(3)), unique_copies=unique)
        r = synth.Renderer(scene, K, 80, 60)
        images = []
        for q, y in enumerate((-1.0, 1.0)):
            C = np.array([1.0, y, 1.0])
            T = make_pose(synth.look_at(C, C - np.array([1.0, 0, 0])), C)
            out = r.render(T)
            assert (out.quad == q).all()      # the poster fills the view
            images.append(r.shade(out, T, synth.Lighting(lamp=0.0)))
        difference[unique] = float(np.abs(images[0] - images[1]).mean())
    assert difference[False] < 1e-3 and difference[True] > 10.0


def test_noise_and_holes_when_on(tmp_path):
    clean = load_scene(_gen(tmp_path / "clean", sensor=CLEAN)).frames("train")
    noisy = load_scene(_gen(tmp_path / "noisy")).frames("train")
    for fc, fn in zip(clean, noisy, strict=True):
        np.testing.assert_array_equal(fc.pose, fn.pose)           # same trajectory, only the sensor differs
    dc = np.stack([f.load_depth() for f in clean])
    dn = np.stack([f.load_depth() for f in noisy])
    assert (dc > 0).mean() > 0.999                                  # a closed room: no holes without --holes
    assert (dn == 0).mean() > 0.01                                  # holes with them
    both = (dc > 0) & (dn > 0)
    diff = (dn - dc)[both]
    assert 0.0005 < diff.std() < 0.02 and abs(np.median(diff)) < 0.002   # zero-mean noise of a few mm
    ic = np.stack([f.load_image() for f in clean]).astype(float)
    inn = np.stack([f.load_image() for f in noisy]).astype(float)
    assert np.abs(inn - ic).mean() > 2.0


def test_noise_switches_are_independent(tmp_path):
    only_holes = synth.SensorOptions(depth_noise=False, holes=True, image_noise=False, lighting_change=False,
                                     blur=False)
    clean = load_scene(_gen(tmp_path / "a", sensor=CLEAN)).frames("train")[1]
    holes = load_scene(_gen(tmp_path / "b", sensor=only_holes)).frames("train")[1]
    dc, dh = clean.load_depth(), holes.load_depth()
    kept = dh > 0
    assert (~kept).any()
    np.testing.assert_array_equal(dh[kept], dc[kept])               # no noise on what remains
    np.testing.assert_array_equal(holes.load_image(), clean.load_image())


def test_same_seed_is_byte_identical(tmp_path):
    a = _gen(tmp_path / "a", seed=3)
    b = _gen(tmp_path / "b", seed=3)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 2 * 4 * 3 + 5
    for f in files_a:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


def test_other_seed_gives_other_trajectory(tmp_path):
    a = load_scene(_gen(tmp_path / "a", seed=0)).frames("train")
    b = load_scene(_gen(tmp_path / "b", seed=1)).frames("train")
    ca = np.stack([f.pose[:3, 3] for f in a])
    cb = np.stack([f.pose[:3, 3] for f in b])
    assert np.linalg.norm(ca - cb, axis=1).mean() > 0.1


def test_test_sequences_are_separate_trajectories(tmp_path):
    scene = load_scene(_gen(tmp_path / "s", frames=8, train_sequences=2, test_sequences=1))
    seqs = {}
    for split in ("train", "test"):
        for f in scene.frames(split):
            seqs.setdefault(f.name.split("/")[0], []).append(f.pose[:3, 3])
    centres = [np.stack(v) for v in seqs.values()]
    for i in range(len(centres)):
        for j in range(i + 1, len(centres)):
            assert np.linalg.norm(centres[i] - centres[j], axis=1).mean() > 0.1


def test_layout_reads_with_the_right_counts(tmp_path):
    root = _gen(tmp_path / "s", frames=5, train_sequences=2, test_sequences=1, width=96, height=72)
    scene = load_scene(root)
    assert scene.layout == "7scenes"
    assert len(scene.frames("train")) == 10 and len(scene.frames("test")) == 5
    assert (root / "TrainSplit.txt").read_text() == "sequence1\nsequence2\n"
    assert (root / "TestSplit.txt").read_text() == "sequence3\n"
    f = scene.frames("test")[0]
    assert f.name == "seq-03/frame-000000.color.png"
    fd = f.load()
    assert fd.image.shape == (72, 96, 3) and fd.depth.shape == (72, 96)
    np.testing.assert_allclose(f.K, intrinsics_matrix(585 * 0.15, 585 * 0.15, 320.5 * 0.15 - 0.5, 240.5 * 0.15 - 0.5))
    assert (root / "synth.json").exists()


@pytest.mark.parametrize("preset", sorted(synth.PRESETS))
def test_presets_give_handheld_views_of_content(preset):
    scene = synth.make_scene(preset)
    space = synth.walk_space(scene, 0)   # a many-room scene's walks go through one of its rooms
    poses = synth.sample_trajectory(space, 40, np.random.default_rng(7))
    centres = poses[:, :3, 3]
    assert synth.free_space(space, centres, slack=0.15).all()
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    assert steps.max() < 3 * np.median(steps) + 0.02                 # smooth: no jumps
    fwd = poses[:, :3, 2]
    turn = np.degrees(np.arccos(np.clip(np.sum(fwd[1:] * fwd[:-1], axis=1), -1, 1)))
    assert turn.max() < 30
    r = synth.Renderer(scene, intrinsics_matrix(48.75, 48.75, 26.2, 19.5), 53, 40)
    for T in poses[::5]:
        d = r.render(T).depth
        assert (d > 0).mean() > 0.99                                  # closed scenes: every ray hits
        assert 0.4 < np.median(d) < 3.5, np.median(d)                  # looking at things 0.5-3 m away


def test_living_preset_keeps_its_distance_and_shows_things():
    """The demo's scene: no close-ups (the nearest 5 % of every view lie beyond ~0.8 m), and the
    room's furniture and pictures, not its walls, floor and ceiling, fill most views."""
    scene = synth.make_scene("living")
    shell = [i for i, q in enumerate(scene.quads) if q.interest < 0.3]
    assert len(shell) == 6
    r = synth.Renderer(scene, intrinsics_matrix(48.75, 48.75, 26.2, 19.5), 53, 40)
    near, content = [], []
    for seed in range(2):
        for T in synth.sample_trajectory(scene, 30, np.random.default_rng(seed)):
            rr = r.render(T)
            near.append(np.percentile(rr.depth, 5))
            content.append(1 - np.isin(rr.quad, shell).mean())
    assert min(near) > 0.75, min(near)
    assert np.median(content) > 0.35 and np.mean(np.array(content) < 0.1) < 0.1


def test_living_preset_films_one_half_of_the_room():
    """Look-at points all lie in the preset's half-space, drawn in the same proportions as without it;
    the camera's optical axes point into that half of the room."""
    import dataclasses

    from sceneloc.synth.trajectory import sample_scene_points
    scene = synth.make_scene("living")
    (direction, offset) = scene.look_halfspace
    pts, normals = sample_scene_points(scene, np.random.default_rng(0), 2000)
    assert len(pts) == len(normals) == 2000 and (pts @ np.array(direction) < offset).all()
    anywhere, _ = sample_scene_points(dataclasses.replace(scene, look_halfspace=None), np.random.default_rng(0), 2000)
    assert (anywhere @ np.array(direction) >= offset).mean() > 0.3        # the other half exists
    poses = synth.sample_trajectory(scene, 40, np.random.default_rng(3))
    assert (poses[:, :3, 2] @ np.array(direction) < 0).mean() > 0.9        # looking towards -x - y
    assert scene.fingerprint() == synth.make_scene("living").fingerprint()
    assert scene.fingerprint() != dataclasses.replace(scene, look_halfspace=None).fingerprint()


def test_test_walks_go_where_the_training_walks_went():
    """``inside`` test walks: separate walks (no training pose repeated) whose views mostly have a
    training view within 30 cm / 30 deg -- more often than walks drawn anywhere (``free``)."""
    from sceneloc.report.evaluation import near_training_share, nearest_training_distances
    scene = synth.make_scene("living")
    inside, free = [], []
    for seed in range(3):
        train = np.concatenate([synth.sample_trajectory(scene, 40, np.random.default_rng([seed, k]))
                                for k in range(3)])
        rng_args = [seed, 9]
        walk = synth.sample_trajectory(scene, 40, np.random.default_rng(rng_args), anchors=train)
        assert nearest_training_distances(train, walk).min() > 0.01
        inside.append(near_training_share(train, walk))
        free.append(near_training_share(train, synth.sample_trajectory(scene, 40, np.random.default_rng(rng_args))))
    assert min(inside) >= 0.5 and np.mean(inside) > np.mean(free) + 0.1, (inside, free)


def test_cli_writes_dataset_preview_and_info_reads_it(tmp_path, capsys):
    out, png = tmp_path / "s", tmp_path / "sheet.png"
    assert main(["synth", str(out), "--frames", "3", "--width", "64", "--height", "48", "--preview", str(png),
                 "--clean", "--quiet", "--seed", "5"]) == 0
    assert png.stat().st_size > 1000
    assert main(["info", str(out)]) == 0
    assert "train frames 9" in capsys.readouterr().out


@pytest.mark.parametrize("argv, needle", [
    (["--preset", "castle"], "--preset 'castle': unknown preset"),
    (["--frames", "0"], "--frames 0"),
    (["--train-sequences", "0"], "--train-sequences 0"),
    (["--intrinsics", "1,2"], "--intrinsics"),
    (["--preview", "sheet.txt"], "--preview"),
])
def test_cli_bad_options_exit_2_with_one_line(tmp_path, capsys, argv, needle):
    assert main(["synth", str(tmp_path / "s"), "--quiet", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err
    assert not (tmp_path / "s").exists()                               # checked before anything is written


def test_cli_refuses_a_non_empty_out_dir_without_force(tmp_path, capsys):
    out = tmp_path / "s"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["synth", str(out), "--quiet", "--frames", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert str(out) in err and "--force" in err and "\n" not in err
    # --force writes the dataset, keeps unrelated files and drops frames of an earlier, longer run
    small = ["--quiet", "--width", "48", "--height", "36", "--train-sequences", "1", "--test-sequences", "0"]
    assert main(["synth", str(out), "--force", "--frames", "5", *small]) == 0
    assert main(["synth", str(out), "--force", "--frames", "2", *small]) == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert len(load_scene(out).frames("train")) == 2


def test_depth_is_uint16_millimetres_with_zero_for_holes(tmp_path):
    import cv2
    root = _gen(tmp_path / "s", frames=2)
    raw = cv2.imread(str(root / "seq-01" / "frame-000000.depth.png"), cv2.IMREAD_ANYDEPTH)
    assert raw.dtype == np.uint16 and (raw == 0).any() and 300 < np.median(raw[raw > 0]) < 5000
    d = read_depth(root / "seq-01" / "frame-000000.depth.png")
    np.testing.assert_allclose(d[raw > 0], raw[raw > 0] / 1000.0, rtol=1e-6)
