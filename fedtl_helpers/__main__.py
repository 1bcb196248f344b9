"""``python -m fedtl_helpers``: the command line (see ``cli.py``)."""

from __future__ import annotations

import sys

from .cli import add_config_options, build_parser, main

__all__ = ["add_config_options", "build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
