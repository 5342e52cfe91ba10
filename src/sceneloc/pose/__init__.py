"""Pose estimation from correspondences: RANSAC, Kabsch/PnP fits, DSAC, per-pose probabilities."""
