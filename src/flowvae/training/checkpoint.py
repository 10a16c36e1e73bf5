"""Deprecated alias of :mod:`flowvae.runs.checkpoints` (the run folder's owner), kept for one release: import from there."""

import warnings

from ..runs.checkpoints import *  # noqa: F403
from ..runs.checkpoints import __all__  # noqa: F401
from ..safe_io import atomic_write as atomic_write_bytes  # noqa: F401

warnings.warn("flowvae.training.checkpoint moved to flowvae.runs.checkpoints; import it from there (this alias goes in the next release)",
              DeprecationWarning, stacklevel=2)
