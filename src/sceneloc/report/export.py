"""Export a map's confident scene coordinates as a coloured point cloud (PLY)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sceneloc.data.dataset import evenly_spaced, load_scene
from sceneloc.errors import SceneLocError
from sceneloc.mapping.scene_map import Map
from sceneloc.progress import progress as progress_bar
from sceneloc.validation import check_output_path

# ============================================================================================ export


def write_ply(path: str | Path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """Binary little-endian PLY of points ``xyz (N, 3)`` (float32) coloured ``rgb (N, 3)`` (uint8)."""
    v = np.empty(len(xyz), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                  ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    for k, name in enumerate("xyz"):
        v[name] = xyz[:, k]
    for k, name in enumerate(("red", "green", "blue")):
        v[name] = rgb[:, k]
    header = ("ply\nformat binary_little_endian 1.0\ncomment sceneloc map export\n"
              f"element vertex {len(v)}\n" + "".join(f"property float {a}\n" for a in "xyz") +
              "".join(f"property uchar {c}\n" for c in ("red", "green", "blue")) + "end_header\n")
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(v.tobytes())


def export_point_cloud(map_dir: str | Path, dataset: str | Path, out: str | Path, split: str = "train",
                       min_confidence: float = 0.75, max_frames: int | None = None, force: bool = False,
                       device: str | None = None, intrinsics: np.ndarray | None = None,
                       progress: bool = True) -> int:
    """``sceneloc export``: the map's predictions on ``split`` as a coloured PLY; returns the point count.

    Only points with confidence above ``min_confidence`` are kept when the map has a confidence
    network (0.75 is the paper's inlier confidence, delta at 10 cm); otherwise every prediction.
    """
    out = check_output_path(out, "file", [dataset], "--out", force=force)
    if max_frames is not None and max_frames < 1:
        raise SceneLocError(f"--max-frames {max_frames}: need at least 1 frame")
    the_map = Map.load(map_dir, device=device)
    frames = load_scene(dataset, intrinsics).frames(split)
    frames = [frames[i] for i in evenly_spaced(len(frames), max_frames)]
    xyz, rgb = [], []
    for frame in progress_bar(frames, desc="exporting", unit="frame", disable=not progress, dynamic_ncols=True):
        image = frame.load_image()
        pred = the_map.predict(image)
        keep = np.ones(pred.coords.shape[:2], bool) if pred.confidence is None else pred.confidence > min_confidence
        uv = np.rint(pred.pixels[keep]).astype(int)
        xyz.append(pred.coords[keep].astype(np.float32))
        rgb.append(image[np.clip(uv[:, 1], 0, image.shape[0] - 1), np.clip(uv[:, 0], 0, image.shape[1] - 1)])
    if not sum(len(p) for p in xyz):
        raise SceneLocError(f"--min-confidence {min_confidence:g}: keeps no point of {len(frames)} frames "
                            f"(confidences are in [0, 1]; lower it)")
    write_ply(out, np.concatenate(xyz), np.concatenate(rgb))
    return sum(len(p) for p in xyz)
