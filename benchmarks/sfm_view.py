"""A 7-Scenes-layout view of redkitchen whose poses are the SfM pseudo ground truth (nothing is copied).

The SfM pseudo ground truth of Brachmann et al. (ICCV 2021, "On the Limits of Pseudo Ground Truth in
Visual Camera Re-Localization") gives world-to-camera poses of the **colour** camera with its own focal
length (``image qw qx qy qz tx ty tz f`` lines; see the data's NOTICE.md). The view links every colour
image and depth map of the source dataset, writes each frame's camera-to-world ``pose.txt`` from the
SfM pose, and writes ``color-intrinsics.txt`` with the SfM focal length, so that ``sceneloc map`` and
``sceneloc evaluate`` map AND score with the same ground truth. The depth camera stays the dataset's
(``camera-intrinsics.txt``), registered to the colour images as for the D-SLAM poses.

Usage:
    python benchmarks/sfm_view.py ../shared/data/7scenes-redkitchen \
        ../shared/data/7scenes-redkitchen-sfm-pgt/poses_sfm_pgt.txt OUT --train 2 3 --test 1 [--compare]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

from sceneloc.capture.sfm import umeyama
from sceneloc.data.dataset import INTRINSICS_FILES, POSE_CAMERA_FILE, load_scene
from sceneloc.data.readers import read_image
from sceneloc.geometry import intrinsics_matrix, invert_pose, make_pose, project_to_so3, read_pose_file


def _link(src: Path, dst: Path) -> None:
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    dst.symlink_to(src.resolve())


def sfm_view(root: Path, pgt_file: Path, out: Path, train: list[int], test: list[int], scale: float = 1.0) -> Path:
    """Write the view into ``out`` (links, pose files, split and intrinsics files) and return it.
    ``scale`` multiplies the camera positions (the world scaled about its origin): the SfM world's metre
    is not quite the depth camera's (``compare``), and depth fused at poses of another scale disagrees
    with itself between near and far views.

    Only frames of the listed sequences that the pseudo ground truth poses are included; the focal
    length is the file's (one camera for every image, principal point at the image centre, as in
    COLMAP's SIMPLE_PINHOLE)."""
    records = read_pose_file(pgt_file)
    focal = {rec.extras.get("col0", rec.extras.get("f")) for rec in records}
    if len(focal) != 1 or None in focal:
        raise SystemExit(f"{pgt_file}: expected one focal length in the last column, got {sorted(map(str, focal))}")
    wanted = {f"seq-{n:02d}" for n in set(train) | set(test)}
    image_hw = None
    for rec in records:
        seq, name = rec.image.split("/")
        if seq not in wanted or rec.pose is None:
            continue
        stem = name.removesuffix(".color.jpg").removesuffix(".color.png")
        src_dir, dst_dir = root / seq, out / seq
        dst_dir.mkdir(parents=True, exist_ok=True)
        _link(src_dir / name, dst_dir / name)
        image_hw = image_hw or read_image(src_dir / name).shape[:2]
        if (src_dir / f"{stem}.depth.png").exists():
            _link(src_dir / f"{stem}.depth.png", dst_dir / f"{stem}.depth.png")
        T_wc = rec.pose.copy()
        T_wc[:3, 3] *= scale
        np.savetxt(dst_dir / f"{stem}.pose.txt", T_wc)   # camera-to-world, as 7-Scenes' pose.txt
    for name, seqs in (("TrainSplit.txt", train), ("TestSplit.txt", test)):
        (out / name).write_text("".join(f"sequence{n}\n" for n in seqs))
    (out / POSE_CAMERA_FILE).write_text("colour\n")   # the SfM poses are the colour camera's
    depth_file, colour_file = INTRINSICS_FILES
    shutil.copyfile(root / depth_file, out / depth_file)
    if image_hw is None:
        raise SystemExit(f"{pgt_file}: no pose of sequences {sorted(wanted)}")
    f = float(focal.pop())  # type: ignore[arg-type]
    np.savetxt(out / colour_file, intrinsics_matrix(f, f, image_hw[1] / 2, image_hw[0] / 2))
    return out


