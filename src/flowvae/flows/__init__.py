"""Invertible layers. Every layer follows the contract of :mod:`flowvae.flows.base`."""

from .actnorm import ActNorm
from .base import Flow, FlowSequence, data_init
from .conv1x1 import InvertibleConv1x1, InvertibleLinear
from .coupling import AffineCoupling, ChannelSplit, bounded_log_scale
from .glow import (
    ConditionalGaussian,
    ConditionalGlow,
    FactorOut,
    FlowPrior,
    LearnedGaussian,
    glow_step,
    refined_step,
    standard_normal_logprob,
)
from .squeeze import Squeeze

__all__ = ["ActNorm", "AffineCoupling", "ChannelSplit", "ConditionalGaussian", "ConditionalGlow", "FactorOut",
           "Flow", "FlowPrior", "FlowSequence", "InvertibleConv1x1", "InvertibleLinear", "LearnedGaussian",
           "Squeeze", "bounded_log_scale", "data_init", "glow_step", "refined_step", "standard_normal_logprob"]
