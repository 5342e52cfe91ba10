"""Maps: building one from a dataset (map_scene), the map directory and its inference (Map)."""
