"""Typed records of what a run folder holds: each result file (``eval.json``, ``probe.json``, ...)
and each line of ``metrics.jsonl`` is one of these, written and read by the code that needs it
(the commands, the trainer, the report, the model card) instead of spelling key strings.

:class:`Record` is the base: a frozen dataclass whose fields are the file's keys. ``to_dict()``
gives the JSON layout of the file (the layout of earlier releases, so their run folders stay
readable and ours stay readable by them); :meth:`Record.from_dict` reads one back from anything a
run folder may hold, checking every known field's type and keeping unknown keys in ``extra`` (a
newer release may add some). A record is also a read-only mapping of its ``to_dict()``, so code
written against the plain dicts of earlier releases (``res["elbo_bpd"]``) keeps working.

The result files of the commands: :class:`EvalResult` (``eval.json``, ``flowvae eval``),
:class:`ProbeResult` (``probe.json``), :class:`FidResult` (``fid_tT.TT.json``, one per temperature),
:class:`SwitchResult` (``switch.json``, the switch metric), :class:`CheckResult` (``check.json``) and
:class:`DisentanglementResult` (``disentanglement.json``), :class:`DirectionSet` (``directions.json``) and
:class:`ManipulationResult` (``manipulation.json``); the evaluation functions of
:mod:`flowvae.evaluation` return them and :mod:`flowvae.evaluation.metrics` lists them.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, TypeVar, Union

from ..errors import CheckpointError

__all__ = ["Record", "RecordError", "nullable", "EvalResult", "ReconstructionResult", "ProbeResult", "ProbeRow",
           "FidResult", "SwitchResult", "SwitchFractions", "SwitchClassifier", "SwitchFrequencies", "CheckResult", "CheckItem",
           "DisentanglementResult", "DirectionSet", "ClassCurve", "ManipulationResult"]

R = TypeVar("R", bound="Record")


class RecordError(CheckpointError):
    """A run-folder file that is not the record it should be (a missing or ill-typed field)."""


def _fits(value: Any, tp: Any) -> bool:
    """Whether a JSON value fits the annotation ``tp`` (ints for floats too; NaN and infinities, which
    JSON cannot hold but Python's writer emits, count as floats)."""
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple) or tp in (list, tuple):
        args = typing.get_args(tp)
        return isinstance(value, (list, tuple)) and (not args or all(_fits(v, args[0]) for v in value))
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        args = typing.get_args(tp)
        return isinstance(value, dict) and (not args or all(isinstance(k, str) and _fits(v, args[1])
                                                            for k, v in value.items()))
    if isinstance(tp, type) and issubclass(tp, Record):
        return isinstance(value, (dict, tp))
    return isinstance(value, tp) if isinstance(tp, type) else True


def nullable() -> Any:
    """A field that files of earlier releases may lack (``None`` then) but that is written even when
    ``None`` (as ``null``), as the current writer writes it: ``saturated: float | None = nullable()``."""
    return dataclasses.field(default=None, metadata={"null": True})


