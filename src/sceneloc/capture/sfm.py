"""Images with no poses -> a posed sceneloc dataset, by COLMAP's incremental SfM on the CPU (pycolmap).

Steps: SIFT extraction (one shared pinhole camera, or one per sub-folder with --camera-per-folder
for captures from several devices: fixed when the user gives --intrinsics, else a SIMPLE_PINHOLE
whose focal length bundle adjustment refines, so no distortion model reaches sceneloc), sequential
or exhaustive matching, incremental mapping, then the largest reconstruction is imported with
:func:`sceneloc.capture.colmap.import_colmap`.

Scale: SfM recovers a scene only up to a similarity. It is made metric by sensor depth maps
(--depth-dir: median ratio of sensor depth to model depth at the triangulated keypoints) or by a
known distance between two camera centres; without either the dataset says its units are
arbitrary (import_info.json, and the summary line).

Also the similarity alignment (Umeyama) used to compare a reconstruction with ground truth.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from sceneloc.capture.colmap import COLMAP_PIXEL_OFFSET, import_colmap, prepare_output, pycolmap_module
from sceneloc.data.readers import IMAGE_SUFFIXES, check_image_file
from sceneloc.errors import SceneLocError
from sceneloc.progress import progress as progress_bar
from sceneloc.validation import check_output_path

MATCHERS = ("auto", "sequential", "exhaustive")
#: --matcher auto: exhaustive up to this many images (every pair; robust to any order), sequential above.
AUTO_EXHAUSTIVE_MAX = 150


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity ``dst ~ s R src + t`` (Umeyama 1991, closed form).

    Args: ``src, dst (n, 3)`` corresponding points, n >= 3 not collinear.
    Returns: ``s`` scalar, ``R (3, 3)`` rotation (det +1), ``t (3,)``.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3 or len(src) < 3:
        raise ValueError(f"umeyama needs two (n>=3, 3) arrays of the same shape, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    var_s = (xs ** 2).sum() / len(src)
    if var_s <= 1e-18:
        raise ValueError("umeyama: the source points coincide")
    U, D, Vt = np.linalg.svd(xd.T @ xs / len(src))
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:   # a reflection would fit better: forbid it
        S[2, 2] = -1.0
    R = U @ S @ Vt
    s = float(np.trace(np.diag(D) @ S) / var_s)
    return s, R, mu_d - s * R @ mu_s


def list_images(image_dir: Path) -> list[str]:
    """Image names (relative paths, sorted) below ``image_dir``; symlinks are followed."""
    if not image_dir.is_dir():
        problem = "is not a directory" if image_dir.exists() else "does not exist"
        raise SceneLocError(f"{image_dir}: image folder {problem}")
    names = sorted(str(p.relative_to(image_dir)) for p in image_dir.rglob("*")
                   if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if len(names) < 3:
        raise SceneLocError(f"{image_dir}: {len(names)} .png/.jpg images found, SfM needs at least 3")
    for n in names:
        check_image_file(image_dir / n)
    return names


def _camera_options(pycolmap, intrinsics: np.ndarray | None):
    """Reader options: one camera for all images; fixed PINHOLE (COLMAP pixel convention) or SIMPLE_PINHOLE."""
    reader = pycolmap.ImageReaderOptions()
    if intrinsics is not None:
        K = intrinsics
        reader.camera_model = "PINHOLE"
        reader.camera_params = ",".join(f"{v:.6f}" for v in (K[0, 0], K[1, 1], K[0, 2] + COLMAP_PIXEL_OFFSET,
                                                             K[1, 2] + COLMAP_PIXEL_OFFSET))
    else:
        reader.camera_model = "SIMPLE_PINHOLE"
    return reader


@contextmanager
def _db_progress(db: Path, table: str, total: int, desc: str, unit: str, enabled: bool):
    """A progress bar for a pycolmap step that offers no callback: a thread counts the rows the
    step has written to ``table`` of its database (read-only, every 2 s) until the step returns."""
    if not enabled:
        yield
        return
    bar = progress_bar(total=total, desc=desc, unit=unit)
    stop = threading.Event()

    done = [0]

    def poll_once() -> None:
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.5) as con:
                n = min(con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0], total)
        except sqlite3.Error:            # not created yet, or locked by the writer: try again later
            return
        if n > done[0]:
            bar.update(n - done[0])
            done[0] = n

    def poll() -> None:
        while not stop.wait(2.0):
            poll_once()
    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield
        # returned without error: every pair is done even where COLMAP wrote no row (a pair without
        # matches is not stored), so the bar must not end on "stopped at 0/66"
        stop.set()
        thread.join()
        bar.update(total - done[0])
        done[0] = total
    finally:
        stop.set()
        thread.join()
        poll_once()                      # the step has returned (or failed): its last rows are in
        bar.close()


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def reconstruct(image_dir: Path, work: Path, names: list[str], intrinsics: np.ndarray | None = None,
                max_features: int = 2048, matcher: str = "auto", overlap: int = 10, seed: int = 0,
                threads: int = -1, progress: bool = True,
                camera_per_folder: bool = False) -> tuple[Any, dict[str, float], str]:
    """Run extraction, matching and incremental mapping into ``work``; return the largest
    reconstruction (a pycolmap.Reconstruction), the per-step seconds and the matcher used.
    ``camera_per_folder``: one camera per sub-folder of ``image_dir`` (several devices), else one for all."""
    pycolmap = pycolmap_module()
    if matcher not in MATCHERS:
        raise SceneLocError(f"--matcher {matcher}: one of {', '.join(MATCHERS)}")
    if matcher == "auto":
        matcher = "exhaustive" if len(names) <= AUTO_EXHAUSTIVE_MAX else "sequential"
    # COLMAP's INFO..ERROR lines would drown the progress display and our one-line errors
    pycolmap.logging.minloglevel = 3
    pycolmap.set_random_seed(seed)
    say = _say if progress else (lambda m: None)
    db = work / "database.db"
    db.unlink(missing_ok=True)
    times: dict[str, float] = {}
    t = time.perf_counter()
    say(f"[sfm 1/3] SIFT features of {len(names)} images (at most {max_features} each)")
    ext = pycolmap.FeatureExtractionOptions()
    ext.sift.max_num_features = max_features
    ext.num_threads = threads
    with _db_progress(db, "keypoints", len(names), "features", "image", progress):
        mode = pycolmap.CameraMode.PER_FOLDER if camera_per_folder else pycolmap.CameraMode.SINGLE
        pycolmap.extract_features(db, image_dir, image_names=names, camera_mode=mode,
                                  reader_options=_camera_options(pycolmap, intrinsics), extraction_options=ext,
                                  device=pycolmap.Device.cpu)
    times["features_s"] = time.perf_counter() - t
    t = time.perf_counter()
    match = pycolmap.FeatureMatchingOptions()
    match.num_threads = threads
    if matcher == "sequential":
        pairs = pycolmap.SequentialPairingOptions()
        pairs.overlap = overlap
        say(f"[sfm 2/3] matching each image with its {overlap} successors in name order (sequential)")
        n_pairs = sum(min(overlap, len(names) - 1 - i) for i in range(len(names)))
        with _db_progress(db, "matches", n_pairs, "matching", "pair", progress):
            pycolmap.match_sequential(db, matching_options=match, pairing_options=pairs, device=pycolmap.Device.cpu)
    else:
        n_pairs = len(names) * (len(names) - 1) // 2
        say(f"[sfm 2/3] matching all {n_pairs} image pairs (exhaustive)")
        with _db_progress(db, "matches", n_pairs, "matching", "pair", progress):
            pycolmap.match_exhaustive(db, matching_options=match, device=pycolmap.Device.cpu)
    times["matching_s"] = time.perf_counter() - t
    t = time.perf_counter()
    opts = pycolmap.IncrementalPipelineOptions()
    opts.num_threads = threads
    opts.random_seed = seed
    opts.multiple_models = False
    if intrinsics is not None:    # the user's calibration is the truth: bundle adjustment keeps it
        opts.ba_refine_focal_length = False
        opts.ba_refine_principal_point = False
    opts.ba_refine_extra_params = False
    count = {"n": 0}

    def next_image() -> None:
        count["n"] += 1
        if progress and (count["n"] % 10 == 0 or count["n"] == len(names) - 2):
            say(f"[sfm 3/3] registered {count['n'] + 2}/{len(names)} images ({time.perf_counter() - t:.0f} s)")
    say("[sfm 3/3] incremental mapping")
    sparse = work / "sparse"
    sparse.mkdir(parents=True, exist_ok=True)
    recs = pycolmap.incremental_mapping(db, image_dir, sparse, options=opts, next_image_callback=next_image)
    times["mapping_s"] = time.perf_counter() - t
    if not recs:
        raise SceneLocError(f"{image_dir}: SfM registered no images (too few matches between the images: "
                            f"check that they overlap, or try --matcher exhaustive)")
    best = max(recs.values(), key=lambda r: r.num_reg_images())
    return best, times, matcher


def run_sfm(image_dir: str | Path, out: str | Path, *, intrinsics: np.ndarray | None = None,
            depth_dir=None, known_distance=None, scale: float | None = None, max_features: int = 2048,
            matcher: str = "auto", overlap: int = 10, test_every: int | None = None, test_list=None,
            test_match: str | None = None, link: bool = False, force: bool = False, seed: int = 0,
            progress: bool = True, camera_per_folder: bool = False) -> dict:
    """SfM on the images below ``image_dir`` -> a sceneloc dataset in ``out`` (DSAC*/ACE layout),
    the COLMAP model kept in ``out/colmap/sparse``. Returns import_info (also in out/import_info.json)."""
    image_dir, out = Path(image_dir), Path(out)
    check_output_path(out, "dir", [image_dir, depth_dir])
    names = list_images(image_dir)
    if known_distance is not None:   # checked now, not after minutes of SfM that leave OUT behind
        unknown = [n for n in known_distance[:2] if n not in names]
        if unknown:
            raise SceneLocError(f"--known-distance: {unknown[0]!r} is not an image below {image_dir} "
                                f"(names as relative paths, e.g. {names[0]!r})")
    pycolmap_module()
    if depth_dir is not None and not Path(depth_dir).is_dir():
        raise SceneLocError(f"{depth_dir}: depth folder does not exist")
    prepare_output(out, force)
    shutil.rmtree(out / "colmap", ignore_errors=True)
    work = out / "colmap"
    work.mkdir()
    t0 = time.perf_counter()
    rec, times, matcher_used = reconstruct(image_dir, work, names, intrinsics, max_features, matcher, overlap, seed,
                                           progress=progress, camera_per_folder=camera_per_folder)
    model = work / "model"
    model.mkdir()
    rec.write(str(model))
    registered = rec.num_reg_images()
    info = import_colmap(model, image_dir, out, depth_dir=depth_dir, test_every=test_every, test_list=test_list,
                         test_match=test_match, scale=scale, known_distance=known_distance, link=link,
                         force=True, rec=rec, source=f"sceneloc sfm of {image_dir.resolve()} (COLMAP incremental "
                         f"mapping, {matcher_used} matching, {max_features} SIFT features per image)",
                         extra_info={"images_given": len(names),
                                     "timings_s": {k: round(v, 1) for k, v in times.items()},
                                     "camera_fixed": intrinsics is not None})
    # the import listed unregistered images among the model's; SfM may also drop images entirely
    in_model = {im.name for im in rec.images.values()}
    info["unregistered"] = sorted(set(info["unregistered"]) | (set(names) - in_model))
    info["registered"] = registered
    info["timings_s"]["total_s"] = round(time.perf_counter() - t0, 1)
    (out / "import_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return info
