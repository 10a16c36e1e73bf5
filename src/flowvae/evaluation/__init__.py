"""Evaluation: bits/dim and reconstruction quality (disentanglement metrics, probes and FID live in
their own modules: ``disentanglement``, ``probe``, ``fid``)."""

from .bpd import evaluate_bpd
from .reconstruction import reconstruction_quality

__all__ = ["evaluate_bpd", "reconstruction_quality"]
