"""Progress display for long evaluations: rows/s, GB/s and ETA, on stderr only.

``make_progress`` returns a bar drawn by tqdm when it is installed (imported
only here, only when a bar is shown), else a one-line built-in display; or a
silent stand-in when the stream is not a terminal.
"""

from __future__ import annotations

import collections
import math
import os
import sys
import time


def _si(value: float) -> str:
    for unit in ("", "k", "M", "G", "T"):
        if abs(value) < 1000.0:
            return f"{value:.3g}{unit}" if unit else f"{value:.0f}"
        value /= 1000.0
    return f"{value:.3g}P"


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class RateMeter:
    """Rows per second over the last ``window`` seconds, so the figure follows the current throughput.

    A rate since the start would stay low long after a slow start (the first
    call compiles the kernels; a resumed run starts cold): it showed 0.29 GB/s
    where 2.2 GB/s were read.
    """

    def __init__(self, done: int, *, window: float = 3.0, now: float | None = None):
        self.window = window
        self._samples = collections.deque([(time.monotonic() if now is None else now, done)])

    def add(self, done: int, now: float) -> None:
        if len(self._samples) > 1 and now - self._samples[-2][0] < self.window / 64:
            self._samples[-1] = (now, done)  # a burst of tiny updates: keep the deque short
        else:
            self._samples.append((now, done))
        # Keep one sample at least a window old, so the rate spans a whole window.
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()

    def rate(self, now: float) -> float:
        then, before = self._samples[0]
        last, done = self._samples[-1]
        return (done - before) / max(last - then, 1e-9) if last > then else 0.0


class SilentProgress:
    """Does nothing: the stand-in when no bar is wanted."""

    def update(self, rows: int) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class LineProgress:
    """A single self-overwriting stderr line: done/total rows, %, rows/s, GB/s, ETA."""

    def __init__(self, total: int, bytes_per_row: int, *, initial: int = 0, stream=None, min_interval: float = 0.25):
        self.total, self.bytes_per_row = total, bytes_per_row
        self.stream = stream if stream is not None else sys.stderr
        self.done = initial
        self._meter = RateMeter(initial)
        self._last = 0.0
        self._min_interval = min_interval
        self._width = 0
        self._closed = False

    def line(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        rate = self._meter.rate(now)
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        percent = 100.0 * self.done / self.total if self.total else 100.0
        return (
            f"{_si(self.done)}/{_si(self.total)} rows {percent:5.1f}%  {_si(rate)} rows/s  "
            f"{rate * self.bytes_per_row / 1e9:.2f} GB/s  ETA {_clock(left)}"
        )

    def _draw(self) -> None:
        text = self.line()
        pad = max(0, self._width - len(text))
        self._width = len(text)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()

    def note(self, text: str) -> None:
        """``text`` on a line of its own above the bar (e.g. "compiling kernels ..."), the bar redrawn under it."""
        self.stream.write("\r" + text + " " * max(0, self._width - len(text)) + "\n")
        self._width = 0
        self._draw()

    def update(self, rows: int) -> None:
        self.done += rows
        now = time.monotonic()
        self._meter.add(self.done, now)
        if now - self._last >= self._min_interval or self.done >= self.total:
            self._last = now
            self._draw()

    def close(self) -> None:
        """Draw the last state and end the line (once), so that what follows starts on a line of its own."""
        if self._closed:
            return
        self._closed = True
        self._draw()
        self.stream.write("\n")
        self.stream.flush()


class TqdmProgress:
    """tqdm's bar (rows/s and ETA) with the GB/s in its postfix."""

    def __init__(self, tqdm, total: int, bytes_per_row: int, *, initial: int = 0, stream=None):
        self.bytes_per_row = bytes_per_row
        stream = stream if stream is not None else sys.stderr
        width = _terminal_width(stream)
        self._bar = tqdm(
            total=total,
            initial=initial,
            unit="row",
            unit_scale=True,
            file=stream,
            dynamic_ncols=width > 0,
            # a terminal that reports no size (0x0) still gets a bar: tqdm would hide it
            ncols=None if width > 0 else 100,
            nrows=None if width > 0 else 24,
            smoothing=0.1,
            desc="fastce",
        )
        self._meter = RateMeter(initial)

    def update(self, rows: int) -> None:
        now = time.monotonic()
        self._meter.add(self._bar.n + rows, now)
        # Set at every update (a chunk takes milliseconds at least), before the
        # update that may draw it: the figure drawn is never stale.
        rate = self._meter.rate(now)
        self._bar.set_postfix_str(f"{rate * self.bytes_per_row / 1e9:.2f} GB/s", refresh=False)
        self._bar.update(rows)

    def note(self, text: str) -> None:
        """``text`` on a line of its own above the bar."""
        self._bar.write(text, file=self._bar.fp)

    def close(self) -> None:
        self._bar.close()  # ends the bar's line; closing twice is harmless


def _terminal_width(stream) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


def make_progress(total: int, bytes_per_row: int, *, initial: int = 0, stream=None, enabled: bool | None = None):
    """A progress display on ``stream`` (stderr), or a silent one.

    ``enabled=None`` shows it only when the stream is a terminal.
    """
    stream = stream if stream is not None else sys.stderr
    if enabled is None:
        try:
            enabled = stream.isatty()
        except (AttributeError, ValueError):
            enabled = False
    if not enabled:
        return SilentProgress()
    try:
        from tqdm import tqdm
    except ImportError:
        return LineProgress(total, bytes_per_row, initial=initial, stream=stream)
    return TqdmProgress(tqdm, total, bytes_per_row, initial=initial, stream=stream)
