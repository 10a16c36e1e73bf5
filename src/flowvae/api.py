"""Loading a trained run folder in one call: :func:`load_run` (:mod:`flowvae.runs`, the run folder's
owner, does the work)."""

from .runs import load_run

__all__ = ["load_run"]
