"""``sceneloc localize MAP --images DIR|LIST.txt``: new photos without ground truth, one map load,
the usual pose file; queries are checked before the map localizes the first."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sceneloc.cli.main import main
from sceneloc.data.dataset import load_scene
from sceneloc.errors import SceneLocError
from sceneloc.geometry import read_pose_file
from sceneloc.localize.batch import find_queries, read_query_list

ROOT = Path(__file__).resolve().parents[1]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("sceneloc: error:") and "\n" not in err, err
    return err


@pytest.fixture
def queries(overfit_scene, tmp_path) -> tuple[Path, list]:
    """The train split's images (which the tiny map is fitted to) copied into a folder of their own."""
    frames = load_scene(overfit_scene).frames("train")
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, f in enumerate(frames):
        shutil.copy(f.image_path, folder / f"q{i}.png")
    return folder, frames


def test_a_folder_of_photos_gives_the_dataset_modes_poses(tiny_map, overfit_scene, queries, tmp_path, capsys):
    folder, frames = queries
    out = tmp_path / "poses.txt"
    assert main(["localize", str(tiny_map), "--images", str(folder), "--out", str(out)]) == 0
    assert f"{len(frames)} images localized" in capsys.readouterr().out
    batch = read_pose_file(out)
    assert [r.image for r in batch] == [f"q{i}.png" for i in range(len(frames))]
    assert {"probability", "inliers", "time_ms"} <= set(batch[0].extras)
    # the same seeds per position as dataset mode: the same poses, image by image
    ref = tmp_path / "ref.txt"
    assert main(["localize", str(tiny_map), str(overfit_scene), "--split", "train", "--out", str(ref)]) == 0
    capsys.readouterr()
    for a, b in zip(batch, read_pose_file(ref), strict=True):
        assert (a.pose is None) == (b.pose is None)
        if a.pose is not None:
            np.testing.assert_array_equal(a.pose, b.pose)
    # the output is not overwritten without --force
    assert main(["localize", str(tiny_map), "--images", str(folder), "--out", str(out)]) == 2
    assert "--force" in one_line_error(capsys)


def test_an_hloc_query_list_with_per_image_intrinsics(tiny_map, queries, tmp_path, capsys):
    folder, frames = queries
    K = frames[0].K
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    lst = folder / "queries.txt"
    lst.write_text(f"# name model w h params\nq0.png PINHOLE 160 120 {fx} {fy} {cx} {cy}\n"
                   f"q1.png SIMPLE_PINHOLE 160 120 {fx} {cx} {cy}\n")
    parsed = read_query_list(lst)
    np.testing.assert_allclose(parsed[0].K, K)
    np.testing.assert_allclose(parsed[1].K, [[fx, 0, cx], [0, fx, cy], [0, 0, 1]])
    out = tmp_path / "poses.txt"
    assert main(["localize", str(tiny_map), "--images", str(lst), "--out", str(out)]) == 0
    assert [r.image for r in read_pose_file(out)] == ["q0.png", "q1.png"]


@pytest.mark.parametrize("line, fragment", [
    ("q0.png PINHOLE 320 240 100 100 160 120", "image is 160x120 but"),
    ("q0.png OPENCV 160 120 100 100 80 60 0.1 0 0 0", "camera model 'OPENCV'"),
    ("q0.png SIMPLE_RADIAL 160 120 100 80 60 0.2", "no distortion"),
    ("q0.png PINHOLE 160 120 100 100 800 60", "principal point"),
    ("q0.png PINHOLE 160 120 -100 100 80 60", "focal lengths must be positive"),
    ("missing.png", "missing image"),
])
def test_bad_query_lists_are_one_line_before_the_map_loads(tiny_map, queries, tmp_path, capsys, line, fragment):
    folder, _ = queries
    lst = folder / "queries.txt"
    lst.write_text(line + "\n")
    assert main(["localize", str(tiny_map), "--images", str(lst), "--out", str(tmp_path / "p.txt")]) == 2
    assert fragment in one_line_error(capsys)
    assert not (tmp_path / "p.txt").exists()


def test_batch_input_conflicts_and_depth(tiny_map, overfit_scene, queries, tmp_path, capsys):
    folder, frames = queries
    out = str(tmp_path / "p.txt")
    assert main(["localize", str(tiny_map), str(overfit_scene), "--images", str(folder), "--out", out]) == 2
    assert "DATASET and --images" in one_line_error(capsys)
    assert main(["localize", str(tiny_map), "--images", str(folder)]) == 2
    assert "--out POSES.txt is required" in one_line_error(capsys)
    assert main(["localize", str(tiny_map), "--images", str(tmp_path / "none"), "--out", out]) == 2
    assert "no such folder" in one_line_error(capsys)
    depth = tmp_path / "depth"
    depth.mkdir()
    assert main(["localize", str(tiny_map), "--images", str(folder), "--depth-dir", str(depth), "--out", out]) == 2
    assert "missing depth map" in one_line_error(capsys)
    for i, f in enumerate(frames):
        shutil.copy(f.depth_path, depth / f"q{i}.png")
    assert main(["localize", str(tiny_map), "--images", str(folder), "--depth-dir", str(depth), "--out", out]) == 0
    assert all(r.pose is not None for r in read_pose_file(out))
    with pytest.raises(SceneLocError, match="listed twice"):
        (folder / "dup.txt").write_text("q0.png\nq0.png\n")
        find_queries(folder / "dup.txt")


@pytest.mark.slow
def test_localize_is_bit_identical_between_processes(tiny_map, queries, tmp_path):
    folder, _ = queries
    texts = []
    for k in range(2):
        out = tmp_path / f"p{k}.txt"
        done = subprocess.run([sys.executable, "-m", "sceneloc.cli", "localize", str(tiny_map), "--images",
                               str(folder), "--out", str(out), "--device", "cpu"],
                              capture_output=True, text=True, timeout=300, cwd=ROOT,
                              env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr
        # poses and probabilities, not the timing columns
        texts.append([line.split()[:8] for line in out.read_text().splitlines() if not line.startswith("#")])
    assert texts[0] == texts[1]
