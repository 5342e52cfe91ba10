"""Batch localization of new photos without ground truth: ``sceneloc localize MAP --images DIR|LIST.txt``.

The queries are a folder of images (searched recursively) or a text file, one image per line: either
its name alone (the camera comes from ``--intrinsics`` or the map) or hloc's query list with
intrinsics, ``name MODEL width height params...`` with MODEL one of COLMAP's distortion-free
``SIMPLE_PINHOLE f cx cy``, ``PINHOLE fx fy cx cy`` (or ``SIMPLE_RADIAL``/``RADIAL`` whose
distortion is 0). Names are relative to the list's folder. Every query is checked (file readable,
intrinsics valid for its size, depth map present) before the map localizes the first one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sceneloc.data.readers import IMAGE_SUFFIXES, image_header, read_depth, read_image
from sceneloc.errors import SceneLocError
from sceneloc.geometry import intrinsics_matrix
from sceneloc.mapping.scene_map import Localization, Map
from sceneloc.validation import check_intrinsics

#: hloc/COLMAP camera models read from a query list: parameters before any distortion terms.
CAMERA_MODELS = {"SIMPLE_PINHOLE": 3, "PINHOLE": 4, "SIMPLE_RADIAL": 3, "RADIAL": 3}


@dataclass
class Query:
    """One image to localize: its name in the pose file, its path, its ``K (3, 3)`` or None (the
    default camera), its depth map's path or None, and its ``(H, W)`` once its header has been read
    (each image's header is read once: a JPEG's means decoding it)."""
    name: str
    image_path: Path
    K: np.ndarray | None = None
    depth_path: Path | None = None
    size: tuple[int, int] | None = field(default=None, repr=False, compare=False)

    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the image, from its header on first use."""
        if self.size is None:
            h, w = image_header(self.image_path)[:2]
            self.size = (h, w)
        return self.size


def _camera(parts: list[str], where: str) -> tuple[np.ndarray, tuple[int, int]]:
    """``MODEL width height params...`` -> K and (H, W)."""
    model = parts[0].upper()
    if model not in CAMERA_MODELS:
        raise SceneLocError(f"{where}: camera model {parts[0]!r} is not one of {', '.join(CAMERA_MODELS)}")
    try:
        w, h = int(parts[1]), int(parts[2])
        params = [float(v) for v in parts[3:]]
    except (ValueError, IndexError):
        raise SceneLocError(f"{where}: expected 'name {model} width height params...'") from None
    n = CAMERA_MODELS[model]
    if len(params) < n or any(abs(v) > 0 for v in params[n:]):
        raise SceneLocError(f"{where}: {model} needs {n} parameters and no distortion (undistort the images first)")
    fx, fy, cx, cy = (params[0], params[0], *params[1:3]) if n == 3 else params[:4]
    return check_intrinsics(intrinsics_matrix(fx, fy, cx, cy), (h, w), where), (h, w)


def read_query_list(path: Path) -> list[Query]:
    """Queries of a list file (see the module docstring); errors name the file and line."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise SceneLocError(f"{path}: cannot read the query list ({getattr(e, 'strerror', None) or e})") from None
    queries, sizes = [], {}
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        where = f"{path}:{lineno}"
        K = None
        if len(parts) > 1:
            K, sizes[parts[0]] = _camera(parts[1:], where)
        queries.append(Query(parts[0], path.parent / parts[0], K))
    if not queries:
        raise SceneLocError(f"{path}: the query list names no image")
    for q in queries:
        if q.name in sizes:
            h, w = q.image_size()
            if (h, w) != sizes[q.name]:
                raise SceneLocError(f"{q.image_path}: image is {w}x{h} but {path} gives its camera as "
                                    f"{sizes[q.name][1]}x{sizes[q.name][0]}")
    return queries


def find_queries(images: str | Path, depth_dir: str | Path | None = None, K: np.ndarray | None = None) -> list[Query]:
    """The queries of ``--images`` (a folder or a list file), each with its depth map from
    ``depth_dir`` (``<stem>.png``, the same relative path) and ``K`` for those the list gives none.
    Every file is checked here, before any localization."""
    src = Path(images)
    if src.is_dir():
        paths = sorted(p for p in src.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not paths:
            raise SceneLocError(f"{src}: no .png/.jpg images in this folder")
        queries = [Query(p.relative_to(src).as_posix(), p) for p in paths]
    elif src.is_file():
        queries = read_query_list(src)
    else:
        raise SceneLocError(f"--images {src}: no such folder or query list")
    names = [q.name for q in queries]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise SceneLocError(f"{src}: image {dup!r} is listed twice")
    for q in queries:
        if " " in q.name:
            raise SceneLocError(f"{q.image_path}: image names with spaces cannot be written to a pose file")
        h, w = q.image_size()
        if q.K is None and K is not None:
            q.K = check_intrinsics(K, (h, w), f"--intrinsics for {q.image_path}")
        if depth_dir is not None:
            q.depth_path = Path(depth_dir) / Path(q.name).with_suffix(".png")
            if not q.depth_path.is_file():
                raise SceneLocError(f"{q.depth_path}: missing depth map for {q.image_path} (--depth-dir {depth_dir})")
    return queries


def check_queries_for_map(the_map: Map, queries: list[Query]) -> None:
    """A query without intrinsics takes the map's camera: it must then have the mapping images' size."""
    h, w = the_map.mapping_image_size
    for q in queries:
        if q.K is None:
            qh, qw = q.image_size()
            if (qh, qw) != (h, w):
                raise SceneLocError(f"{q.image_path}: image is {qw}x{qh} but the map was built from {w}x{h} images: "
                                    f"give its camera (--intrinsics, or a query list with intrinsics)")


def localize_queries(the_map: Map, queries: list[Query], estimator, seed: int = 0,
                     depth_scale_m: float = 0.001) -> Iterator[tuple[Query, Localization]]:
    """Localize each query with the map loaded once; the generator of query ``i`` is seeded with
    ``(seed, i)`` so that a query's pose does not depend on the others (as ``mapping.queries.localize_frames``)."""
    for i, q in enumerate(queries):
        image = read_image(q.image_path)
        depth = None if q.depth_path is None else read_depth(q.depth_path, image.shape[:2], depth_scale_m)
        res = the_map.localize(image, depth=depth, intrinsics=q.K, estimator=estimator,
                               rng=np.random.default_rng([seed, i]))
        res.pixels = res.coords = res.confidence = res.used = None   # only the pose file is written
        yield q, res
