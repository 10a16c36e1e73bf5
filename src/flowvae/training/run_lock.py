"""Deprecated alias of :mod:`flowvae.runs.lock` (the run folder's owner), kept for one release: import from there."""

import warnings

from ..runs.lock import *  # noqa: F403
from ..runs.lock import __all__  # noqa: F401

warnings.warn("flowvae.training.run_lock moved to flowvae.runs.lock; import it from there (this alias goes in the next release)",
              DeprecationWarning, stacklevel=2)
