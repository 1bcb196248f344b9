"""``python -m fedtl_helpers``: the command line (see ``cli.py``)."""

from __future__ import annotations

import sys

try:
    from .workflow.cli import add_config_options, build_parser, main
except KeyboardInterrupt:  # Ctrl-C while the command line itself is being imported
    if __name__ != "__main__":
        raise
    print("stopped before anything started; nothing was changed", file=sys.stderr)
    sys.exit(130)

__all__ = ["add_config_options", "build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