@dataclasses.dataclass(frozen=True)
class Record(Mapping[str, Any]):
    """Base of every typed record (module docstring). Subclasses are frozen dataclasses; ``FILE`` names
    the run-folder file a record of the class is saved as (``None``: lines of a file, or not saved, or
    a name that depends on the record: :attr:`filename`); ``FILES`` is the glob pattern of the files
    holding records of the class (``FILE`` unless set).

    A field may hold a record, or a list or a ``str``-keyed dict of records (``list[CheckItem]``):
    :meth:`to_dict` writes them as mappings, :meth:`from_dict` reads them back as records.

    Attributes:
        extra: keys of the file that the class does not know (kept, and written back).
    """

    FILE: ClassVar[str | None] = None
    FILES: ClassVar[str | None] = None

    extra: dict[str, Any] = dataclasses.field(default_factory=dict, kw_only=True, compare=False)

    @property
    def filename(self) -> str | None:
        """The name of the run-folder file this record is saved as: ``FILE`` (a class whose file name
        depends on the record, :class:`FidResult`, says so here)."""
        return self.FILE

    @classmethod
    def pattern(cls) -> str | None:
        """The glob pattern of the run-folder files holding records of this class: ``FILES``, else ``FILE``."""
        return cls.FILES or cls.FILE

    # ---------------------------------------------------------------- the file's layout
    def to_dict(self) -> dict[str, Any]:
        """The record as the file holds it: every field (nested records as mappings) but ``extra``,
        whose keys follow; fields whose value is ``None`` and whose default is ``None`` are left out,
        as the writers of earlier releases left them out, unless declared :func:`nullable`."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None and f.default is None and not f.metadata.get("null"):
                continue
            out[f.name] = _plain(value)
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls: type[R], d: Any, where: str = "the record") -> R:
        """A record from a mapping read from a run folder: every known field present (or defaulted)
        and of its annotated type, nested records read recursively, unknown keys kept in ``extra``.

        Raises:
            RecordError: ``d`` is not a mapping, or a field is missing or of another type.
        """
        if not isinstance(d, Mapping):
            raise RecordError(f"{where} is not a mapping of fields but {type(d).__name__}")
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        names = set()
        for f in dataclasses.fields(cls):
            if f.name == "extra":
                continue
            names.add(f.name)
            if f.name not in d:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise RecordError(f"{where} has no {f.name!r}")
                continue
            value, tp = d[f.name], hints[f.name]
            if not _fits(value, tp):
                raise RecordError(f"{where}: {f.name!r} is {value!r}, not {_type_name(tp)}")
            kwargs[f.name] = _nested(value, tp, f"{where}: {f.name}")
        kwargs["extra"] = {str(k): v for k, v in d.items() if k not in names}
        return cls(**kwargs)

    # ---------------------------------------------------------------- the mapping of earlier releases
    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


def _plain(value: Any) -> Any:
    """A field's value as the file holds it: records (alone, in a list or as a dict's values) as mappings."""
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, list) and any(isinstance(v, Record) for v in value):
        return [_plain(v) for v in value]
    if isinstance(value, dict) and any(isinstance(v, Record) for v in value.values()):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _nested(value: Any, tp: Any, where: str) -> Any:
    """``value`` (which fits ``tp``) with the mappings that ``tp`` declares records read as records."""
    nested = _record_type(tp)
    if nested is not None:
        return nested.from_dict(value, where) if isinstance(value, Mapping) else value
    for arg in (tp, *_union_args(tp)):
        origin, args = typing.get_origin(arg), typing.get_args(arg)
        if origin is list and isinstance(value, list) and args and _record_type(args[0]) is not None:
            return [_nested(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
        if origin is dict and isinstance(value, dict) and len(args) == 2 and _record_type(args[1]) is not None:
            return {k: _nested(v, args[1], f"{where}: {k}") for k, v in value.items()}
    return value


def _union_args(tp: Any) -> tuple[Any, ...]:
    return typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else ()


def _record_type(tp: Any) -> type[Record] | None:
    """The record class an annotation names (``X`` or ``X | None``; not ``list[X]``), if any."""
    for arg in (tp, *_union_args(tp)):
        if isinstance(arg, type) and issubclass(arg, Record):
            return arg
    return None


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp)).replace("float", "a number").replace("int", "an integer")


def finite_or_none(v: Any) -> float | None:
    """``v`` as a float when it is a finite number, else ``None`` (for values a report shows)."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


