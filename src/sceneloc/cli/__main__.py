"""``python -m sceneloc.cli``: the same as the ``sceneloc`` command."""

import sys

from sceneloc.cli import main as cli

if __name__ == "__main__":
    sys.exit(cli.main())
