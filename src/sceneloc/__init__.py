"""sceneloc: camera relocalization by scene coordinate regression.

Data flows geometry -> data -> encoders -> networks -> losses -> buffer -> head_training
-> training -> pose -> dsac -> scenemap -> mapping -> evaluation -> demo -> cli; see README.md
(ARCHITECTURE). ``Map`` is the user-facing entry point for localization.

The public names below load lazily (``import sceneloc`` does not pay for torch) and are listed in
``__all__``, so ``dir(sceneloc)`` and tab completion show them.
"""

from importlib import import_module

__version__ = "0.1.0"

#: public name -> the module that defines it
_PUBLIC = {
    "Map": "scenemap", "Localization": "scenemap", "localize_frames": "scenemap",
    "PoseConfig": "pose_config", "MappingConfig": "training", "DSACConfig": "dsac",
    "SceneLocError": "errors", "load_scene": "data", "map_scene": "mapping", "evaluate": "evaluation",
    "read_pose_file": "geometry", "write_pose_file": "geometry", "PoseRecord": "geometry",
    "find_queries": "batch", "localize_queries": "batch",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    # Lazy so that `import sceneloc` does not pay for torch.
    if name in _PUBLIC:
        value = getattr(import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sceneloc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
