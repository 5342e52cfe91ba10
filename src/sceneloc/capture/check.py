"""Capture check: is a dataset usable for mapping, before spending minutes on it?

Reads poses, calibration and the file headers of the training images and depth maps (the checks
``map`` runs first, ``data.dataset.check_frames``: PNG headers are read, not decoded), and reports

* frames per split, frames without depth (the default map learns them from their poses alone), cameras (distinct K);
* images the import or SfM could not register (``import_info.json``) and the stated units;
* coverage: how spread the mapping views are (extent of the camera centres, the share of viewing
  directions covered), and per test frame the nearest mapping view within 30 deg: a test view far
  from every mapping view will most likely not localize.

Each finding that makes mapping fail or localization poor becomes a warning line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sceneloc.data.dataset import check_frames, load_scene
from sceneloc.report.evaluation import NEAR_TRAINING_DEG, NEAR_TRAINING_M, nearest_training_distances

#: Fewer mapping frames than this is a warning: the network sees too little of the scene.
MIN_TRAIN_FRAMES = 20
#: Viewing directions are binned into this many cells of the sphere (a Fibonacci grid).
DIRECTION_CELLS = 26


@dataclass
class CaptureReport:
    root: Path
    frames: dict[str, int]
    without_depth: dict[str, int]
    cameras: int
    units: str | None
    unregistered: list[str]
    centre_extent: np.ndarray              # (3,) extent of the mapping camera centres (model units)
    direction_share: float                 # share of DIRECTION_CELLS cells hit by mapping view directions
    test_near_share: float | None          # share of test frames with a mapping view within 30 cm / 30 deg
    test_nearest_median: float | None      # median distance to the nearest mapping view within 30 deg
    warnings: list[str] = field(default_factory=list)


def _sphere_cells(n: int) -> np.ndarray:
    """``(n, 3)`` unit vectors spread evenly over the sphere (Fibonacci lattice)."""
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    theta = np.pi * (1 + 5 ** 0.5) * i
    return np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], 1)


def direction_coverage(T_wc: np.ndarray, cells: int = DIRECTION_CELLS) -> float:
    """Share of ``cells`` sphere cells that some view direction (camera z axis of ``T_wc (N, 4, 4)``)
    falls into: ~0.1 for a single sweep along a wall, higher for a capture that looks around."""
    dirs = T_wc[:, :3, 2]
    centres = _sphere_cells(cells)
    return float(len(np.unique(np.argmax(dirs @ centres.T, axis=1))) / cells)


def check_capture(dataset: str | Path, intrinsics: np.ndarray | None = None) -> CaptureReport:
    """Inspect ``dataset`` (any layout :func:`load_scene` reads) and return the report with warnings."""
    scene = load_scene(dataset, intrinsics)
    check_frames(scene.splits.get("train", []))   # exactly map's checks: what check passes, map reads
    info_path = Path(dataset) / "import_info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    frames = {k: len(v) for k, v in scene.splits.items()}
    no_depth = {k: sum(f.depth_path is None for f in v) for k, v in scene.splits.items()}
    Ks = {tuple(np.round(f.K, 3).ravel()) for v in scene.splits.values() for f in v}
    train = scene.splits.get("train", [])
    T_train = np.stack([f.pose for f in train]) if train else np.zeros((0, 4, 4))
    extent = np.ptp(T_train[:, :3, 3], axis=0) if len(train) else np.zeros(3)
    share = direction_coverage(T_train) if len(train) else 0.0
    near = med = None
    test = scene.splits.get("test", [])
    units = info.get("units")
    metric = units is None or units.startswith("metres")
    if test and len(train):
        d = nearest_training_distances(T_train, np.stack([f.pose for f in test]))
        near = float(np.mean(d < NEAR_TRAINING_M)) if metric else None
        med = float(np.median(d))
    r = CaptureReport(scene.root, frames, no_depth, len(Ks), units, list(info.get("unregistered", [])),
                      extent, share, near, med)
    w = r.warnings
    if len(train) < MIN_TRAIN_FRAMES:
        w.append(f"only {len(train)} mapping (train) frames: capture at least {MIN_TRAIN_FRAMES}, covering the scene")
    if no_depth.get("train"):
        w.append(f"{no_depth['train']} of {len(train)} mapping frames have no depth: the default map learns them "
                 f"from their poses alone (RGB-only, less accurate), --arch fcn/unet refuse them "
                 f"(give --depth-dir on import where you have depth)")
    given = sum(frames.values()) + len(r.unregistered)
    if r.unregistered and len(r.unregistered) > 0.1 * given:
        w.append(f"{len(r.unregistered)} of {given} images were not registered: the capture has gaps "
                 f"(more overlap between consecutive images, less motion blur)")
    if not metric:
        w.append("the poses are in arbitrary units: metric thresholds (5 cm, inlier thresholds, Tukey c) do not "
                 "apply; give depth or a known distance when importing")
    if near is not None and near < 0.5:
        w.append(f"only {near:.0%} of test frames have a mapping view within {NEAR_TRAINING_M * 100:.0f} cm / "
                 f"{NEAR_TRAINING_DEG:.0f} deg: expect those far from the mapping views to fail")
    if test and med is not None and not np.isfinite(med):
        w.append("most test frames look in directions no mapping view looks in")
    return r


def format_check(r: CaptureReport) -> str:
    """The report as the lines ``sceneloc check`` prints."""
    unit = "m" if r.units is None or r.units.startswith("metres") else "units"
    lines = [f"dataset            {r.root}"]
    for split, n in r.frames.items():
        lines.append(f"{split + ' frames':<18} {n}  ({r.without_depth[split]} without depth)")
    lines.append(f"cameras            {r.cameras} distinct intrinsics")
    if r.units is not None:
        lines.append(f"units              {r.units}")
    if r.unregistered:
        more = " ..." if len(r.unregistered) > 5 else ""
        lines.append(f"not registered     {len(r.unregistered)}: {', '.join(r.unregistered[:5])}{more}")
    e = r.centre_extent
    lines.append(f"mapping centres    extent {e[0]:.2f} x {e[1]:.2f} x {e[2]:.2f} {unit}")
    lines.append(f"view directions    {r.direction_share:.0%} of {DIRECTION_CELLS} sphere cells")
    if r.test_nearest_median is not None:
        near = "" if r.test_near_share is None else (
            f"; {r.test_near_share:.0%} within {NEAR_TRAINING_M * 100:.0f} cm / {NEAR_TRAINING_DEG:.0f} deg")
        lines.append(f"test coverage      median distance to the nearest mapping view "
                     f"{r.test_nearest_median:.2f} {unit}{near}")
    lines += [f"warning: {w}" for w in r.warnings] or ["no problems found: the capture looks usable for mapping"]
    return "\n".join(lines)
