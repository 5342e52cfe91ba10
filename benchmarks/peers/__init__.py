"""Peer relocalizers for benchmarks/bench_peers.py: what a user would pick instead of sceneloc.

Kept outside the library on purpose: they exist to be compared against, and reuse sceneloc's data
loading, geometry and robust estimators rather than copying them.

* ``feature_localizer`` -- structure-based localization: SIFT/ORB keypoints lifted to 3D with the
  training depth, image retrieval, ratio-test matching, PnP- or Kabsch-RANSAC.
* ``posenet`` -- direct pose regression by a small CNN trained from scratch (PoseNet-style).
"""

from pathlib import Path


def map_size_bytes(map_dir: str | Path, files: tuple[str, ...]) -> int:
    """Bytes on disk of the map files localization reads (those present)."""
    return sum((Path(map_dir) / f).stat().st_size for f in files if (Path(map_dir) / f).exists())
