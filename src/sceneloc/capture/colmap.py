"""COLMAP sparse model -> sceneloc dataset (DSAC*/ACE layout), read with pycolmap.

What is written into ``OUT``::

    train|test/rgb/<flat name>          the image (copied, or a symlink with --link)
    train|test/poses/<flat name>.txt    4x4 camera-to-world, OpenCV axes, in the units of import_info.json
    train|test/calibration/<...>.txt    3x3 K of this image's camera (sceneloc pixel convention)
    train|test/depth/<flat name>.png    uint16 mm, only where the user gave depth maps
    import_info.json                    source, frame, units, scale, split rule, skipped images

Conventions converted here, because each one silently ruins a map when got wrong:

* COLMAP stores **world-to-camera** ``cam_from_world`` (R, t); sceneloc poses are camera-to-world,
  so ``T_wc = inv(T_cw)``. Both use OpenCV camera axes (x right, y down, z forward).
* COLMAP puts the *corner* of the top-left pixel at (0, 0), so that pixel's centre is (0.5, 0.5);
  sceneloc puts the centre at (0, 0). Hence ``cx_sceneloc = cx_colmap - 0.5`` (same for cy and for
  keypoints).
* The world frame is the model's own (COLMAP's is arbitrary: neither gravity-aligned nor metric
  unless the user aligned it); the units are the model's unless a scale is applied.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sceneloc.data.dataset import POSE_CAMERA_FILE
from sceneloc.data.readers import IMAGE_SUFFIXES, check_image_file, image_header, read_depth
from sceneloc.errors import SceneLocError
from sceneloc.geometry import intrinsics_matrix, invert_pose
from sceneloc.validation import check_intrinsics, check_output_path

#: Camera models that are pinhole, and the indices of their (fx, fy, cx, cy) in ``params``.
PINHOLE_PARAMS = {"SIMPLE_PINHOLE": (0, 0, 1, 2), "PINHOLE": (0, 1, 2, 3)}
#: Models with distortion whose pinhole part we can take when every distortion term is zero.
DISTORTED_PARAMS = {"SIMPLE_RADIAL": (0, 0, 1, 2), "RADIAL": (0, 0, 1, 2), "OPENCV": (0, 1, 2, 3),
                    "FULL_OPENCV": (0, 1, 2, 3)}
#: COLMAP pixel (0.5, 0.5) is the centre of the top-left pixel, sceneloc's (0, 0).
COLMAP_PIXEL_OFFSET = 0.5


def pycolmap_module():
    """pycolmap, or a one-line error saying how to get it (it is an optional dependency)."""
    try:
        import pycolmap
    except ImportError:
        raise SceneLocError("this command needs pycolmap: pip install 'sceneloc[colmap]' "
                            "(or pip install 'pycolmap>=4.2,<5')") from None
    return pycolmap


@dataclass
class View:
    """One registered image of a model: ``name`` relative to the image folder, pose ``T_wc (4, 4)``
    in the model's units, ``K (3, 3)`` in sceneloc's pixel convention."""
    name: str
    T_wc: np.ndarray
    K: np.ndarray
    camera_id: int
    size: tuple[int, int]       # (W, H) of the camera


def camera_matrix(camera, where: str = "") -> np.ndarray:
    """3x3 K of a pycolmap camera in sceneloc's convention; a clear error for a distorted model."""
    name = camera.model.name
    params = np.asarray(camera.params, dtype=np.float64)
    if name in PINHOLE_PARAMS:
        idx = PINHOLE_PARAMS[name]
    elif name in DISTORTED_PARAMS and np.all(np.abs(np.delete(params, sorted(set(DISTORTED_PARAMS[name])))) < 1e-12):
        idx = DISTORTED_PARAMS[name]        # a distortion model with all terms zero is a pinhole
    else:
        raise SceneLocError(f"{where}camera {camera.camera_id} uses the {name} model with distortion, which sceneloc "
                            f"does not support: undistort the model first (colmap image_undistorter, or "
                            f"pycolmap.undistort_images) and import the undistorted images and sparse model")
    fx, fy, cx, cy = (params[i] for i in idx)
    return intrinsics_matrix(fx, fy, cx - COLMAP_PIXEL_OFFSET, cy - COLMAP_PIXEL_OFFSET)


