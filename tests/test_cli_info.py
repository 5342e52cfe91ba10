"""`sceneloc info` (issue 2): real output on redkitchen, and one-line errors for each bad input."""

import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from sceneloc import geometry as g
from sceneloc.cli.main import main
from sceneloc.data.dataset import load_scene
from sceneloc.errors import SceneLocError

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "sceneloc.cli", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


# ------------------------------------------------------------------------------------ real data


def test_info_redkitchen(redkitchen):
    res = run_cli("info", redkitchen)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    out = res.stdout
    # frame counts: compared with the colour images in the folders the split files list
    for split, fname, expected in (("train", "TrainSplit.txt", 600), ("test", "TestSplit.txt", 200)):
        seqs = [int(s) for s in re.findall(r"sequence(\d+)", (redkitchen / fname).read_text())]
        n = sum(len(list((redkitchen / f"seq-{s:02d}").glob("frame-*.color.*"))) for s in seqs)
        assert n == expected
        assert re.search(rf"^{split} frames\s+{n}$", out, re.M), out
    assert re.search(r"^image size\s+640x480$", out, re.M)
    # the Kinect's two cameras: images from the colour one, depth registered from the depth one
    assert re.search(r"^intrinsics\s+fx=525.00 fy=525.00 cx=320.00 cy=240.00$", out, re.M), out
    assert re.search(r"^depth camera fx=585.00 fy=585.00 cx=320.00 cy=240.00: depth maps registered", out, re.M), out
    m = re.search(r"^diameter\s+([0-9.]+) m\s+\(Tukey c = ([0-9.]+) m\)$", out, re.M)
    assert m, out
    diameter, c = float(m.group(1)), float(m.group(2))
    assert abs(c - diameter / 2) <= 0.006
    # independent estimate: robust box diagonal of the world points of 12 training frames
    scene = load_scene(redkitchen)
    pts = []
    for f in scene.frames("train")[::50]:
        X, valid, _ = f.load().scene_coordinates(8)
        pts.append(X[valid])
    P = np.concatenate(pts)
    ref = np.linalg.norm(np.percentile(P, 99.5, 0) - np.percentile(P, 0.5, 0))
    assert abs(diameter - ref) < 0.15 * ref, (diameter, ref)


def test_info_missing_directory_subprocess(tmp_path):
    res = run_cli("info", tmp_path / "nope")
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert res.stderr.count("\n") == 1 and res.stdout == ""
    assert res.stderr.startswith("sceneloc: error: ")
    assert f"{tmp_path / 'nope'}: dataset directory does not exist" in res.stderr


# ------------------------------------------------------------------ tiny 7-Scenes datasets


def _write_frame(seq, i, shape=(48, 64)):
    rng = np.random.default_rng(i)
    stem = seq / f"frame-{i:06d}"
    assert cv2.imwrite(f"{stem}.color.png", rng.integers(0, 255, (*shape, 3), dtype=np.uint8))
    assert cv2.imwrite(f"{stem}.depth.png", np.full(shape, 1000 + 100 * i, np.uint16))
    T = g.make_pose(g.quaternion_to_matrix([1, 0.1 * i, 0.2, -0.1]), [0.1 * i, 0.0, -0.3])
    Path(f"{stem}.pose.txt").write_text("\n".join("\t".join(f"{v:.7e}" for v in row) for row in T) + "\n")


def make_7scenes(root, frames=2):
    """seq-01 (train) and seq-02 (test), `frames` frames of 64x48 each."""
    for n in (1, 2):
        seq = root / f"seq-{n:02d}"
        seq.mkdir(parents=True)
        for i in range(frames):
            _write_frame(seq, i)
    (root / "TrainSplit.txt").write_text("sequence1\n")
    (root / "TestSplit.txt").write_text("sequence2\n")
    return root


