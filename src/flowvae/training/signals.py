"""The signals that stop a training run cleanly.

SIGINT, SIGTERM and SIGHUP (what schedulers send before a kill) ask the loop to stop after the
current step and write a checkpoint; a second signal stops at once. The trainer reads
:attr:`StopSignals.signum` between steps; under data parallelism every rank then stops at the same
step (:meth:`~flowvae.training.distributed.DistContext.all_true`).
"""

from __future__ import annotations

import signal
import threading
from typing import Any

__all__ = ["StopSignals"]


class StopSignals:
    """A context manager that installs the handlers (in the main thread only: Python allows no
    other) and puts the previous ones back on exit.

    Attributes:
        signum: the first signal received, or ``None``.

    The second signal raises ``KeyboardInterrupt`` for SIGINT, else ``SystemExit(128 + signal)``
    (the shell's exit status of a process killed by it), after putting the previous handlers back.
    """

    NAMES = ("SIGINT", "SIGTERM", "SIGHUP")

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for name in self.NAMES:
                sig = getattr(signal, name, None)  # SIGHUP does not exist on Windows
                if sig is not None:
                    self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            return
        self.__exit__()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}
