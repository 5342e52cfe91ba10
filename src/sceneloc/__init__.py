"""sceneloc: camera relocalization by scene coordinate regression.

The subpackages are layers, each importing only from those below it: data, synth, nets, surface, pose,
training, mapping, localize, scale, report, capture, service, cli (docs/architecture.md; pyproject.toml's
import-linter contract holds them). ``Map`` is the user-facing entry point for localization.

The public names below load lazily (``import sceneloc`` does not pay for torch) and are listed in
``__all__``, so ``dir(sceneloc)`` and tab completion show them.
"""

from importlib import import_module

__version__ = "0.1.0"

#: public name -> the module that defines it
_PUBLIC = {
    "Map": "mapping.scene_map", "Localization": "mapping.scene_map", "localize_frames": "mapping.queries",
    "PoseConfig": "pose.config", "MappingConfig": "training.trainers", "DSACConfig": "pose.dsac",
    "SceneLocError": "errors", "load_scene": "data.dataset", "map_scene": "mapping.build",
    "evaluate": "report.evaluation",
    "read_pose_file": "geometry", "write_pose_file": "geometry", "PoseRecord": "geometry",
    "find_queries": "localize.batch", "localize_queries": "localize.batch",
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
