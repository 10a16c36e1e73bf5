"""The registry of metrics: what each result file of a run folder is, and what computes it.

A :class:`Metric` names a metric (``"eval"``, ``"probe"``, ...), the capability a model needs for it
(:meth:`~flowvae.models.base.GenerativeModel.require`), the function that computes it and the typed
record it returns (:mod:`flowvae.runs.records`), which is also the file it is saved as. The commands
of the command line take a metric's capability, function and file from here; the report reads the
files back through :meth:`Metric.read`.

Adding a metric is its function (a model first, then whatever it needs; returns its record, or a
mapping of the record's fields), its record (a :class:`~flowvae.runs.records.Record` with ``FILE``)
and one :func:`register_metric` call; a command that computes it is a module of
:mod:`flowvae.cli.commands`.

The metrics registered here, in the order of their commands in ``flowvae --help``:

* ``eval``: :func:`~flowvae.evaluation.evaluate_run`, :class:`~flowvae.runs.records.EvalResult` (``eval.json``);
* ``switch``: :func:`~flowvae.evaluation.switching.switch_metric`, :class:`~flowvae.runs.records.SwitchResult`
  (``switch.json``), capability ``global_local``;
* ``switch-frequencies``: :func:`~flowvae.evaluation.frequencies.switch_frequencies`,
  :class:`~flowvae.runs.records.SwitchFrequencies` (``switch_frequencies.json``), capability ``global_local``;
* ``probe``: :func:`~flowvae.evaluation.probe_run`, :class:`~flowvae.runs.records.ProbeResult` (``probe.json``);
* ``fid``: :func:`~flowvae.evaluation.fid_run`, :class:`~flowvae.runs.records.FidResult` (``fid_tT.TT.json``,
  one per temperature);
* ``check``: :func:`~flowvae.evaluation.check.check_model`, :class:`~flowvae.runs.records.CheckResult`
  (``check.json``);
* ``disentanglement``: :func:`~flowvae.evaluation.disentangle_codes`,
  :class:`~flowvae.runs.records.DisentanglementResult` (``disentanglement.json``), capability ``vector_latent``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from ..errors import ConfigError
from ..models.base import GenerativeModel
from ..runs import RunFolder
from ..runs.records import (
    CheckResult,
    DisentanglementResult,
    EvalResult,
    FidResult,
    ProbeResult,
    Record,
    SwitchFrequencies,
    SwitchResult,
)
from ..settings import suggest
from .check import check_model
from .evaluate import evaluate_run
from .frequencies import switch_frequencies
from .representations import disentangle_codes, probe_run
from .sampling import fid_run
from .switching import switch_metric

__all__ = ["Metric", "register_metric", "unregister_metric", "get_metric", "registered_metrics", "run_metric"]

R = TypeVar("R", bound=Record)


@dataclasses.dataclass(frozen=True)
class Metric(Generic[R]):
    """One registered metric.

    Attributes:
        name: the metric's name (``"eval"``, ``"probe"``, ...), unique in the registry.
        function: computes it: ``function(model, *args, **kwargs)`` returns the record (or a mapping
            of its fields, read with the record's ``from_dict``).
        record: the record class of its result; its ``FILE`` (or ``FILES`` pattern) is the run-folder
            file the result is saved as.
        capability: the capability a model needs for it (``None``: any model).
        title: what it measures, in a few words (for listings).
    """

    name: str
    function: Callable[..., Any]
    record: type[R]
    capability: str | None = None
    title: str = ""

    def require(self, model: GenerativeModel, what: str | None = None) -> None:
        """Refuse a model without :attr:`capability` (one line, naming ``what`` or the metric).

        Raises:
            ConfigError: the model lacks the capability.
        """
        if self.capability is not None:
            model.require(self.capability, what or f"the {self.name} metric")

    def run(self, model: GenerativeModel, *args: Any, **kwargs: Any) -> R:
        """The metric of ``model``: :attr:`function` after :meth:`require`, as a :attr:`record`.

        Raises:
            ConfigError: the model lacks the capability; whatever the function raises.
            RecordError: the function returned something that is not the record (nor a mapping of it).
        """
        self.require(model)
        out = self.function(model, *args, **kwargs)
        if isinstance(out, self.record):
            return out
        return self.record.from_dict(out, f"the result of the {self.name} metric")

    @property
    def pattern(self) -> str:
        """The glob pattern of the run-folder files holding its results (``eval.json``, ``fid_t*.json``)."""
        pattern = self.record.pattern()
        if pattern is None:
            raise ConfigError(f"metric {self.name!r}: its record {self.record.__name__} names no file (FILE)")
        return pattern

    def files(self, run: str | Path) -> list[Path]:
        """The files of the run folder ``run`` that hold its results, sorted by name."""
        folder = Path(run)
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if fnmatch.fnmatchcase(p.name, self.pattern))

    def read(self, run: str | Path, notes: list[str] | None = None) -> dict[str, R]:
        """The results saved in the run folder ``run``, by file name; a file that cannot be read or is
        not the record (a missing or ill-typed field) is left out, with a line in ``notes``."""
        from ..runs.records import RecordError

        folder, out = RunFolder(run), dict[str, R]()
        for path in self.files(run):
            value = folder.read_json(path.name, notes)
            if value is None:
                continue
            try:
                out[path.name] = self.record.from_dict(value, path.name)
            except RecordError as e:
                if notes is not None:
                    notes.append(str(e))
        return out

    def write(self, run: str | Path, result: R) -> Path:
        """Save ``result`` in the run folder ``run`` as its file (``result.filename``), atomically."""
        name = result.filename
        if name is None:
            raise ConfigError(f"metric {self.name!r}: its record {type(result).__name__} names no file (FILE)")
        return RunFolder(run).write_json(name, result.to_dict())


_REGISTRY: dict[str, Metric[Any]] = {}


def register_metric(metric: Metric[R], replace: bool = False) -> Metric[R]:
    """Add ``metric`` to the registry (after those registered before: :func:`registered_metrics`'s order).

    Raises:
        ConfigError: a metric of that name is registered already (and ``replace`` is false), or its
            record is not a :class:`~flowvae.runs.records.Record` class.
    """
    if not (isinstance(metric.record, type) and issubclass(metric.record, Record)):
        raise ConfigError(f"metric {metric.name!r}: its record must be a Record class, got {metric.record!r}")
    if metric.name in _REGISTRY and not replace:
        raise ConfigError(f"a metric named {metric.name!r} is registered already")
    _REGISTRY[metric.name] = metric
    return metric


def unregister_metric(name: str) -> Metric[Any]:
    """Remove the metric ``name`` from the registry and return it.

    Raises:
        ConfigError: no metric of that name.
    """
    metric = get_metric(name)
    del _REGISTRY[name]
    return metric


def get_metric(name: str) -> Metric[Any]:
    """The registered metric ``name``.

    Raises:
        ConfigError: no metric of that name (with the nearest one).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown metric {name!r}{suggest(name, list(_REGISTRY))}") from None


def registered_metrics() -> tuple[Metric[Any], ...]:
    """Every registered metric, in the order registered."""
    return tuple(_REGISTRY.values())


def run_metric(name: str, model: GenerativeModel, *args: Any, **kwargs: Any) -> Any:
    """``get_metric(name).run(model, *args, **kwargs)``: the metric ``name`` of ``model`` as its record.

    Raises:
        ConfigError: an unknown metric; a model without the capability it needs.
    """
    return get_metric(name).run(model, *args, **kwargs)


# The metrics of the commands, in the order of their commands in `flowvae --help`.
register_metric(Metric("eval", evaluate_run, EvalResult, title="test-set bits/dim, KL, round trip, reconstruction"))
register_metric(Metric("switch", switch_metric, SwitchResult, "global_local",
                       title="whose class the decodes of switched codes take"))
register_metric(Metric("switch-frequencies", switch_frequencies, SwitchFrequencies, "global_local",
                       title="whether switched decodes take low frequencies from z and high ones from v"))
register_metric(Metric("probe", probe_run, ProbeResult,
                       title="linear-probe accuracy of each representation and of the pixels"))
register_metric(Metric("fid", fid_run, FidResult, title="FID and KID of samples against test images"))
register_metric(Metric("check", check_model, CheckResult, title="health checks of a trained model"))
register_metric(Metric("disentanglement", disentangle_codes, DisentanglementResult, "vector_latent",
                       title="MIG, DCI, SAP, FactorVAE and BetaVAE scores on dSprites"))
