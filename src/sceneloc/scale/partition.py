"""Partitions of a capture's mapping frames (``sceneloc map --partitions``): which frames each head learns.

A partition is a set of mapping frames that one head, one scene surface and one scene view are built
from. ``spatial_partitions`` groups the frames by where the camera stood and where it looked (k-means
on camera centres and optical axes) and lets frames near a boundary belong to both sides (``overlap_m``),
so that a query seen from between two groups is inside at least one of them; ``folder_partitions``
takes the user's own grouping (the first folder of each frame's name: ``seq-01/...``, a room, a day).
The layout (``partitions.json`` in the map directory) names every partition's frames and where they are.

One head holds one room: 7-Scenes' largest scenes (redkitchen, ~4 m of camera motion, 2000 training
frames) map well as one. ``auto_partitions`` splits a capture whose camera centres spread further than
``AUTO_EXTENT_M`` or that has more than ``AUTO_FRAMES`` frames: a stated threshold, beyond the sizes the
single-head maps were measured on (docs/scale.md measures a 24 m floor against it).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sceneloc.errors import SceneLocError

LAYOUT_FILE = "partitions.json"
LAYOUT_VERSION = 1
#: metres of feature distance one radian between optical axes counts as (k-means on position and direction)
AXIS_WEIGHT_M = 1.0
#: camera-centre spread (m, 1st to 99th percentile box diagonal) beyond which ``--partitions auto`` splits
AUTO_EXTENT_M = 12.0
#: frames beyond which ``--partitions auto`` splits (one head's buffer then holds < 3 copies of 300 cells each)
AUTO_FRAMES = 5000
#: methods of ``--partition-by``
PARTITION_METHODS = ("space", "folder")


@dataclass
class Partition:
    """One partition: its directory name, its frames (names relative to the dataset root) and the mean
    camera centre ``(3,)`` and radius (m) of those frames."""
    name: str
    frames: list[str]
    centre: list[float]
    radius_m: float


def partition_name(index: int) -> str:
    return f"part-{index:02d}"


def view_features(centres: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """``(N, 6)`` k-means features of views: camera ``centres (N, 3)`` in metres beside optical ``axes
    (N, 3)`` (unit vectors) scaled by ``AXIS_WEIGHT_M`` (a chord of ~1 per radian)."""
    return np.hstack([centres, AXIS_WEIGHT_M * axes])


def camera_extent_m(centres: np.ndarray) -> float:
    """Diagonal (m) of the box holding the 1st to 99th percentile of camera ``centres (N, 3)``."""
    lo, hi = np.percentile(centres, 1, axis=0), np.percentile(centres, 99, axis=0)
    return float(np.linalg.norm(hi - lo))


def auto_partitions(centres: np.ndarray) -> int:
    """How many partitions ``--partitions auto`` makes of frames at camera ``centres (N, 3)``: 1 for a
    room-sized capture, else enough that each covers at most ``AUTO_EXTENT_M`` and ``AUTO_FRAMES``."""
    by_extent = math.ceil(camera_extent_m(centres) / AUTO_EXTENT_M)
    by_frames = math.ceil(len(centres) / AUTO_FRAMES)
    return max(1, by_extent, by_frames)


def kmeans(features: np.ndarray, k: int, iterations: int = 50) -> np.ndarray:
    """Cluster centres ``(k, D)`` of ``features (N, D)``: farthest-point start from the first
    feature (deterministic), then Lloyd's iterations; an emptied cluster keeps its centre."""
    centres = [features[0]]
    dist = np.linalg.norm(features - features[0], axis=1)
    for _ in range(1, k):
        centres.append(features[int(np.argmax(dist))])
        dist = np.minimum(dist, np.linalg.norm(features - centres[-1], axis=1))
    c = np.array(centres, dtype=np.float64)
    for _ in range(iterations):
        label = np.argmin(np.linalg.norm(features[:, None] - c[None], axis=2), axis=1)
        new = np.array([features[label == j].mean(0) if np.any(label == j) else c[j] for j in range(k)])
        if np.allclose(new, c):
            break
        c = new
    return c


def spatial_groups(features: np.ndarray, k: int, overlap_m: float) -> list[np.ndarray]:
    """Indices of the frames of each of ``k`` groups of ``features (N, D)``: a frame belongs to its
    nearest cluster centre and to every other centre at most ``overlap_m`` further away. Groups come
    ordered by their first frame, and none is empty."""
    if not 1 <= k <= len(features):
        raise SceneLocError(f"--partitions {k}: need between 1 and {len(features)} (the mapping frames)")
    centres = kmeans(features, k)
    dist = np.linalg.norm(features[:, None] - centres[None], axis=2)          # (N, k)
    member = dist <= dist.min(axis=1, keepdims=True) + overlap_m
    groups = [np.flatnonzero(member[:, j]) for j in range(k)]
    groups = [g for g in groups if len(g)]
    return sorted(groups, key=lambda g: int(g[0]))


def folder_groups(names: list[str]) -> list[np.ndarray]:
    """Indices of the frames of each first folder of their ``names`` (``seq-01/frame-000000.color.png``
    -> ``seq-01``), in sorted folder order."""
    folders = [Path(n).parts[0] if len(Path(n).parts) > 1 else "" for n in names]
    keys = sorted(set(folders))
    if len(keys) < 2:
        raise SceneLocError(f"--partition-by folder: the mapping frames lie in {len(keys)} folder "
                            f"({keys[0] or 'the dataset root'}): nothing to split")
    return [np.flatnonzero(np.array(folders) == key) for key in keys]


def make_partitions(names: list[str], poses: np.ndarray, count: int | None, method: str = "space",
                    overlap_m: float = 0.5) -> list[Partition]:
    """The partitions of mapping frames ``names`` with camera-to-world ``poses (N, 4, 4)``: ``count``
    spatial groups (None: ``auto_partitions``), or one per folder with ``method="folder"``."""
    if method not in PARTITION_METHODS:
        raise SceneLocError(f"--partition-by {method!r}: choose from {', '.join(PARTITION_METHODS)}")
    centres, axes = poses[:, :3, 3], poses[:, :3, 2]
    if method == "folder":
        groups = folder_groups(names)
    else:
        k = auto_partitions(centres) if count is None else count
        groups = spatial_groups(view_features(centres, axes), k, overlap_m)
    parts = []
    for i, g in enumerate(groups):
        c = centres[g].mean(0)
        parts.append(Partition(partition_name(i), [names[j] for j in g], [float(v) for v in c],
                               float(np.linalg.norm(centres[g] - c, axis=1).max())))
    return parts


def write_layout(map_dir: Path, parts: list[Partition], info: dict) -> None:
    """``map_dir/partitions.json``: the partitions and how they were made (``info``: dataset, method, ...)."""
    layout = {"layout_version": LAYOUT_VERSION, **info, "partitions": [asdict(p) for p in parts]}
    (map_dir / LAYOUT_FILE).write_text(json.dumps(layout, indent=1))


def read_layout(map_dir: Path) -> tuple[list[Partition], dict]:
    """The partitions of a partitioned map directory and the rest of its layout file."""
    path = map_dir / LAYOUT_FILE
    try:
        layout = json.loads(path.read_text())
        parts = [Partition(**p) for p in layout.pop("partitions")]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise SceneLocError(f"{path}: unreadable partition layout ({e})") from None
    if layout.get("layout_version") != LAYOUT_VERSION:
        raise SceneLocError(f"{path}: partition layout version {layout.get('layout_version')} is not "
                            f"{LAYOUT_VERSION}; re-map with --force")
    return parts, layout
