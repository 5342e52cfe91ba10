"""Peer relocalizers for benchmarks/bench_peers.py: what a user would pick instead of sceneloc.

Kept outside the library on purpose: they exist to be compared against, and reuse sceneloc's data
loading, geometry and robust estimators rather than copying them.

* ``feature_localizer`` -- structure-based localization: SIFT/ORB keypoints lifted to 3D with the
  training depth, image retrieval, ratio-test matching, PnP- or Kabsch-RANSAC.
* ``posenet`` -- direct pose regression by a small CNN trained from scratch (PoseNet-style).
* ``jobs`` -- the jobs bench_peers.py runs in child processes; ``report`` -- its markdown section.
"""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEADING = "## Peers: sceneloc beside feature matching, PoseNet and other RANSAC backends"
MODES = ("rgb", "rgbd")
BACKEND_ROWS = ("sceneloc", "sceneloc-ransac", "sceneloc+opencv", "sceneloc+poselib")
RGB_ONLY = {"sceneloc+opencv": "2D-3D only (no rigid 3D-3D RANSAC in OpenCV)",
            "sceneloc+poselib": "2D-3D only (no rigid 3D-3D RANSAC in poselib)",
            "posenet": "RGB only (pose regression does not use depth)"}
LABELS = {
    "sceneloc": "sceneloc (default estimator)",
    "sceneloc-ransac": "sceneloc map + its RANSAC",
    "sceneloc+opencv": "sceneloc map + OpenCV MAGSAC++",
    "sceneloc+poselib": "sceneloc map + poselib",
    "features-sift": "SIFT features + VLAD",
    "features-orb": "ORB features + VLAD",
    "posenet": "PoseNet-style CNN",
}



def map_size_bytes(map_dir: str | Path, files: tuple[str, ...]) -> int:
    """Bytes on disk of the map files localization reads (those present)."""
    return sum((Path(map_dir) / f).stat().st_size for f in files if (Path(map_dir) / f).exists())


def relative_to_repo(arg: str) -> str:
    """An absolute path as the repository root sees it (``../shared/data/...``, ``runs/...``): recorded
    commands must run from any checkout, not only the one they ran in."""
    return os.path.relpath(arg, REPO) if os.path.isabs(arg) else arg
