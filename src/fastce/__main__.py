"""``python -m fastce`` and the ``fastce`` console script."""

from __future__ import annotations

import sys


def main(argv=None) -> int:
    """Entry point of the ``fastce`` command; returns the exit status."""
    # Imported here, not at the top: ``import fastce`` must not load the command.
    from fastce.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
