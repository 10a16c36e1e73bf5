"""Shared fixtures: one tiny trained run folder per model kind, trained once per test session
(``tiny_runs``; the recipes are in :mod:`helpers.tiny`), one torch thread per module, and a private
data cache. Helpers that tests import live in the ``helpers`` package, never here.

``tiny_runs[kind]`` trains the run of ``kind`` the first time it is asked for (so a test file that
needs one kind trains only that one) and returns its folder; later requests, from any test file,
get the same folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.tiny import TinyRuns, one_thread


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """One torch thread for a whole test module (:func:`one_thread`); use with
    ``pytestmark = pytest.mark.usefixtures("single_thread")``."""
    with one_thread():
        yield


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``FLOWVAE_CACHE`` in a session-wide temporary folder: the tests' decoded-data and pixel-probe
    caches never land in (or are read from) the user's ``~/.cache/flowvae``. Subprocesses inherit it."""
    import os

    old = os.environ.get("FLOWVAE_CACHE")
    path = tmp_path_factory.mktemp("flowvae-cache")
    os.environ["FLOWVAE_CACHE"] = str(path)
    try:
        yield path
    finally:
        if old is None:
            os.environ.pop("FLOWVAE_CACHE", None)
        else:
            os.environ["FLOWVAE_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> TinyRuns:
    """:class:`TinyRuns` in a session-wide temporary folder."""
    return TinyRuns(tmp_path_factory.mktemp("tiny_runs"))
