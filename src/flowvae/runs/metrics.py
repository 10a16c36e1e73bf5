"""One line of a run's ``metrics.jsonl``: the record of one evaluation during training
(:class:`MetricsRow`), written by the trainer through :meth:`flowvae.runs.RunFolder.append_metrics`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from .records import Record, RecordError

__all__ = ["PROBE_PREFIX", "MetricsRow"]

PROBE_PREFIX = "probe_"  # the keys of the linear probes' accuracies: probe_<representation>


@dataclasses.dataclass(frozen=True, kw_only=True)
class MetricsRow(Record):
    """The record of one evaluation, as a line of ``metrics.jsonl`` holds it (keys in this order;
    ``None`` written as ``null`` for ``train_bpd`` and ``grad_norm_max``, the other optional fields
    left out when ``None``).

    Attributes:
        step: optimiser steps done.
        train_bpd: the running mean (weight 0.02) of the training loss, bits/dim; ``None`` at step 0.
        train_elbo_bpd: the running mean of the plain negative ELBO, bits/dim, when the loss departs
            from it (KL warm-up, free bits, an auxiliary decoder); else ``None``. It keeps its last
            value once the loss is the ELBO again.
        test_elbo_bpd: negative ELBO of eq. (2) on the evaluation's test images, bits/dim.
        test_iw_bpd: negative importance-weighted bound with ``test_k`` samples, bits/dim.
        test_kl: KL(q(z|x) || p(z)), nats per image.
        test_k: posterior samples per image (``train.eval_k``).
        test_n: test images evaluated.
        lr: the learning rate of the next update.
        skipped_steps: non-finite steps skipped so far.
        grad_norm_max: the largest gradient norm since the previous evaluation (``None`` before the
            first step).
        time_s: the run's wall time in seconds when the record was complete (set-up included,
            summed over the sessions of a resumed run).
        kl_weight: the KL term's weight in the update that led here, under KL warm-up; else ``None``.
        probes: linear-probe test accuracy in [0, 1] by representation name (``train.probe_images``),
            written as ``probe_<name>`` keys.
        z_collapsed: with a probe of the code z, whether its KL is below the collapse threshold.
        switch_low_follows_z, switch_colour_follows_z, switch_high_follows_v: the label-free switch
            score (:func:`flowvae.evaluation.frequencies.switch_frequencies`) on ``train.switch_pairs``
            pairs of the evaluation's test images, fractions in [0, 1]; ``None`` when off.
    """

    step: int
    train_bpd: float | None
    train_elbo_bpd: float | None = None
    test_elbo_bpd: float
    test_iw_bpd: float
    test_kl: float
    test_k: int
    test_n: int
    lr: float
    skipped_steps: int
    grad_norm_max: float | None
    time_s: float
    kl_weight: float | None = None
    probes: dict[str, float] = dataclasses.field(default_factory=dict)
    z_collapsed: bool | None = None
    switch_low_follows_z: float | None = None
    switch_colour_follows_z: float | None = None
    switch_high_follows_v: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The line's mapping: :meth:`Record.to_dict` with ``probes`` spelled out as ``probe_<name>`` keys
        in its place."""
        out: dict[str, Any] = {}
        for key, value in super().to_dict().items():
            if key == "probes":
                out.update({PROBE_PREFIX + name: acc for name, acc in value.items()})
            else:
                out[key] = value
        return out

    @classmethod
    def from_dict(cls, d: Any, where: str = "a metrics.jsonl line") -> MetricsRow:
        """The row of a ``metrics.jsonl`` line's mapping, every field checked; its ``probe_<name>`` keys
        become :attr:`probes`.

        Raises:
            RecordError: not a mapping, a missing field, or a field (a probe too) of another type.
        """
        if not isinstance(d, Mapping):
            raise RecordError(f"{where} is not a mapping of fields but {type(d).__name__}")
        rest = {k: v for k, v in d.items() if not (isinstance(k, str) and k.startswith(PROBE_PREFIX))}
        probes = {k[len(PROBE_PREFIX):]: v for k, v in d.items() if k not in rest}
        return super().from_dict({**rest, "probes": probes}, where)
