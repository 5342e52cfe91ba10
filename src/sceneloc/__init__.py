"""sceneloc: camera relocalization by scene coordinate regression.

Data flows geometry -> data -> encoders -> networks -> losses -> buffer -> head_training
-> training -> pose -> dsac -> scenemap -> mapping -> evaluation -> demo -> cli; see README.md
(ARCHITECTURE). ``Map`` is the user-facing entry point for localization.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy so that `import sceneloc` does not pay for torch.
    if name == "Map":
        from .scenemap import Map
        return Map
    raise AttributeError(name)
