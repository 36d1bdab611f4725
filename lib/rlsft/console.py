"""What a person sees while ``run_all.sh`` runs: one line per stage on the console, the notebook's
own output in ``results/<profile>/logs/<stage>.log``, and the long loops' progress bars.

While a notebook runs, papermill's per-cell log and the notebook's stdout/stderr (logger
``papermill``) go to the stage's log file, and so does the kernel's own stderr (the
"Kernel is running over TCP" warning): file descriptor 2 is pointed at the log file for the
stage's duration and restored afterwards. Progress bars (tqdm text bars, which the notebook prints
to stderr) are picked out of that stream and shown on the console: redrawn in place on a
terminal, one line every ``every`` seconds otherwise. ``verbose=True`` keeps the old behaviour
(everything on the console).

>>> last_bar("step 1\\rgraphs:  40%|####      | 4/10 [00:02<00:03]\\rgraphs:  50%|#####     | 5/10")
'graphs:  50%|#####     | 5/10'
>>> last_bar("no bar here") is None
True
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Iterator

_BAR = re.compile(r"\d+%\|.*\||\|\s*\d+(?:\.\d+)?[kMG]?/\d*(?:\.\d+)?[kMG]?\??\s*\[|\d+it \[")


def last_bar(text: str) -> str | None:
    """The last tqdm bar in a chunk of stream output, or None."""
    bars = [p.strip() for p in re.split(r"[\r\n]", text) if _BAR.search(p)]
    return bars[-1] if bars else None


class ProgressForwarder(logging.Handler):
    """Shows the tqdm bars found in papermill's log records on ``stream``."""

    def __init__(self, stream=None, every: float = 30.0):
        super().__init__(level=logging.DEBUG)
        self.stream = stream or sys.stdout
        self.every, self._last, self._shown = every, 0.0, ""
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            bar = last_bar(record.getMessage())
        except Exception:  # noqa: BLE001 - a log record that cannot be formatted is not a bar
            return
        if not bar:
            return
        if self.tty:
            width = os.get_terminal_size(self.stream.fileno()).columns if self.tty else 120
            self.stream.write("\r  " + bar[: max(20, width - 3)].ljust(len(self._shown)))
            self.stream.flush()
            self._shown = bar
        elif time.time() - self._last >= self.every or bar.startswith(("100%",)) or "100%|" in bar:
            self.stream.write(f"{time.strftime('%H:%M:%S')}   {bar}\n")
            self.stream.flush()
            self._last = time.time()

    def finish(self) -> None:
        if self.tty and self._shown:
            self.stream.write("\r" + " " * (len(self._shown) + 2) + "\r")
            self.stream.flush()


@contextlib.contextmanager
def stage_log(path: Path, verbose: bool = False) -> Iterator[Path]:
    """Send the notebook's log (logger ``papermill``) and the kernel's stderr to ``path`` while
    a stage runs; forward its progress bars to the console. Restores everything afterwards."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pm_log = logging.getLogger("papermill")
    fh = open(path, "w", encoding="utf-8", errors="replace")
    file_handler = logging.StreamHandler(fh)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    forwarder = ProgressForwarder()
    saved = (pm_log.propagate, pm_log.level)
    pm_log.addHandler(file_handler)
    pm_log.setLevel(logging.INFO)
    if not verbose:
        pm_log.propagate = False
        pm_log.addHandler(forwarder)
    sys.stderr.flush()
    saved_fd2 = os.dup(2)
    if not verbose:
        os.dup2(fh.fileno(), 2)  # the kernel (a child process) inherits it
    try:
        yield path
    finally:
        fh.flush()
        os.dup2(saved_fd2, 2)
        os.close(saved_fd2)
        forwarder.finish()
        pm_log.removeHandler(file_handler)
        pm_log.removeHandler(forwarder)
        pm_log.propagate, _ = saved
        pm_log.setLevel(saved[1])
        fh.close()
