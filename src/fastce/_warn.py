"""Warnings that point at the user's line, however deep inside fastce they are raised."""

from __future__ import annotations

import os
import sys

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning name the first frame outside the fastce package.

    Call it from the function that calls ``warnings.warn``.  Doors call each
    other (``evaluate`` → a task reader → a state's finalizer), so a fixed
    stacklevel names a fastce line on some paths; this one never does.
    """
    frame = sys._getframe(1)  # the caller of warnings.warn: stacklevel 1
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    return level
