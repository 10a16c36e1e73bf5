"""Helpers the tests share (import them as ``from helpers.tiny import ...``): tiny recipes and run
folders (:mod:`helpers.tiny`), the command contract (:mod:`helpers.contract`) and the small digits
model of the long-run tests (:mod:`helpers.small`)."""

import os
from pathlib import Path

#: the repository's root folder (``../shared`` lies beside it)
REPO = Path(__file__).resolve().parents[2]

#: the shared real-data folder: ``$FLOWVAE_SHARED_DATA``, else ``../shared/data`` beside the repository
#: (not the working directory's, which :func:`flowvae.data.shared_data_dir` uses)
SHARED_DATA = Path(os.environ["FLOWVAE_SHARED_DATA"]) if os.environ.get("FLOWVAE_SHARED_DATA") else (
    REPO.parent / "shared" / "data")
