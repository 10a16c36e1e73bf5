"""Evaluation: bits/dim."""

from .bpd import evaluate_bpd

__all__ = ["evaluate_bpd"]
