"""Localizing many images with one map: a folder or list of photos, a stream of frames (tracking)."""
