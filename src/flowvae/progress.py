"""Progress of long jobs: a tqdm bar on a terminal, periodic log lines otherwise (clusters, pipes).

``flowvae`` commands turn bars on when standard error is a terminal and ``-q`` was not given;
library calls default to no bar. Without a bar, a loop wrapped by :func:`progress` (and a job
counted by :func:`ticker`) logs an INFO line on the ``flowvae`` logger every :data:`LOG_EVERY_S`
seconds, ``"features: 12/40 batches, 31 s elapsed, about 72 s left"``: a job on a cluster or
behind a pipe shows it is alive without a bar's carriage returns in its log. The logger's level
decides whether they are shown (``-q`` and library use without logging set up show none). Under
DDP only rank 0 shows a bar (the trainer decides).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

__all__ = ["progress", "ticker", "bars_enabled", "set_bars", "LOG_EVERY_S"]

T = TypeVar("T")
_enabled = False
log = logging.getLogger("flowvae")

LOG_EVERY_S = 30.0
"""Seconds between two progress lines of a job without a bar."""


def set_bars(enabled: bool) -> None:
    """Turn progress bars of library loops (evaluation, features, sampling, FID) on or off."""
    global _enabled
    _enabled = bool(enabled) and int(os.environ.get("RANK", "0")) == 0


def bars_enabled() -> bool:
    return _enabled


def _line(desc: str, done: int, total: int | None, unit: str, elapsed: float) -> str:
    """``"desc: done/total units, E s elapsed, about L s left"`` (the estimate once something is done)."""
    units = unit if unit.endswith("s") else unit + ("es" if unit.endswith(("ch", "sh")) else "s")
    count = f"{done}/{total}" if total else f"{done}"
    left = f", about {elapsed / done * (total - done):.0f} s left" if total and 0 < done < total else ""
    return f"{desc or 'working'}: {count} {units}, {elapsed:.0f} s elapsed{left}"


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "", unit: str = "batch") -> Iterable[T]:
    """``iterable`` wrapped in a tqdm bar (rate and ETA) when bars are on; else, when the ``flowvae``
    logger passes INFO, in a generator that logs a line (done/total, elapsed, time left) every
    :data:`LOG_EVERY_S` seconds; else unchanged."""
    if _enabled:
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr, leave=False)
    if not log.isEnabledFor(logging.INFO):
        return iterable
    return _logged(iterable, total, desc, unit)


def _logged(iterable: Iterable[T], total: int | None, desc: str, unit: str) -> Iterator[T]:
    start = last = time.monotonic()
    done = 0
    for item in iterable:
        yield item
        done += 1  # counted once the caller has finished with the item
        now = time.monotonic()
        if now - last >= LOG_EVERY_S:
            last = now
            log.info("%s", _line(desc, done, total, unit, now - start))


class _Ticker:
    """A done/total counter for work that is not one loop (e.g. the fits of a cross-validation).
    With bars off, a daemon thread logs a line every :data:`LOG_EVERY_S` seconds while it is open,
    also while one long unit runs."""

    def __init__(self, total: int, desc: str, unit: str) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.done = 0
        self._bar: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)

    def _beat(self) -> None:
        while not self._stop.wait(LOG_EVERY_S):
            log.info("%s", _line(self.desc, self.done, self.total, self.unit, time.monotonic() - self._start))

    def __enter__(self) -> _Ticker:
        if _enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=self.desc, unit=self.unit, dynamic_ncols=True, file=sys.stderr,
                             leave=False)
        elif log.isEnabledFor(logging.INFO):
            self._thread = threading.Thread(target=self._beat, name="flowvae-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._bar is not None:
            self._bar.close()


def ticker(total: int, desc: str, unit: str = "fit") -> _Ticker:
    """A context manager counting ``total`` units of work (``.update(n)``): a tqdm bar when bars are
    on, else a log line every :data:`LOG_EVERY_S` seconds (done/total, elapsed, time left) while it
    is open, when the ``flowvae`` logger passes INFO."""
    return _Ticker(total, desc, unit)