def compare(dslam_view: Path, sfm_view_root: Path) -> dict:
    """How the two ground truths of the same frames relate: the similarity that maps the SfM camera
    centres onto the D-SLAM ones (its scale: the SfM world's metre in D-SLAM metres, the depth's), the
    centres' residual after it, and per test sequence the mean and spread of the SfM camera centre in
    the D-SLAM camera's frame (x right, y down, z forward), in cm."""
    a, b = load_scene(dslam_view), load_scene(sfm_view_root)
    fa = {f.name: f.pose for split in ("train", "test") for f in a.frames(split)}
    fb = {f.name: f.pose for split in ("train", "test") for f in b.frames(split)}
    names = sorted(set(fa) & set(fb))
    Ta, Tb = np.stack([fa[n] for n in names]), np.stack([fb[n] for n in names])
    s, R, t = umeyama(Tb[:, :3, 3], Ta[:, :3, 3])
    centres = s * Tb[:, :3, 3] @ R.T + t
    residual = np.linalg.norm(centres - Ta[:, :3, 3], axis=1)
    local = np.einsum("nji,nj->ni", Ta[:, :3, :3], centres - Ta[:, :3, 3])   # R_wc^T (c - c_wc)
    seqs = {}
    for seq in sorted({n.split("/")[0] for n in names}):
        rows = np.array([n.startswith(seq) for n in names])
        seqs[seq] = {"mean_cm": (100 * local[rows].mean(0)).round(2).tolist(),
                     "sd_cm": (100 * local[rows].std(0)).round(2).tolist()}
    return {"frames": len(names), "scale": s, "median_residual_cm": float(100 * np.median(residual)),
            "camera_frame_offset": seqs}


def carried_poses(T_from: np.ndarray, fit_from: np.ndarray, fit_to: np.ndarray) -> np.ndarray:
    """Camera-to-world poses ``(N, 4, 4)`` of one ground truth carried into another's world by the
    similarity that maps the camera centres ``fit_from (M, 3)`` onto ``fit_to (M, 3)`` (the same M frames
    under both): rotations turned, centres scaled, turned and moved."""
    s, R, t = umeyama(fit_from, fit_to)
    out = T_from.copy()
    out[:, :3, :3] = R @ T_from[:, :3, :3]
    out[:, :3, 3] = s * T_from[:, :3, 3] @ R.T + t
    return out


def camera_offset(T_est: np.ndarray, T_true: np.ndarray) -> np.ndarray:
    """The constant camera-frame transform ``X (4, 4)`` with ``T_est @ X ~ T_true`` over poses ``(N, 4, 4)``:
    the chordal mean of the relative rotations and the mean relative translation (two cameras on one rig)."""
    relative = invert_pose(T_est) @ T_true
    return make_pose(project_to_so3(relative[:, :3, :3].sum(axis=0)), relative[:, :3, 3].mean(axis=0))


def agreement(dslam_view: Path, sfm_view_root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """How far one ground truth of a fold's test frames lies from the other, as a localizer consistent with
    it would be scored under the other. Everything that relates the two is fitted on the MAPPING frames
    only (the world a map learns from them): the similarity between the worlds (camera centres) and then a
    constant camera-frame transform (the two cameras as one rig). Returns ``{"sfm_vs_dslam": (estimates,
    truths), "dslam_vs_sfm": ...}``, each ``(N, 4, 4)``: ``sfm_vs_dslam`` is the SfM pose (colour camera)
    carried into the D-SLAM world and scored by D-SLAM; ``dslam_vs_sfm`` the other way round."""
    a, b = load_scene(dslam_view), load_scene(sfm_view_root)

    def poses(scene, split: str) -> dict[str, np.ndarray]:
        return {f.name: f.pose for f in scene.frames(split)}

    train_a, train_b = poses(a, "train"), poses(b, "train")
    test_a, test_b = poses(a, "test"), poses(b, "test")
    fit = sorted(set(train_a) & set(train_b))
    names = sorted(set(test_a) & set(test_b))
    Fa, Fb = np.stack([train_a[n] for n in fit]), np.stack([train_b[n] for n in fit])
    Ta, Tb = np.stack([test_a[n] for n in names]), np.stack([test_b[n] for n in names])
    out = {}
    directions = {"sfm_vs_dslam": (Fb, Fa, Tb, Ta), "dslam_vs_sfm": (Fa, Fb, Ta, Tb)}
    for key, (F_from, F_to, T_from, T_to) in directions.items():
        centres_from, centres_to = F_from[:, :3, 3], F_to[:, :3, 3]
        rig = camera_offset(carried_poses(F_from, centres_from, centres_to), F_to)
        out[key] = (carried_poses(T_from, centres_from, centres_to) @ rig, T_to)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", help="7-Scenes-layout dataset (its colour images and depth maps are linked)")
    ap.add_argument("pgt", help="pseudo ground truth file: image qw qx qy qz tx ty tz f (world-to-camera)")
    ap.add_argument("out")
    ap.add_argument("--train", type=int, nargs="+", required=True)
    ap.add_argument("--test", type=int, nargs="+", required=True)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the camera positions (default 1)")
    ap.add_argument("--compare", action="store_true", help="also print how the SfM poses relate to ROOT's")
    a = ap.parse_args()
    out = sfm_view(Path(a.root), Path(a.pgt), Path(a.out), a.train, a.test, a.scale)
    print(out)
    if a.compare:
        print(compare(Path(a.root), out))


if __name__ == "__main__":
    sys.exit(main())
