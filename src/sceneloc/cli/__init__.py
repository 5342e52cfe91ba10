"""The command line: one module per group of commands; ``python -m sceneloc.cli``."""