# ---------------------------------------------------------------------------------------------- result files
# Fields are in the order the writers put the keys (so to_dict() is the file's layout); a field
# with a default is one that some files lack: a kind without the capability it reports, or a file
# of an earlier release.


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReconstructionResult(Record):
    """Reconstruction quality from the factors alone (``reconstruction`` of ``eval.json``;
    :func:`flowvae.evaluation.reconstruction_quality`).

    Attributes:
        kind: the model kind.
        n: images measured.
        recon_bpd: ``-log p(x | c(x))`` in bits per dimension.
        mse: mean squared error per pixel on the [0, 1] scale: one number (a mean image), or one per
            temperature of the local code (``{"T=0.0": ..., ...}``).
        fid: FID/KID of the reconstructions against the images (:func:`flowvae.evaluation.fid.fid_kid`'s
            mapping, or one per temperature), when an Inception network was given.
    """

    kind: str
    n: int
    recon_bpd: float
    mse: float | dict[str, float]
    fid: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalResult(Record):
    """``eval.json``: the test-set figures of ``flowvae eval`` (:func:`flowvae.evaluation.evaluate_run`).

    Attributes:
        elbo_bpd: negative ELBO in bits/dim, the paper's figure (NaN when not finite).
        iw_bpd: negative importance-weighted bound with ``k`` samples, bits/dim.
        kl: KL(q(z|x) || p(z)), nats per image (Monte Carlo mean).
        k: posterior samples per image.
        n: test images.
        dataset: the images' name (``"digits/test"``).
        roundtrip_images: images encoded and decoded by the round-trip check (kinds with exact codes).
        roundtrip_mismatched_pixels: uint8 values that differ after the round trip (0: exact).
        reconstruction: kinds that reconstruct from their factors.
    """

    FILE: ClassVar[str | None] = "eval.json"

    elbo_bpd: float
    iw_bpd: float
    kl: float
    k: int
    n: int
    dataset: str | None = None
    roundtrip_images: int | None = None
    roundtrip_mismatched_pixels: int | None = None
    reconstruction: ReconstructionResult | None = None

    @property
    def exact(self) -> bool | None:
        """Whether the round trip reproduced every pixel (``None`` without a round trip)."""
        return None if self.roundtrip_mismatched_pixels is None else self.roundtrip_mismatched_pixels == 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProbeRow(Record):
    """One representation's linear probe (a value of ``results`` in ``probe.json``;
    :func:`flowvae.evaluation.probe.linear_probe`).

    Attributes:
        accuracy: test accuracy in [0, 1].
        C: the SVM's regularisation, chosen or given.
        cv_accuracy: mean cross-validation accuracy of that C (``None`` when C was given).
        n_train, n_test: training and test images.
        dim: feature dimensions.
        protocol: ``"standard"`` or ``"authors"``.
    """

    accuracy: float
    C: float
    cv_accuracy: float | None
    n_train: int
    n_test: int
    dim: int
    protocol: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProbeResult(Record):
    """``probe.json``: linear-probe accuracies of each representation and of the pixels (``flowvae
    probe``, :func:`flowvae.evaluation.probe_run`).

    Attributes:
        dataset: the test images' name.
        protocol: ``"standard"`` or ``"authors"``.
        results: one row per representation name (``z``, ``v``, ...), then ``pixels``.
        z_kl_nats: KL(q(z|x) || p(z)) on the test images, nats (kinds with a prior of z).
        z_collapsed: that KL below the collapse threshold (then z's probe reads the encoder).
    """

    FILE: ClassVar[str | None] = "probe.json"

    dataset: str
    protocol: str
    results: dict[str, ProbeRow]
    z_kl_nats: float | None = None
    z_collapsed: bool | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class FidResult(Record):
    """``fid_tT.TT.json``: FID and KID of samples at one temperature against test images (``flowvae
    fid``, :func:`flowvae.evaluation.fid_run`); :attr:`filename` names the file by the temperature.

    Attributes:
        fid: Fréchet Inception distance.
        kid_mean, kid_std: kernel Inception distance over random subsets, mean and standard deviation.
        kid_subset_size: images per KID subset.
        n_real, n_fake: test images and samples.
        inception_sha256, inception_file: the network file's SHA-256 and path.
        resize, preprocessing: how images were fed to the network (files of earlier releases lack them:
            another resize, not comparable).
        temperature: the local code's temperature.
        sample_stats: the samples' pixel statistics (:func:`flowvae.evaluation.sampling.draw_samples`).
        dataset: the test images' name.
    """

    FILES: ClassVar[str | None] = "fid_t*.json"

    fid: float
    kid_mean: float
    kid_std: float
    kid_subset_size: int | None = None
    n_real: int
    n_fake: int
    inception_sha256: str
    inception_file: str | None = None
    resize: str | None = None
    preprocessing: str | None = None
    temperature: float
    sample_stats: dict[str, Any] | None = None
    dataset: str | None = None

    @staticmethod
    def file_for(temperature: float) -> str:
        """The file name of the result at ``temperature``: ``fid_t0.70.json``."""
        return f"fid_t{temperature:.2f}.json"

    @property
    def filename(self) -> str:
        return self.file_for(self.temperature)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SwitchFractions(Record):
    """Where the class of switched decodes went, as fractions in [0, 1] of the pairs (``switch.json``).

    Attributes:
        follow_z: classified as the class of the image the global code z came from.
        follow_v: classified as the class of the image the local code v came from.
        neither: any other class.
        saturated: decodes whose inverse flow saturated (``None``: a kind whose decodes are not a
            flow's inverse; files of earlier releases lack it).
    """

    follow_z: float
    follow_v: float
    neither: float
    saturated: float | None = nullable()


