"""The one exception type users see: the CLI prints its message on one line and exits with 2."""


class SceneLocError(Exception):
    """A problem with the user's input (a file, an option, a map): message names the file and the problem."""
