"""Progress lines of the Ray Data jobs: one line every few seconds while the pipeline streams."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def progress_lines(describe: Callable[[float], str], interval_s: float,
                   log: Callable[[str], None]) -> Iterator[None]:
    """Log ``describe(elapsed seconds)`` every ``interval_s`` seconds while the block runs (a daemon thread,
    stopped and joined on leaving, also on an error)."""
    started = time.monotonic()
    stop = threading.Event()

    def report() -> None:
        while not stop.wait(interval_s):
            log(describe(time.monotonic() - started))

    reporter = threading.Thread(target=report, name="job-progress", daemon=True)
    reporter.start()
    try:
        yield
    finally:
        stop.set()
        reporter.join()
