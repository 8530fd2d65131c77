"""``python -m fastce`` and the ``fastce`` console script."""

from __future__ import annotations

import gc
import sys


def main(argv=None) -> int:
    """Entry point of the ``fastce`` command; returns the exit status."""
    # Imported here, not at the top: ``import fastce`` must not load the command.
    from fastce.cli import main as cli_main

    return cli_main(argv)


def command() -> int:
    """The ``fastce`` console script and ``python -m fastce``: ``main()``'s exit status, for the caller to exit with.

    Before exiting, the objects alive are frozen (``gc.freeze``), so that the
    interpreter's last collection skips them: that collection walked the
    ~10^5 objects numba leaves (its typing tables, the loaded kernels), 0.12-
    0.19 s of every command (exit 148-188 -> 21-37 ms, 8 alternated runs of
    a warm ``fastce eval`` on a 1000 x 10 file).  Everything the command
    wrote is closed by then; nothing is left whose collection would run
    code.  Only here, in a process the command owns: ``main()`` (called
    in-process) leaves the collector alone.
    """
    status = main()
    gc.freeze()
    return status


if __name__ == "__main__":
    sys.exit(command())