def read_model(model_dir: str | Path):
    """A COLMAP sparse model folder (cameras/images/points3D as .bin or .txt) -> pycolmap.Reconstruction."""
    pycolmap = pycolmap_module()
    d = Path(model_dir)
    if not d.is_dir():
        raise SceneLocError(f"{d}: COLMAP model folder {'is not a directory' if d.exists() else 'does not exist'}")
    found = [f"{n}.{e}" for n in ("cameras", "images") for e in ("bin", "txt") if (d / f"{n}.{e}").exists()]
    if not any(f.startswith("cameras") for f in found) or not any(f.startswith("images") for f in found):
        hint = " (it has subfolders: try MODEL_DIR/0)" if any(p.is_dir() for p in d.iterdir()) else ""
        raise SceneLocError(f"{d}: not a COLMAP sparse model (needs cameras.bin/.txt and images.bin/.txt){hint}")
    try:
        return pycolmap.Reconstruction(str(d))
    except Exception as e:  # pycolmap raises RuntimeError/ValueError with glog text
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise SceneLocError(f"{d}: cannot read COLMAP model ({msg})") from None


def registered_views(rec, where: str = "") -> list[View]:
    """Every registered image of ``rec`` (sorted by name) with its camera-to-world pose and K."""
    views = []
    for image_id in rec.reg_image_ids():
        im = rec.images[image_id]
        cam = rec.cameras[im.camera_id]
        T_cw = np.eye(4)
        T_cw[:3] = np.asarray(im.cam_from_world().matrix(), dtype=np.float64)
        views.append(View(im.name, invert_pose(T_cw), camera_matrix(cam, where), int(im.camera_id),
                          (int(cam.width), int(cam.height))))
    if not views:
        raise SceneLocError(f"{where}the model has no registered images (0 of {rec.num_images()} images have a pose)")
    return sorted(views, key=lambda v: v.name)


def all_image_names(rec) -> list[str]:
    return sorted(im.name for im in rec.images.values())


# ---------------------------------------------------------------------------------- the split


