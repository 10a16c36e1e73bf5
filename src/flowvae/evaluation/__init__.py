"""Evaluation of a model of any kind: what each ``flowvae`` command computes, as functions that take a
model (and data) and return results: the typed records of the run folder's result files
(:mod:`flowvae.runs.records`: ``EvalResult``, ``ProbeResult``, ...; read-only mappings too), uint8
image tensors and plain dicts for the rest; the command line only loads, calls, writes files and prints.
The metrics that write a result file are registered in :mod:`flowvae.evaluation.metrics` (name,
capability, function, record).

=========================  ==============================================  ======================
command                    function                                        needs capability
=========================  ==============================================  ======================
``flowvae eval``           :func:`evaluate_run` (:func:`evaluate_bpd`,     round trip:
                           :func:`round_trip`, :func:`reconstruction_      ``exact_codes``;
                           quality`)                                       reconstruction:
                                                                           ``reconstruction``
``flowvae sample``         :func:`sample_grids`                            --
``flowvae fid``            :func:`fid_run`                                 --
``flowvae switch``         :func:`switch_pairs`                            ``global_local``
``flowvae interpolate``    :func:`interpolation_grid`                      ``global_local``
``flowvae traverse``       :func:`traversal_grids`                         ``vector_latent``
``flowvae manipulate``     :func:`label_directions`,                       ``vector_latent``
                           :func:`manipulation_grid`, :func:`class_curves`
``flowvae probe``          :func:`probe_run`                               --
``flowvae disentangle``    :func:`disentangle_codes`                       ``vector_latent``
``flowvae check``          :func:`check_model` (``evaluation.check``)      --
=========================  ==============================================  ======================

A function whose capability the model lacks raises the model's one-line
:class:`~flowvae.errors.ConfigError` (:meth:`~flowvae.models.base.GenerativeModel.require`). The
metric modules live beside them: ``disentanglement``, ``probe``, ``fid``.
"""

from .bpd import evaluate_bpd
from .evaluate import evaluate_run, round_trip
from .interpolation import interpolation_grid
from .manipulation import class_curves, label_directions, manipulation_grid
from .metrics import Metric, get_metric, register_metric, registered_metrics, run_metric, unregister_metric
from .reconstruction import reconstruction_quality
from .representations import disentangle_codes, latent_codes, probe_run
from .sampling import fid_run, generate, inception_network, sample_grids
from .switching import pick_pairs, switch_pairs
from .traversal import traversal_grids, traversal_values

__all__ = ["evaluate_bpd", "reconstruction_quality", "evaluate_run", "round_trip", "sample_grids", "generate",
           "fid_run", "inception_network", "switch_pairs", "pick_pairs", "interpolation_grid", "traversal_grids",
           "traversal_values", "label_directions", "manipulation_grid", "class_curves", "probe_run", "latent_codes",
           "disentangle_codes", "Metric", "register_metric",
           "unregister_metric", "get_metric", "registered_metrics", "run_metric"]