@dataclasses.dataclass(frozen=True, kw_only=True)
class SwitchClassifier(Record):
    """The switch metric's pixel classifier (``classifier`` of ``switch.json``).

    Attributes:
        features: ``"pixels"``.
        pool: the average-pooling factor applied to the images first (earlier releases: none).
        C, cv_accuracy, n_train, n_test, dim: as in :class:`ProbeRow`.
        protocol: ``"logistic"`` (earlier releases: absent, a linear SVM).
    """

    features: str
    pool: int | None = None
    C: float
    cv_accuracy: float | None
    n_train: int
    n_test: int
    dim: int
    protocol: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class SwitchResult(Record):
    """``switch.json``: the switch metric of ``flowvae switch``
    (:func:`flowvae.evaluation.switching.switch_metric`): the fractions of the decodes of (v1, z2),
    and in ``swapped`` of (v2, z1).

    Attributes:
        dataset: the test images' name.
        pairs: pairs of test images of different classes.
        classes: classes among the test images.
        seed: seed of the pairs and the classifier.
        swapped: the same fractions for the decodes of (v2, z1).
        test_accuracy: the classifier's accuracy on the real test images (the ceiling of ``follow_z``).
        classifier: the classifier's settings.
    """

    FILE: ClassVar[str | None] = "switch.json"

    dataset: str
    pairs: int
    classes: int
    seed: int
    follow_z: float
    follow_v: float
    neither: float
    saturated: float | None = nullable()
    swapped: SwitchFractions
    test_accuracy: float
    classifier: SwitchClassifier


@dataclasses.dataclass(frozen=True, kw_only=True)
class SwitchFrequencies(Record):
    """``switch_frequencies.json``: the label-free switch score of ``flowvae switch``
    (:func:`flowvae.evaluation.frequencies.switch_frequencies`): fractions in [0, 1] of the switched
    decodes of (v1, z2) and (v2, z1) of ``pairs`` pairs of test images.

    Attributes:
        dataset: the test images' name.
        pairs: pairs of distinct test images (``2 * pairs`` decodes).
        seed: seed of the pairs.
        low_pass: side of the low-pass image (average pooling to ``low_pass x low_pass``).
        low_follows_z: decodes whose low-pass image is closer to the z image's than to the v image's.
        colour_follows_z: the same for the mean colour (one value per channel).
        high_follows_v: decodes whose high frequencies (the image minus its low-pass) are closer to
            the v image's than to the z image's.
        saturated: decodes whose inverse flow saturated (``None``: not a flow's inverse).
    """

    FILE: ClassVar[str | None] = "switch_frequencies.json"

    dataset: str
    pairs: int
    seed: int
    low_pass: int
    low_follows_z: float
    colour_follows_z: float
    high_follows_v: float
    saturated: float | None = nullable()


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckItem(Record):
    """One check of ``flowvae check`` (an item of ``checks`` in ``check.json``); besides its verdict,
    the figure the check measured.

    Attributes:
        name: what was checked (``"finite weights"``, ``"exact round trip"``, ...).
        ok: whether it passed.
        detail: the finding, in words.
        warning: ``True`` when it passed but deserves a look (else left out).
        tensors: (finite weights) names of tensors holding NaN/Inf, at most 10.
        max_inverse_error, max_logdet_error: (1x1 convolution inverses) the largest errors.
        pixels_differing: (exact round trip) uint8 values that differ.
        max_error_bins: (inverse accuracy) the largest continuous round-trip error, in bins.
        bpd: (finite log-likelihoods) the mean negative ELBO, bits/dim.
        stats: (samples) the samples' pixel statistics.
        origin: (where samples saturate) :func:`~flowvae.evaluation.saturation.saturation_origin`'s
            record.
    """

    name: str
    ok: bool
    detail: str
    warning: bool | None = None
    tensors: list[str] | None = None
    max_inverse_error: float | None = None
    max_logdet_error: float | None = None
    pixels_differing: int | None = None
    max_error_bins: float | None = None
    bpd: float | None = None
    stats: dict[str, Any] | None = None
    origin: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckResult(Record):
    """``check.json``: the health checks of ``flowvae check`` (:func:`flowvae.evaluation.check.check_model`).

    Attributes:
        ok: every check passed.
        warnings: names of the checks that passed with a warning (earlier releases: absent).
        checks: every check, in the order run.
    """

    FILE: ClassVar[str | None] = "check.json"

    ok: bool
    warnings: list[str] = dataclasses.field(default_factory=list)
    checks: list[CheckItem]