def split_names(names: list[str], test_every: int | None = None, test_list: str | Path | None = None,
                test_match: str | None = None) -> dict[str, str]:
    """name -> "train" | "test". Exactly one rule: every ``test_every``-th name in sorted order
    (starting with the ``test_every``-th, so the first image maps), the names listed one per line in
    ``test_list``, or the names matching the glob ``test_match``; none of them: everything is train."""
    rules = sum(x is not None for x in (test_every, test_list, test_match))
    if rules > 1:
        raise SceneLocError("give one split rule: --test-every N, --test-list FILE or --test-match GLOB")
    names = sorted(names)
    test: set[str] = set()
    if test_every is not None:
        if test_every < 2:
            raise SceneLocError(f"--test-every {test_every}: must be at least 2 (every N-th image goes to test)")
        test = {n for i, n in enumerate(names) if (i + 1) % test_every == 0}
    elif test_list is not None:
        p = Path(test_list)
        try:
            listed = [ln.strip() for ln in p.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        except (OSError, UnicodeDecodeError) as e:
            raise SceneLocError(f"{p}: cannot read test list ({e})") from None
        unknown = [n for n in listed if n not in set(names)]
        if unknown:
            raise SceneLocError(f"{p}: {len(unknown)} listed names are not registered images of the model "
                                f"(first: {unknown[0]!r})")
        test = set(listed)
    elif test_match is not None:
        test = {n for n in names if fnmatch.fnmatch(n, test_match)}
        if not test:
            raise SceneLocError(f"--test-match {test_match!r}: matches no registered image name")
    split = {n: ("test" if n in test else "train") for n in names}
    if not any(s == "train" for s in split.values()):
        raise SceneLocError("the split rule puts every image in test: nothing left to map")
    return split


# ------------------------------------------------------------------------------------ depth


def find_depth(depth_dir: Path, name: str) -> Path | None:
    """The depth map of image ``name`` in ``depth_dir``: the same relative path with a .png suffix,
    or with ``.color`` replaced by ``.depth`` (7-Scenes naming), or ``<stem>.depth.png``."""
    rel = Path(name)
    stem = rel.name[: -len(rel.suffix)] if rel.suffix else rel.name
    bases = [stem]
    if stem.endswith(".color"):
        bases.append(stem[: -len(".color")] + ".depth")
    bases.append(stem + ".depth")
    for b in bases:
        p = depth_dir / rel.parent / f"{b}.png"
        if p.is_file():
            return p
    return None


def keypoint_depth_ratios(rec, views: list[View], depth_of: dict[str, Path]) -> np.ndarray:
    """Per observed 3D point, sensor depth / model depth at its keypoint, over the views that have a
    depth map. Returns ``(n,)`` ratios; their median is the metres per model unit."""
    by_name = {rec.images[i].name: rec.images[i] for i in rec.reg_image_ids()}
    ratios = []
    for v in views:
        if v.name not in depth_of:
            continue
        im = by_name[v.name]
        depth = read_depth(depth_of[v.name])
        T_cw = np.asarray(im.cam_from_world().matrix())
        for p2d in im.points2D:
            if not p2d.has_point3D():
                continue
            z_model = (T_cw[:, :3] @ rec.points3D[p2d.point3D_id].xyz + T_cw[:, 3])[2]
            u, w = (np.asarray(p2d.xy) - COLMAP_PIXEL_OFFSET).round().astype(int)
            if z_model > 0 and 0 <= w < depth.shape[0] and 0 <= u < depth.shape[1] and depth[w, u] > 0:
                ratios.append(depth[w, u] / z_model)
    return np.asarray(ratios)


# ----------------------------------------------------------------------------------- writing


def flat_name(name: str) -> str:
    """``seq/frame.png`` -> ``seq_frame.png``: one folder per split, names stay unique and sortable."""
    return name.replace("/", "_").replace("\\", "_")


def prepare_output(out: Path, force: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not force:
            raise SceneLocError(f"{out}: exists and is not empty (use --force to replace it)")
        if out.is_dir():
            for sub in ("train", "test", "import_info.json"):
                p = out / sub
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        else:
            out.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _place(src: Path, dst: Path, link: bool) -> None:
    if link:
        os.symlink(src.resolve(), dst)
    else:
        shutil.copyfile(src, dst)


def write_dataset(out: Path, views: list[View], image_dir: Path, split: dict[str, str],
                  depth_of: dict[str, Path], scale: float, link: bool, info: dict) -> dict[str, int]:
    """Write ``views`` (poses multiplied by ``scale``) into the DSAC*/ACE layout under ``out``.
    Returns the frame count per split. ``info`` gets the counts and goes to import_info.json."""
    counts = {"train": 0, "test": 0}
    stems = [Path(flat_name(v.name)).stem for v in views]
    if len(set(stems)) != len(stems):
        dup = next(n for n in stems if stems.count(n) > 1)
        raise SceneLocError(f"two images flatten to the same name {dup!r} (e.g. x.jpg and x.png): rename one")
    for v in views:
        s = split[v.name]
        d = out / s
        for sub in ("rgb", "poses", "calibration") + (("depth",) if depth_of else ()):
            (d / sub).mkdir(parents=True, exist_ok=True)
        flat = flat_name(v.name)
        stem = Path(flat).stem
        _place(image_dir / v.name, d / "rgb" / flat, link)
        T = v.T_wc.copy()
        T[:3, 3] *= scale
        np.savetxt(d / "poses" / f"{stem}.txt", T, fmt="%.12f")
        np.savetxt(d / "calibration" / f"{stem}.txt", v.K, fmt="%.9f")
        if v.name in depth_of:
            _place(depth_of[v.name], d / "depth" / f"{stem}.png", link)
        counts[s] += 1
    info.update(frames=counts, images="symlinks" if link else "copies")      # the caller's dict, completed
    (out / "import_info.json").write_text(json.dumps(info, indent=2) + "\n")
    # SfM poses are the colour camera's: `sceneloc map` takes that as --pose-camera unless told otherwise
    (out / POSE_CAMERA_FILE).write_text("colour\n")
    return counts


def check_images(image_dir: Path, names: list[str], where: str) -> None:
    """Every image the model refers to exists and looks like an image (one line naming the first bad one)."""
    if not image_dir.is_dir():
        problem = "is not a directory" if image_dir.exists() else "does not exist"
        raise SceneLocError(f"{image_dir}: image folder {problem}")
    missing = [n for n in names if not (image_dir / n).is_file()]
    if missing:
        raise SceneLocError(f"{where}refers to {len(missing)} image(s) absent from {image_dir} "
                            f"(first: {image_dir / missing[0]})")
    for n in names:
        if Path(n).suffix.lower() not in IMAGE_SUFFIXES:
            raise SceneLocError(f"{image_dir / n}: sceneloc reads .png/.jpg images only")
        check_image_file(image_dir / n)


def check_cameras(rec, views: list[View], image_dir: Path, where: str) -> None:
    """Each view's camera is valid for its image: positive finite focal lengths, principal point
    inside, and the camera's size that of the image (a camera of another resolution gives wrong poses)."""
    for v in views:
        cam = rec.cameras[v.camera_id]
        h, w = image_header(image_dir / v.name)[:2]
        if (int(cam.height), int(cam.width)) != (h, w):
            raise SceneLocError(f"{where}camera {v.camera_id} is {cam.width}x{cam.height} but its image "
                                f"{image_dir / v.name} is {w}x{h}")
        check_intrinsics(v.K, (h, w), f"{where}camera {v.camera_id} of {v.name}")


def depth_maps(depth_dir: str | Path | None, views: list[View]) -> dict[str, Path]:
    """name -> depth map for the views that have one in ``depth_dir`` (an error when none has)."""
    if depth_dir is None:
        return {}
    d = Path(depth_dir)
    if not d.is_dir():
        raise SceneLocError(f"{d}: depth folder {'is not a directory' if d.exists() else 'does not exist'}")
    found = {v.name: p for v in views if (p := find_depth(d, v.name)) is not None}
    if not found:
        raise SceneLocError(f"{d}: no depth map matches any image (expected <image stem>.png or "
                            f"<name>.depth.png for <name>.color.jpg, uint16 PNG in mm)")
    return found


def resolve_scale(rec, views: list[View], depth_of: dict[str, Path], scale: float | None,
                  known_distance: tuple[str, str, float] | None) -> tuple[float, str]:
    """Metres per model unit and how it was found: an explicit ``scale``, a known distance between
    two camera centres, the median depth ratio at keypoints, or 1 (units stated as the model's)."""
    if scale is not None:
        if scale <= 0:
            raise SceneLocError(f"--scale {scale}: must be positive")
        return scale, "metres (scale given by the user)"
    if known_distance is not None:
        a, b, metres = known_distance
        centres = {v.name: v.T_wc[:3, 3] for v in views}
        for n in (a, b):
            if n not in centres:
                raise SceneLocError(f"--known-distance: {n!r} is not a registered image")
        d = float(np.linalg.norm(centres[a] - centres[b]))
        if d <= 1e-9 or metres <= 0:
            raise SceneLocError("--known-distance: the two cameras coincide or the distance is not positive")
        return metres / d, f"metres (from the known distance {metres} m between {a} and {b})"
    if depth_of:
        r = keypoint_depth_ratios(rec, views, depth_of)
        if len(r) < 20:
            raise SceneLocError(f"only {len(r)} keypoints with both a 3D point and sensor depth: cannot fix the scale")
        return float(np.median(r)), (f"metres (median sensor/model depth ratio over {len(r)} keypoints, "
                                     f"IQR {np.percentile(r, 25):.4f}-{np.percentile(r, 75):.4f})")
    return 1.0, "the model's own units (unknown: not metric unless the model was scaled)"


def import_colmap(model_dir: str | Path, image_dir: str | Path, out: str | Path, *, depth_dir=None,
                  test_every: int | None = None, test_list=None, test_match: str | None = None,
                  scale: float | None = None, known_distance=None, link: bool = False, force: bool = False,
                  rec=None, source: str | None = None, extra_info: dict | None = None) -> dict:
    """Import a COLMAP sparse model as a sceneloc dataset; returns the import_info dict."""
    where = f"{model_dir}: "
    rec = read_model(model_dir) if rec is None else rec
    views = registered_views(rec, where)
    image_dir, out = Path(image_dir), Path(out)
    check_output_path(out, "dir", [image_dir, depth_dir])   # not the model: sfm keeps it in OUT/colmap
    check_images(image_dir, [v.name for v in views], where)
    check_cameras(rec, views, image_dir, where)
    split = split_names([v.name for v in views], test_every, test_list, test_match)
    depth_of = depth_maps(depth_dir, views)
    s, units = resolve_scale(rec, views, depth_of, scale, known_distance)
    prepare_output(out, force)
    registered = {v.name for v in views}
    info = {
        "source": source or f"COLMAP model {Path(model_dir).resolve()}",
        "image_dir": str(image_dir.resolve()),
        "frame": "the COLMAP model's world frame (arbitrary origin and orientation; poses camera-to-world, "
                 "OpenCV camera axes x right, y down, z forward)",
        "units": units,
        "scale_applied": s,
        "split": ({"test_every": test_every} if test_every else {"test_list": str(test_list)} if test_list
                  else {"test_match": test_match} if test_match else "all train"),
        "cameras": {str(c): {"model": rec.cameras[c].model.name, "size": [rec.cameras[c].width, rec.cameras[c].height]}
                    for c in sorted({v.camera_id for v in views})},
        "registered": len(views),
        "unregistered": [n for n in all_image_names(rec) if n not in registered],
        "frames_without_depth": ([v.name for v in views if v.name not in depth_of] if depth_of
                                 else "all (no depth given)"),
        "pixel_convention": "calibration/*.txt in sceneloc's (pixel centre at 0,0): cx = COLMAP cx - 0.5",
        **(extra_info or {}),
    }
    write_dataset(out, views, image_dir, split, depth_of, s, link, info)
    return info
