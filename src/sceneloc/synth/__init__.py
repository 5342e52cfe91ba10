"""Synthetic posed RGB-D scenes in 7-Scenes layout: presets, the ray caster and sensor model, camera walks."""