@dataclasses.dataclass(frozen=True, kw_only=True)
class DisentanglementResult(Record):
    """``disentanglement.json``: disentanglement metrics of the vector latent against dSprites'
    factors (``flowvae disentangle``, :func:`flowvae.evaluation.disentangle_codes`). Each metric's
    mapping is :mod:`flowvae.evaluation.disentanglement`'s; a metric not computed is left out (the
    metrics are written in this order, whatever order they were asked for).

    Attributes:
        dataset: the images' name.
        n: images encoded.
        d_z: latent dimensions.
        seed: seed of every metric.
        factor_names: the ground-truth factors, in the order of the metrics' per-factor lists.
        mig, dci, sap, factorvae, betavae: each metric's figures.
    """

    FILE: ClassVar[str | None] = "disentanglement.json"

    dataset: str
    n: int
    d_z: int
    seed: int
    factor_names: list[str]
    mig: dict[str, Any] | None = None
    dci: dict[str, Any] | None = None
    sap: dict[str, Any] | None = None
    factorvae: dict[str, Any] | None = None
    betavae: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class DirectionSet(Record):
    """``directions.json``: one direction of the vector latent per class of a labelled data set
    (``flowvae manipulate``, :func:`flowvae.evaluation.manipulation.label_directions`), with the
    images and labels they came from, so an edit can be traced to its data.

    Attributes:
        dataset: the labelled images' name.
        method: ``"mean-difference"`` (the class's mean posterior mean minus the other images', as
            Glow's attribute manipulation) or ``"classifier"`` (the normal of a linear classifier of
            the posterior means, as Diffusion Autoencoders', scaled to the mean difference's
            component along it).
        images: labelled images the directions were computed from (a seeded subset).
        seed: seed of the subset.
        latent_dim: dimension of the latent (each vector's length).
        classes: name of each class (``"3"``, ``"cat"``), in label order.
        labels: the label number of each class.
        counts: images of each class among ``images``.
        vectors: one direction per class ``[len(classes)][latent_dim]``, in the latent's units.
        norms: Euclidean length of each vector.
        classifier_accuracy: for ``"classifier"``, its accuracy on its own training codes.
    """

    FILE: ClassVar[str | None] = "directions.json"

    dataset: str
    method: str
    images: int
    seed: int
    latent_dim: int
    classes: list[str]
    labels: list[int]
    counts: list[int]
    vectors: list[list[float]]
    norms: list[float]
    classifier_accuracy: float | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClassCurve(Record):
    """Where edits along class directions take the class, as a pixel classifier sees it
    (``curve`` of ``manipulation.json``; :func:`flowvae.evaluation.manipulation.class_curves`):
    for test images not of the target class, edited towards it.

    Attributes:
        alphas: the edit strengths.
        to_target: fraction of edits classified as the target class, per strength.
        keeps_source: fraction still classified as the image's own class, per strength.
        saturated: fraction of edits whose inverse flow saturated, per strength (``None``: not a
            flow's inverse).
        v_keeps_class: for kinds with a local code, the share of edits whose re-encoded local code a
            classifier of local codes assigns the class it assigns the unedited image's, per strength.
        per_class: ``to_target`` per target class name.
        edits: edited images per strength (target classes times images per class).
        classifier: the pixel classifier (as the switch metric's: ``features``, ``pool``, ``C``,
            ``n_train``, ``dim``, ``protocol``) and ``test_accuracy`` on the real test images.
    """

    alphas: list[float]
    to_target: list[float]
    keeps_source: list[float]
    saturated: list[float] | None = nullable()
    v_keeps_class: list[float] | None = nullable()
    per_class: dict[str, list[float]]
    edits: int
    classifier: dict[str, Any]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ManipulationResult(Record):
    """``manipulation.json``: what ``flowvae manipulate`` did (issue 31): a grid of test images edited
    along one class direction of the vector latent, and optionally the class curves of every
    direction.

    Attributes:
        dataset: the test images' name.
        attribute: the class whose direction the grid follows.
        method: how the directions were found (:class:`DirectionSet`).
        alphas: the grid's columns (edit strengths).
        images: the grid's rows (test-image indices).
        keeps_local: whether edits keep each image's exact local code v (kinds with one).
        exact_at_zero: whether the strength-0 column reproduced the images exactly (kinds with exact
            codes; ``None`` for the others, whose column 0 is a reconstruction).
        direction_norm: length of the direction followed.
        file: the grid's PNG.
        curve: the class curves (:class:`ClassCurve`), when measured.
    """

    FILE: ClassVar[str | None] = "manipulation.json"

    dataset: str
    attribute: str
    method: str
    alphas: list[float]
    images: list[int]
    keeps_local: bool
    exact_at_zero: bool | None = nullable()
    direction_norm: float
    file: str
    curve: ClassCurve | None = None
