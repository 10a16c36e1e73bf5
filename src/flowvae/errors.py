"""User-facing errors.

Every error a user can cause (bad data, bad config, wrong checkpoint) is raised as a
subclass of :class:`FlowVAEError`. The command line prints its message as one line and
exits with status 1, without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class FlowVAEError(Exception):
    """Base class of errors caused by user input; the message says what to do."""


class DataError(FlowVAEError, ValueError):
    """Unreadable, empty or ill-shaped data, or a dataset that cannot be found."""


class ConfigError(FlowVAEError, ValueError):
    """A configuration field that does not exist or has an invalid value."""


class CheckpointError(FlowVAEError, RuntimeError):
    """A checkpoint or run folder that cannot be used with the requested model."""


class TrainingInterrupted(FlowVAEError):
    """Training stopped by a signal (SIGINT, SIGTERM or SIGHUP) after finishing its current step
    and writing a checkpoint of it; ``flowvae train --resume`` continues bitwise from there.

    Attributes:
        signum: the signal's number.
        step: the step of the checkpoint written on the way out.
    """

    def __init__(self, message: str, signum: int, step: int):
        super().__init__(message)
        self.signum, self.step = signum, step