def test_info_into_a_closed_pipe_is_quiet(tmp_path):
    """`sceneloc info DATA | head -1`: the reader leaves early; no traceback, exit 0."""
    root = make_7scenes(tmp_path / "ds")
    proc = subprocess.Popen([sys.executable, "-m", "sceneloc.cli", "info", str(root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()   # before the command writes: every write meets a closed pipe
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_info_tiny_dataset_ok(tmp_path, capsys):
    root = make_7scenes(tmp_path / "ds")
    assert main(["info", str(root)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^train frames\s+2$", out, re.M) and re.search(r"^test frames\s+2$", out, re.M)
    assert "64x48" in out and "fx=585.00" in out and "depth camera fx" not in out   # not a Kinect at 64x48
    assert "poses        the depth camera's, as sceneloc map takes them without pose-camera.txt" in out
    (root / "pose-camera.txt").write_text("colour\n")
    assert main(["info", str(root)]) == 0
    assert "poses        the colour camera's (pose-camera.txt)" in capsys.readouterr().out


def _bad_missing_pose(root):
    (root / "seq-01" / "frame-000001.pose.txt").unlink()
    return root / "seq-01" / "frame-000001.pose.txt", "missing pose file"


def _bad_pose_count(root):
    p = root / "seq-02" / "frame-000000.pose.txt"
    p.write_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0\n")
    return p, "expected 16 numbers, found 15"


def _bad_pose_text(root):
    p = root / "seq-01" / "frame-000000.pose.txt"
    p.write_text(p.read_text().replace("0.0000000e+00", "zero", 1))
    return p, "non-numeric"


def _bad_pose_nonrigid(root):
    p = root / "seq-02" / "frame-000001.pose.txt"
    T = np.eye(4)
    T[:3, :3] *= 1.5
    np.savetxt(p, T)
    return p, "not a rigid transform"


def _garbage_image(root, seq="seq-01", magic=b""):
    p = root / seq / "frame-000001.color.png"
    p.write_bytes(magic + np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    return p, "unreadable image"


def _bad_image_train(root):
    return _garbage_image(root)


def _bad_image_test(root):  # not decoded by `info`: caught by the cheap per-file check at load
    return _garbage_image(root, "seq-02")


def _bad_image_png_magic(root):  # PNG signature, broken body: only decoding finds it (train split)
    return _garbage_image(root, "seq-01", b"\x89PNG\r\n\x1a\n")


def _empty_image(root):
    p = root / "seq-02" / "frame-000000.color.png"
    p.write_bytes(b"")
    return p, "empty file"


def _empty_depth(root):
    p = root / "seq-02" / "frame-000001.depth.png"
    p.write_bytes(b"")
    return p, "unreadable depth map"


def _bad_depth_size(root):
    p = root / "seq-01" / "frame-000000.depth.png"
    cv2.imwrite(str(p), np.full((24, 32), 1000, np.uint16))
    return p, "depth map is 32x24 but its image is 64x48"


def _empty_split_file(root):
    p = root / "TrainSplit.txt"
    p.write_text("\n")
    return p, "empty split"


def _empty_split_folder(root):
    (root / "seq-03").mkdir()
    p = root / "TestSplit.txt"
    p.write_text("sequence2\nsequence3\n")
    return root / "seq-03", "empty split folder"


def _split_missing_folder(root):
    p = root / "TestSplit.txt"
    p.write_text("sequence7\n")
    return p, "folder seq-07 does not exist"


def _malformed_split(root):
    p = root / "TrainSplit.txt"
    p.write_text("seq1\n")
    return p, "malformed split file"


def _neither_layout(root):
    for f in ("TrainSplit.txt", "TestSplit.txt"):
        (root / f).unlink()
    return root, "neither 7-Scenes layout"


def _not_a_directory(root):
    return root / "TrainSplit.txt", "is not a directory"


def _bad_intrinsics(root):
    p = root / "camera-intrinsics.txt"
    p.write_text("585 0 320\n0 585 240\n")
    return p, "malformed calibration file"


BAD_INPUTS = [_bad_missing_pose, _bad_pose_count, _bad_pose_text, _bad_pose_nonrigid, _bad_image_train,
              _bad_image_test, _bad_image_png_magic, _empty_image, _empty_depth, _bad_depth_size,
              _empty_split_file, _empty_split_folder, _split_missing_folder, _malformed_split,
              _neither_layout, _not_a_directory, _bad_intrinsics]


@pytest.mark.parametrize("breaker", BAD_INPUTS, ids=lambda f: f.__name__.strip("_"))
def test_info_bad_input_one_line_error(tmp_path, capfd, breaker):
    root = make_7scenes(tmp_path / "ds")
    bad_file, problem = breaker(root)
    target = root if breaker is not _not_a_directory else bad_file
    code = main(["info", str(target)])
    out, err = capfd.readouterr()  # capfd: also catches what OpenCV's C++ code writes to fd 2
    assert code == 2, (out, err)
    assert "Traceback" not in err and out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith(f"sceneloc: error: {bad_file}:"), err
    assert problem in err, err


def test_unknown_split_names_dataset(tmp_path):
    scene = load_scene(make_7scenes(tmp_path / "ds"))
    with pytest.raises(SceneLocError) as e:
        scene.frames("val")
    assert str(e.value) == f"{tmp_path / 'ds'}: unknown split 'val' (this dataset has: train, test)"


def test_refuse_to_overwrite(tmp_path):
    from sceneloc.errors import SceneLocError, refuse_to_overwrite
    assert refuse_to_overwrite(tmp_path / "new", allowed=False) is False        # absent: nothing to guard
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("user's")
    with pytest.raises(SceneLocError, match=r"full: directory is not empty \(use --resume\)"):
        refuse_to_overwrite(tmp_path / "full", allowed=False, hint="use --resume")
    assert refuse_to_overwrite(tmp_path / "full", allowed=True) is True         # the caller cleans up
    assert (tmp_path / "full" / "x.txt").exists()                               # and only the caller
    with pytest.raises(SceneLocError, match="x.txt: exists and is not a directory"):
        refuse_to_overwrite(tmp_path / "full" / "x.txt", allowed=True)
