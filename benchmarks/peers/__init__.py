"""Peer relocalizers for benchmarks/bench_peers.py: what a user would pick instead of sceneloc.

Kept outside the library on purpose: they exist to be compared against, and reuse sceneloc's data
loading, geometry and robust estimators rather than copying them.

* ``feature_localizer`` -- structure-based localization: SIFT/ORB keypoints lifted to 3D with the
  training depth, image retrieval, ratio-test matching, PnP- or Kabsch-RANSAC.
* ``posenet`` -- direct pose regression by a small CNN trained from scratch (PoseNet-style).
"""
