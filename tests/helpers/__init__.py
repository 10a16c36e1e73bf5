"""Helpers the tests share (import them as ``from helpers.tiny import ...``): tiny recipes and run
folders (:mod:`helpers.tiny`), the command contract (:mod:`helpers.contract`) and the small digits
model of the long-run tests (:mod:`helpers.small`)."""

from pathlib import Path

#: the repository's root folder (``../shared`` lies beside it)
REPO = Path(__file__).resolve().parents[2]
