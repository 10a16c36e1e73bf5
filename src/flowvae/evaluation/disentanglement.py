"""Disentanglement metrics against ground-truth factors (MIG, DCI, SAP, FactorVAE, BetaVAE scores).

Ports of the logic of Google's ``disentanglement_lib`` (Locatello et al., 2019; Apache License 2.0,
https://github.com/google-research/disentanglement_lib), with its default settings from the
``unsupervised_study_v1`` metric configs:

==========================  ==============================================  ==========================
function                    disentanglement_lib file                        paper
==========================  ==============================================  ==========================
:func:`mig`                 ``evaluation/metrics/mig.py``                   Chen et al., 2018 (beta-TCVAE)
:func:`dci`                 ``evaluation/metrics/dci.py``                   Eastwood & Williams, 2018
:func:`sap_score`           ``evaluation/metrics/sap_score.py``             Kumar et al., 2018 (DIP-VAE)
:func:`factor_vae_score`    ``evaluation/metrics/factor_vae.py``            Kim & Mnih, 2018
:func:`beta_vae_score`      ``evaluation/metrics/beta_vae.py``              Higgins et al., 2017
helpers                     ``evaluation/metrics/utils.py``
==========================  ==============================================  ==========================

Two ways in:

* **Precomputed codes.** :func:`mig`, :func:`dci` and :func:`sap_score` take ``codes`` ``[N, d]``
  (float) and ``factors`` ``[N, K]`` (integer class indices), numpy arrays or torch tensors, one
  row per image. Each draws its rows without replacement from a seeded permutation (``num_train``
  rows, and the next ``num_test`` rows for a test set where the metric has one), replacing
  disentanglement_lib's independent draws of ``num_train``/``num_test`` fresh samples. Use
  :func:`sample_codes` to make such rows from a representation and a ground-truth dataset.
* **Interventions.** The FactorVAE and BetaVAE scores need batches in which one factor is held
  fixed. :func:`factor_vae_score` and :func:`beta_vae_score` take a ``representation(images) ->
  codes`` callable and a :class:`GroundTruthData` (``sample_factors(n, rng)`` and
  ``images_from_factors(factors)``; :class:`flowvae.data.dsprites.DSpritesData` of the dSprites
  grid with ``split="all"`` is one) and generate the images exactly as disentanglement_lib does.
  :func:`factor_vae_score_from_codes` and :func:`beta_vae_score_from_codes` work on a finite labelled
  set of codes instead: a batch "with factor k fixed at value v" is drawn (with replacement, like
  i.i.d. samples) from the rows whose factor k equals v, and v is the factor-k value of a random row.
  On a complete factor grid with one row per tuple this is the same distribution as the generative
  protocol; on other sets the other factors follow their empirical distribution given v.

Randomness: every function takes ``seed`` (an int, or a ``numpy.random.Generator`` used as is).
disentanglement_lib uses ``numpy.random.RandomState``; the sampling logic is the same but the
random streams differ, so numbers match in distribution, not bit for bit.

Known differences from disentanglement_lib, all deliberate and small:

* FactorVAE score: ``num_active_dims`` reports the number of active dimensions (disentanglement_lib
  returns ``len(mask)``, i.e. all of them), and a dimension with zero global variance is always
  pruned (it would make the variance ratio 0/0).
* scikit-learn defaults changed since disentanglement_lib was written: ``LogisticRegression()``
  (BetaVAE score) is now lbfgs/multinomial, and ``LinearSVC`` (SAP) now picks the primal solver for
  one feature; the models and losses are the ones disentanglement_lib asks for.
* Classifiers run with scikit-learn's default iteration caps, as in disentanglement_lib; their
  ``ConvergenceWarning`` (common on unscaled codes) is silenced, so a score may come from a
  classifier stopped at the cap, exactly as it would in disentanglement_lib.
* Errors: degenerate inputs that make a metric undefined (a constant factor, fewer than two code
  dimensions, mismatched rows) raise :class:`~flowvae.errors.DataError` (a ``ValueError``) instead of
  producing NaN or an assertion error.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import DataError

__all__ = [
    "GroundTruthData",
    "beta_vae_score",
    "beta_vae_score_from_codes",
    "dci",
    "dci_from_importance",
    "discrete_entropy",
    "discrete_mutual_info",
    "factor_vae_score",
    "factor_vae_score_from_codes",
    "histogram_discretize",
    "mig",
    "sample_codes",
    "sap_score",
]

Representation = Callable[[Any], Any]


@runtime_checkable
class GroundTruthData(Protocol):
    """What :func:`factor_vae_score`, :func:`beta_vae_score` and :func:`sample_codes` need of a dataset.

    ``sample_factors(n, rng)`` returns ``n`` factor tuples ``[n, K]`` (integer class indices) drawn
    from the data distribution with ``rng`` (a ``numpy.random.Generator``); ``images_from_factors``
    returns one observation per tuple, in whatever form ``representation`` accepts (for
    :class:`~flowvae.data.dsprites.DSpritesData`: ``torch.uint8 [n, 1, 64, 64]``, 0/255).
    """

    def sample_factors(self, n: int, rng: np.random.Generator) -> Any: ...

    def images_from_factors(self, factors: Any) -> Any: ...


# --------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_codes(codes: Any, name: str = "codes") -> np.ndarray:
    c = _to_numpy(codes)
    if c.ndim != 2 or c.shape[0] == 0 or c.shape[1] == 0:
        raise DataError(f"{name} must be a non-empty 2-D array [N, d], got shape {c.shape}")
    if not (np.issubdtype(c.dtype, np.number) or c.dtype == bool) or np.iscomplexobj(c):
        raise DataError(f"{name} must be real numbers, got dtype {c.dtype}")
    c = c.astype(np.float64)
    if not np.isfinite(c).all():
        raise DataError(f"{name} contain NaN or infinite values; check the representation")
    return c


def _check_factors(factors: Any, n: int, continuous: bool = False) -> np.ndarray:
    f = _to_numpy(factors)
    if f.ndim != 2 or f.shape[1] == 0:
        raise DataError(f"factors must be a 2-D array [N, K] (one column per factor), got shape {f.shape}")
    if f.shape[0] != n:
        raise DataError(f"codes have {n} rows but factors have {f.shape[0]}; pass one factor row per code row")
    if continuous:
        f = f.astype(np.float64)
        if not np.isfinite(f).all():
            raise DataError("factors contain NaN or infinite values")
        return f
    if np.issubdtype(f.dtype, np.integer):
        return f.astype(np.int64)
    if np.issubdtype(f.dtype, np.floating) and np.isfinite(f).all() and np.array_equal(f, np.round(f)):
        return f.astype(np.int64)
    raise DataError(
        f"factors must be integer class indices (got dtype {f.dtype} with non-integer values); "
        "pass the factor classes (e.g. DSpritesData.factors), not the continuous factor values"
    )


def _check_count(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DataError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _pick_rows(n: int, counts: list[tuple[str, int]], rng: np.random.Generator) -> list[np.ndarray]:
    """Disjoint row sets of the given sizes from one seeded permutation of ``range(n)``."""
    need = sum(c for _, c in counts)
    if need > n:
        wanted = " + ".join(f"{name}={c}" for name, c in counts)
        raise DataError(
            f"{wanted} needs {need} rows but only {n} codes were given; pass more codes or smaller "
            f"{'/'.join(name for name, _ in counts)}"
        )
    perm = rng.permutation(n)
    out, start = [], 0
    for _, c in counts:
        out.append(perm[start:start + c])
        start += c
    return out


def _check_factor_columns(ys: np.ndarray, rows: np.ndarray, what: str) -> None:
    for j in range(ys.shape[1]):
        if len(np.unique(ys[rows, j])) < 2:
            raise DataError(
                f"factor {j} takes a single value in the {what} rows, so the metric is undefined for it; "
                "drop constant factors or pass more codes"
            )


# --------------------------------------------------------------------------------------
# disentanglement_lib/evaluation/metrics/utils.py
# --------------------------------------------------------------------------------------


def histogram_discretize(codes: Any, num_bins: int = 20) -> np.ndarray:
    """Discretise each code dimension into ``num_bins`` equal-width bins over its own range.

    ``np.digitize(x, np.histogram(x, num_bins)[1][:-1])`` per dimension, as
    ``_histogram_discretize`` in ``disentanglement_lib/evaluation/metrics/utils.py``.

    Args:
        codes: ``[N, d]`` real array (numpy or torch).
        num_bins: number of bins (disentanglement_lib's default for MIG: 20).

    Returns:
        ``np.int64 [N, d]`` bin indices ``1..num_bins``.

    Raises:
        ValueError: if ``codes`` is not a finite non-empty 2-D array or ``num_bins < 1``.
    """
    c = _check_codes(codes)
    num_bins = _check_count(num_bins, "num_bins")
    out = np.zeros(c.shape, dtype=np.int64)
    for i in range(c.shape[1]):
        out[:, i] = np.digitize(c[:, i], np.histogram(c[:, i], num_bins)[1][:-1])
    return out


def discrete_mutual_info(discrete_codes: Any, factors: Any) -> np.ndarray:
    """Mutual information (nats) between every discrete code dimension and every factor.

    ``sklearn.metrics.mutual_info_score(factor_j, code_i)``, as ``discrete_mutual_info`` in
    ``disentanglement_lib/evaluation/metrics/utils.py``.

    Args:
        discrete_codes: integer ``[N, d]`` (e.g. from :func:`histogram_discretize`).
        factors: integer ``[N, K]``.

    Returns:
        ``np.float64 [d, K]``.

    Raises:
        ValueError: on shape mismatch or non-integer factors.
    """
    from sklearn.metrics import mutual_info_score

    mus = _check_factors(discrete_codes, len(_to_numpy(discrete_codes)))
    ys = _check_factors(factors, mus.shape[0])
    m = np.zeros((mus.shape[1], ys.shape[1]))
    for i in range(mus.shape[1]):
        for j in range(ys.shape[1]):
            m[i, j] = mutual_info_score(ys[:, j], mus[:, i])
    return m


def discrete_entropy(factors: Any) -> np.ndarray:
    """Entropy (nats) of each discrete factor, ``mutual_info_score(y, y)`` as in disentanglement_lib.

    Args:
        factors: integer ``[N, K]``.

    Returns:
        ``np.float64 [K]``.

    Raises:
        ValueError: if ``factors`` is not an integer 2-D array.
    """
    from sklearn.metrics import mutual_info_score

    ys = _check_factors(factors, len(_to_numpy(factors)))
    return np.array([mutual_info_score(ys[:, j], ys[:, j]) for j in range(ys.shape[1])])


def _representations(representation: Representation, observations: Any, expect: int) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = representation(observations)
    codes = _to_numpy(out)
    if codes.ndim != 2 or codes.shape[0] != expect:
        raise DataError(
            f"representation must return codes of shape [batch, d] = [{expect}, d] for a batch of "
            f"{expect} images, got shape {codes.shape}; flatten or select the code inside the callable"
        )
    codes = codes.astype(np.float64)
    if not np.isfinite(codes).all():
        raise DataError("representation returned NaN or infinite codes")
    return codes


def _num_factors(data: GroundTruthData) -> int:
    # A throw-away generator, so the metric's own random stream is the one disentanglement_lib draws.
    probe = _sample_factors(data, 1, np.random.default_rng(0))
    return probe.shape[1]


def _sample_factors(data: GroundTruthData, n: int, rng: np.random.Generator) -> np.ndarray:
    f = _to_numpy(data.sample_factors(n, rng))
    if f.ndim != 2 or f.shape[0] != n or f.shape[1] == 0:
        raise DataError(f"dataset.sample_factors({n}, rng) must return an array [{n}, K], got shape {f.shape}")
    return np.array(f, dtype=np.int64, copy=True)


def sample_codes(representation: Representation, dataset: GroundTruthData, num_points: int,
                 seed: int | np.random.Generator = 0, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Codes and factors of ``num_points`` random samples of a ground-truth dataset.

    As ``generate_batch_factor_code`` in ``disentanglement_lib/evaluation/metrics/utils.py`` (which
    feeds MIG, DCI and SAP): factors are drawn with ``dataset.sample_factors`` in batches of
    ``batch_size``, rendered with ``dataset.images_from_factors`` and encoded by ``representation``.

    Args:
        representation: ``images -> codes [batch, d]`` (numpy or torch; called under
            ``torch.no_grad()``).
        dataset: a :class:`GroundTruthData`.
        num_points: number of samples (disentanglement_lib: 10,000 for MIG; 10,000 train + 5,000
            test for DCI and SAP).
        seed: int seed or ``numpy.random.Generator``.
        batch_size: images per call of ``representation`` (disentanglement_lib: 16).

    Returns:
        ``(codes, factors)``: ``np.float64 [num_points, d]`` and ``np.int64 [num_points, K]``, ready
        for :func:`mig`, :func:`dci` and :func:`sap_score`.

    Raises:
        ValueError: bad counts, or a representation/dataset returning arrays of the wrong shape.
    """
    num_points = _check_count(num_points, "num_points")
    batch_size = _check_count(batch_size, "batch_size")
    rng = np.random.default_rng(seed)
    codes, factors = [], []
    done = 0
    while done < num_points:
        m = min(batch_size, num_points - done)
        f = _sample_factors(dataset, m, rng)
        codes.append(_representations(representation, dataset.images_from_factors(f), m))
        factors.append(f)
        done += m
    return np.concatenate(codes), np.concatenate(factors)


# --------------------------------------------------------------------------------------
# MIG: disentanglement_lib/evaluation/metrics/mig.py
# --------------------------------------------------------------------------------------


def mig(codes: Any, factors: Any, num_train: int | None = 10000, num_bins: int = 20,
        seed: int | np.random.Generator = 0) -> dict[str, Any]:
    """Mutual Information Gap (Chen et al., 2018, "Isolating Sources of Disentanglement in VAEs").

    Port of ``_compute_mig`` in ``disentanglement_lib/evaluation/metrics/mig.py``: each code
    dimension is discretised into ``num_bins`` equal-width histogram bins
    (:func:`histogram_discretize`); ``I[i, j] = mutual_info_score(factor_j, code_i)``; for each
    factor the gap between the largest and second-largest ``I[:, j]`` is divided by the factor's
    entropy ``H_j``; MIG is the mean over factors. 1 when every factor is captured by exactly one
    dimension that no other factor uses; 0 for codes independent of the factors (plus a small
    positive bias of the histogram MI estimate).

    MIG has no test set: ``num_train`` rows are drawn without replacement from ``codes`` (seeded).

    Args:
        codes: ``[N, d]`` real, ``d >= 2`` (numpy or torch).
        factors: ``[N, K]`` integer class indices.
        num_train: rows used (disentanglement_lib: 10,000); ``None`` uses all ``N`` rows.
        num_bins: histogram bins per code dimension (disentanglement_lib: 20).
        seed: int seed or ``numpy.random.Generator`` for the row draw.

    Returns:
        ``{"discrete_mig": float, "mig_per_factor": float64 [K], "mutual_info": float64 [d, K]
        (nats), "factor_entropy": float64 [K] (nats), "num_points": int}``.

    Raises:
        ValueError: shape mismatch, non-integer factors, ``d < 2``, fewer than ``num_train`` rows,
            or a factor that is constant over the rows used (entropy 0: MIG undefined).
    """
    c = _check_codes(codes)
    ys = _check_factors(factors, c.shape[0])
    if c.shape[1] < 2:
        raise DataError(f"MIG needs at least 2 code dimensions (it is a gap between the top two), got {c.shape[1]}")
    rng = np.random.default_rng(seed)
    if num_train is None:
        rows = np.arange(c.shape[0])
    else:
        (rows,) = _pick_rows(c.shape[0], [("num_train", _check_count(num_train, "num_train"))], rng)
    _check_factor_columns(ys, rows, "selected")
    discretized = histogram_discretize(c[rows], num_bins)
    m = discrete_mutual_info(discretized, ys[rows])
    entropy = discrete_entropy(ys[rows])
    sorted_m = np.sort(m, axis=0)[::-1]
    per_factor = (sorted_m[0, :] - sorted_m[1, :]) / entropy
    return {
        "discrete_mig": float(np.mean(per_factor)),
        "mig_per_factor": per_factor,
        "mutual_info": m,
        "factor_entropy": entropy,
        "num_points": int(len(rows)),
    }


# --------------------------------------------------------------------------------------
# DCI: disentanglement_lib/evaluation/metrics/dci.py
# --------------------------------------------------------------------------------------


def _entropy_base(p: np.ndarray, base: int) -> np.ndarray:
    """``scipy.stats.entropy(p, base=base)`` along axis 0 (columns normalised to sum 1)."""
    from scipy.stats import entropy

    return entropy(p, base=base)


def dci_from_importance(importance_matrix: Any) -> dict[str, float]:
    """Disentanglement and completeness from an importance matrix ``R [d, K]`` (codes x factors).

    As ``disentanglement`` and ``completeness`` in ``disentanglement_lib/evaluation/metrics/dci.py``:
    disentanglement of code ``i`` is ``1 - H_K(R[i, :] / sum R[i, :])`` (entropy base ``K`` of the
    row, with ``1e-11`` added to every entry), weighted by ``sum R[i, :] / sum R``; completeness of
    factor ``j`` is ``1 - H_d(R[:, j] / sum R[:, j])``, weighted by ``sum R[:, j] / sum R``. An
    all-zero matrix gets uniform weights.

    Args:
        importance_matrix: non-negative ``[d, K]`` with ``d >= 2`` and ``K >= 2``.

    Returns:
        ``{"disentanglement": float, "completeness": float}``.

    Raises:
        ValueError: wrong shape, negative entries, or ``d < 2`` / ``K < 2`` (base-1 entropy).
    """
    r = _check_codes(importance_matrix, "importance_matrix")
    if r.shape[0] < 2 or r.shape[1] < 2:
        raise DataError(f"DCI needs at least 2 code dimensions and 2 factors, got importance matrix {r.shape}")
    if (r < 0).any():
        raise DataError("importance_matrix must be non-negative")
    per_code = 1.0 - _entropy_base(r.T + 1e-11, base=r.shape[1])
    per_factor = 1.0 - _entropy_base(r + 1e-11, base=r.shape[0])
    weights = np.ones_like(r) if r.sum() == 0.0 else r
    code_importance = weights.sum(axis=1) / weights.sum()
    factor_importance = weights.sum(axis=0) / weights.sum()
    return {
        "disentanglement": float(np.sum(per_code * code_importance)),
        "completeness": float(np.sum(per_factor * factor_importance)),
    }


def dci(codes: Any, factors: Any, num_train: int = 10000, num_test: int = 5000,
        seed: int | np.random.Generator = 0, gbt_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """DCI disentanglement, completeness and informativeness (Eastwood & Williams, 2018, "A Framework
    for the Quantitative Evaluation of Disentangled Representations").

    Port of ``_compute_dci``/``compute_importance_gbt`` in
    ``disentanglement_lib/evaluation/metrics/dci.py``: for each factor a
    ``sklearn.ensemble.GradientBoostingClassifier()`` (default settings: 100 trees of depth 3) is
    fitted on the training codes; ``|feature_importances_|`` forms column ``j`` of the importance
    matrix ``R [d, K]``; disentanglement and completeness follow from ``R``
    (:func:`dci_from_importance`); informativeness is the classifiers' mean accuracy (higher is better).

    Args:
        codes: ``[N, d]`` real, ``d >= 2`` (numpy or torch).
        factors: ``[N, K]`` integer class indices, ``K >= 2``.
        num_train: training rows (disentanglement_lib: 10,000).
        num_test: test rows, disjoint from the training rows (disentanglement_lib: 5,000).
        seed: int seed or ``numpy.random.Generator`` for the row draw; the int also seeds the
            classifiers (``random_state``; disentanglement_lib leaves it unset).
        gbt_kwargs: extra ``GradientBoostingClassifier`` arguments (e.g. ``{"n_estimators": 20}`` for
            a quick look); ``None`` keeps disentanglement_lib's defaults.

    Returns:
        ``{"disentanglement": float, "completeness": float, "informativeness_train": float,
        "informativeness_test": float, "importance_matrix": float64 [d, K]}`` (the first four are
        disentanglement_lib's keys).

    Raises:
        ValueError: shape mismatch, non-integer factors, ``d < 2`` or ``K < 2``, fewer than
            ``num_train + num_test`` rows, or a factor constant over the training rows.
    """
    from sklearn.ensemble import GradientBoostingClassifier

    c = _check_codes(codes)
    ys = _check_factors(factors, c.shape[0])
    if c.shape[1] < 2 or ys.shape[1] < 2:
        raise DataError(f"DCI needs at least 2 code dimensions and 2 factors, got d={c.shape[1]}, K={ys.shape[1]}")
    rng = np.random.default_rng(seed)
    train, test = _pick_rows(c.shape[0], [("num_train", _check_count(num_train, "num_train")),
                                          ("num_test", _check_count(num_test, "num_test"))], rng)
    _check_factor_columns(ys, train, "training")
    kwargs: dict[str, Any] = {"random_state": seed if isinstance(seed, (int, np.integer)) else int(rng.integers(2**31))}
    kwargs.update(gbt_kwargs or {})
    importance = np.zeros((c.shape[1], ys.shape[1]), dtype=np.float64)
    train_acc, test_acc = [], []
    for j in range(ys.shape[1]):
        model = GradientBoostingClassifier(**kwargs)
        model.fit(c[train], ys[train, j])
        importance[:, j] = np.abs(model.feature_importances_)
        train_acc.append(np.mean(model.predict(c[train]) == ys[train, j]))
        test_acc.append(np.mean(model.predict(c[test]) == ys[test, j]))
    scores: dict[str, Any] = {
        "informativeness_train": float(np.mean(train_acc)),
        "informativeness_test": float(np.mean(test_acc)),
    }
    scores.update(dci_from_importance(importance))
    scores["importance_matrix"] = importance
    return scores


# --------------------------------------------------------------------------------------
# SAP: disentanglement_lib/evaluation/metrics/sap_score.py
# --------------------------------------------------------------------------------------


def sap_score(codes: Any, factors: Any, num_train: int = 10000, num_test: int = 5000,
              continuous_factors: bool = False, seed: int | np.random.Generator = 0) -> dict[str, Any]:
    """Separated Attribute Predictability (Kumar et al., 2018, "Variational Inference of
    Disentangled Latent Concepts from Unlabeled Observations", DIP-VAE).

    Port of ``compute_score_matrix``/``compute_avg_diff_top_two`` in
    ``disentanglement_lib/evaluation/metrics/sap_score.py``: a score ``S[i, j]`` for every
    (code dimension, factor) pair; SAP is the mean over factors of the gap between the two largest
    ``S[:, j]``.

    * discrete factors (default, as in disentanglement_lib's config): ``S[i, j]`` is the test
      accuracy of ``sklearn.svm.LinearSVC(C=0.01, class_weight="balanced")`` trained to predict
      factor ``j`` from code dimension ``i`` alone;
    * ``continuous_factors=True``: ``S[i, j] = cov(code_i, y_j)^2 / (var(code_i) var(y_j))`` (the
      R^2 of a linear fit, on the training rows only, as in disentanglement_lib; 0 when
      ``var(code_i) <= 1e-12``); ``factors`` may then be real-valued (e.g. factor values).

    Args:
        codes: ``[N, d]`` real, ``d >= 2`` (numpy or torch).
        factors: ``[N, K]`` integer class indices (any real values with ``continuous_factors``).
        num_train: training rows (disentanglement_lib: 10,000).
        num_test: test rows, disjoint from the training rows (disentanglement_lib: 5,000; drawn but
            unused when ``continuous_factors``).
        continuous_factors: see above (disentanglement_lib default: False).
        seed: int seed or ``numpy.random.Generator`` for the row draw.

    Returns:
        ``{"SAP_score": float, "score_matrix": float64 [d, K]}``.

    Raises:
        ValueError: shape mismatch, ``d < 2``, fewer than ``num_train + num_test`` rows, or a factor
            constant over the training rows.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    c = _check_codes(codes)
    ys = _check_factors(factors, c.shape[0], continuous=continuous_factors)
    if c.shape[1] < 2:
        raise DataError(f"SAP needs at least 2 code dimensions (it is a gap between the top two), got {c.shape[1]}")
    rng = np.random.default_rng(seed)
    train, test = _pick_rows(c.shape[0], [("num_train", _check_count(num_train, "num_train")),
                                          ("num_test", _check_count(num_test, "num_test"))], rng)
    _check_factor_columns(ys, train, "training")
    score = np.zeros((c.shape[1], ys.shape[1]))
    for i in range(c.shape[1]):
        for j in range(ys.shape[1]):
            mu_i, y_j = c[train, i], ys[train, j]
            if continuous_factors:
                cov = np.cov(mu_i, y_j, ddof=1)
                var_mu, var_y = cov[0, 0], cov[1, 1]
                score[i, j] = cov[0, 1] ** 2 / (var_mu * var_y) if var_mu > 1e-12 else 0.0
            else:
                classifier = LinearSVC(C=0.01, class_weight="balanced")
                with warnings.catch_warnings():
                    # disentanglement_lib runs liblinear with its default iteration cap as well.
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    classifier.fit(mu_i[:, None], y_j)
                pred = classifier.predict(c[test, i][:, None])
                score[i, j] = np.mean(pred == ys[test, j])
    ranked = np.sort(score, axis=0)
    return {"SAP_score": float(np.mean(ranked[-1, :] - ranked[-2, :])), "score_matrix": score}


# --------------------------------------------------------------------------------------
# FactorVAE score: disentanglement_lib/evaluation/metrics/factor_vae.py
# --------------------------------------------------------------------------------------


def _majority_vote_scores(train_votes: np.ndarray, eval_votes: np.ndarray, num_codes: int,
                          active: np.ndarray) -> dict[str, Any]:
    classifier = np.argmax(train_votes, axis=0)
    other = np.arange(train_votes.shape[1])
    return {
        "train_accuracy": float(np.sum(train_votes[classifier, other]) / np.sum(train_votes)),
        "eval_accuracy": float(np.sum(eval_votes[classifier, other]) / np.sum(eval_votes)),
        "num_active_dims": int(active.sum()),
        "num_dims": int(num_codes),
    }


def _active_dims(global_variances: np.ndarray, prune_threshold: float) -> np.ndarray:
    # _prune_dims: sqrt(var) >= threshold; zero-variance dims are always dropped (0/0 below).
    return (np.sqrt(global_variances) >= prune_threshold) & (global_variances > 0)


def _no_active_dims(num_codes: int) -> dict[str, Any]:
    return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0, "num_dims": int(num_codes)}


def _check_factor_vae_args(batch_size: int, num_train: int, num_eval: int, num_variance_estimate: int,
                           prune_threshold: float) -> tuple[int, int, int, int, float]:
    out = (_check_count(batch_size, "batch_size", 2), _check_count(num_train, "num_train"),
           _check_count(num_eval, "num_eval"), _check_count(num_variance_estimate, "num_variance_estimate", 2))
    if not isinstance(prune_threshold, (int, float)) or not math.isfinite(prune_threshold) or prune_threshold < 0:
        raise DataError(f"prune_threshold must be a finite number >= 0, got {prune_threshold!r}")
    return (*out, float(prune_threshold))


def factor_vae_score(representation: Representation, dataset: GroundTruthData, *,
                     seed: int | np.random.Generator = 0, batch_size: int = 64, num_train: int = 10000,
                     num_eval: int = 5000, num_variance_estimate: int = 10000, prune_threshold: float = 0.05,
                     eval_batch_size: int = 64) -> dict[str, Any]:
    """FactorVAE score (Kim & Mnih, 2018, "Disentangling by Factorising"), generative protocol.

    Port of ``compute_factor_vae`` in ``disentanglement_lib/evaluation/metrics/factor_vae.py``:

    1. encode ``num_variance_estimate`` random images (in batches of ``eval_batch_size``) and take
       each code dimension's variance (``ddof=1``); dimensions with ``std < prune_threshold`` are
       inactive (collapsed to the prior) and ignored;
    2. a vote: pick a factor ``k`` uniformly, sample ``batch_size`` factor tuples, set factor ``k`` of
       all of them to the first tuple's value, encode their images, and find the active dimension
       with the smallest ``var(batch) / global var``; vote ``(k, that dimension)``;
    3. ``num_train`` votes train a majority-vote classifier (each dimension predicts the factor it
       got most votes for); accuracy on them is ``train_accuracy``, on ``num_eval`` fresh votes
       ``eval_accuracy`` (the FactorVAE score). 1.0 for a code in which each factor has its own
       dimension; about ``1/K`` for a code unrelated to the factors.

    Args:
        representation: ``images -> codes [batch, d]`` (numpy or torch; called under ``torch.no_grad``).
        dataset: a :class:`GroundTruthData`, e.g. ``load_dsprites(split="all")`` (grid variant).
        seed: int seed or ``numpy.random.Generator``.
        batch_size: images per vote (disentanglement_lib: 64).
        num_train: training votes (disentanglement_lib: 10,000).
        num_eval: evaluation votes (disentanglement_lib: 5,000).
        num_variance_estimate: images for the global variances (disentanglement_lib: 10,000).
        prune_threshold: minimum global std of an active dimension (disentanglement_lib config: 0.05).
        eval_batch_size: images per representation call in step 1 (disentanglement_lib: 64).

    Returns:
        ``{"train_accuracy": float, "eval_accuracy": float, "num_active_dims": int, "num_dims": int}``
        (all zeros but ``num_dims`` when no dimension is active, as in disentanglement_lib).

    Raises:
        ValueError: bad counts or threshold, or a representation/dataset returning arrays of the
            wrong shape.
    """
    batch_size, num_train, num_eval, num_variance_estimate, prune_threshold = _check_factor_vae_args(
        batch_size, num_train, num_eval, num_variance_estimate, prune_threshold)
    eval_batch_size = _check_count(eval_batch_size, "eval_batch_size")
    rng = np.random.default_rng(seed)
    num_factors = _num_factors(dataset)

    # _compute_variances: sample observations, encode in batches, variance over the sample.
    factors = _sample_factors(dataset, num_variance_estimate, rng)
    codes = np.concatenate([
        _representations(representation, dataset.images_from_factors(factors[i:i + eval_batch_size]),
                         len(factors[i:i + eval_batch_size]))
        for i in range(0, num_variance_estimate, eval_batch_size)
    ])
    global_variances = np.var(codes, axis=0, ddof=1)
    active = _active_dims(global_variances, prune_threshold)
    if not active.any():
        return _no_active_dims(codes.shape[1])

    def votes(num_points: int) -> np.ndarray:
        out = np.zeros((num_factors, codes.shape[1]), dtype=np.int64)
        for _ in range(num_points):
            k = int(rng.integers(num_factors))
            f = _sample_factors(dataset, batch_size, rng)
            f[:, k] = f[0, k]
            reps = _representations(representation, dataset.images_from_factors(f), batch_size)
            local = np.var(reps, axis=0, ddof=1)
            out[k, np.argmin(local[active] / global_variances[active])] += 1
        return out

    train_votes = votes(num_train)
    eval_votes = votes(num_eval)
    return _majority_vote_scores(train_votes, eval_votes, codes.shape[1], active)


class _Groups:
    """For each factor, the rows grouped by that factor's value (for fixed-factor sampling)."""

    def __init__(self, ys: np.ndarray) -> None:
        self.order, self.group_of, self.starts, self.counts = [], [], [], []
        for j in range(ys.shape[1]):
            order = np.argsort(ys[:, j], kind="stable")
            _, inverse, counts = np.unique(ys[:, j], return_inverse=True, return_counts=True)
            self.order.append(order)
            self.group_of.append(inverse.reshape(-1))
            self.starts.append(np.concatenate([[0], np.cumsum(counts)[:-1]]))
            self.counts.append(counts)

    def draw(self, k: int, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """For each row, a uniformly random row sharing its factor-``k`` value (with replacement)."""
        g = self.group_of[k][rows]
        offsets = (rng.random(len(rows)) * self.counts[k][g]).astype(np.int64)
        return self.order[k][self.starts[k][g] + offsets]


def factor_vae_score_from_codes(codes: Any, factors: Any, *, seed: int | np.random.Generator = 0,
                                batch_size: int = 64, num_train: int = 10000, num_eval: int = 5000,
                                num_variance_estimate: int = 10000, prune_threshold: float = 0.05) -> dict[str, Any]:
    """FactorVAE score (Kim & Mnih, 2018) on a finite labelled set of codes.

    The logic of :func:`factor_vae_score` (``disentanglement_lib/evaluation/metrics/factor_vae.py``),
    with the fixed-factor batches drawn from the given rows: for a vote, pick a factor ``k``
    uniformly and a random row; its factor-``k`` value ``v`` is held fixed, and ``batch_size`` rows
    are drawn with replacement from the rows whose factor ``k`` equals ``v``. Global variances use
    ``num_variance_estimate`` rows drawn without replacement (all rows when there are fewer).
    Use a complete factor grid (e.g. codes of every dSprites grid image) to match the generative
    protocol; groups should hold well over ``batch_size`` rows.

    Args:
        codes: ``[N, d]`` real (numpy or torch).
        factors: ``[N, K]`` integer class indices.
        seed, batch_size, num_train, num_eval, num_variance_estimate, prune_threshold: as in
            :func:`factor_vae_score` (same defaults: 0, 64, 10,000, 5,000, 10,000, 0.05).

    Returns:
        ``{"train_accuracy": float, "eval_accuracy": float, "num_active_dims": int, "num_dims": int}``.

    Raises:
        ValueError: shape mismatch, non-integer factors, bad counts or threshold.
    """
    c = _check_codes(codes)
    ys = _check_factors(factors, c.shape[0])
    batch_size, num_train, num_eval, num_variance_estimate, prune_threshold = _check_factor_vae_args(
        batch_size, num_train, num_eval, num_variance_estimate, prune_threshold)
    if c.shape[0] < 2:
        raise DataError("the FactorVAE score needs at least 2 codes")
    rng = np.random.default_rng(seed)
    n, num_factors = ys.shape
    sample = rng.permutation(n)[:num_variance_estimate]
    global_variances = np.var(c[sample], axis=0, ddof=1)
    active = _active_dims(global_variances, prune_threshold)
    if not active.any():
        return _no_active_dims(c.shape[1])
    groups = _Groups(ys)
    ratio_scale = global_variances[active]

    def votes(num_points: int) -> np.ndarray:
        out = np.zeros((num_factors, c.shape[1]), dtype=np.int64)
        for _ in range(num_points):
            k = int(rng.integers(num_factors))
            anchor = rng.integers(n, size=1)
            rows = groups.draw(k, np.repeat(anchor, batch_size), rng)
            local = np.var(c[rows][:, active], axis=0, ddof=1)
            out[k, np.argmin(local / ratio_scale)] += 1
        return out

    train_votes = votes(num_train)
    eval_votes = votes(num_eval)
    return _majority_vote_scores(train_votes, eval_votes, c.shape[1], active)


# --------------------------------------------------------------------------------------
# BetaVAE score: disentanglement_lib/evaluation/metrics/beta_vae.py
# --------------------------------------------------------------------------------------


def _fit_beta_vae_classifier(train_x: np.ndarray, train_y: np.ndarray, eval_x: np.ndarray, eval_y: np.ndarray,
                             seed: Any) -> dict[str, float]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(train_y)) < 2:
        raise DataError("all training points fixed the same factor; increase num_train")
    random_state = int(seed) if isinstance(seed, (int, np.integer)) else int(seed.integers(2**31))
    model = LogisticRegression(random_state=random_state)
    with warnings.catch_warnings():
        # disentanglement_lib fits with the default iteration cap too (see the module docstring).
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(train_x, train_y)
    return {
        "train_accuracy": float(np.mean(model.predict(train_x) == train_y)),
        "eval_accuracy": float(model.score(eval_x, eval_y)),
    }


def beta_vae_score(representation: Representation, dataset: GroundTruthData, *,
                   seed: int | np.random.Generator = 0, batch_size: int = 64, num_train: int = 10000,
                   num_eval: int = 5000) -> dict[str, float]:
    """BetaVAE score (Higgins et al., 2017, "beta-VAE: Learning Basic Visual Concepts with a
    Constrained Variational Framework"), generative protocol.

    Port of ``compute_beta_vae_sklearn`` in ``disentanglement_lib/evaluation/metrics/beta_vae.py``:
    a training point picks a factor ``k`` uniformly, samples two batches of ``batch_size`` factor
    tuples, copies factor ``k`` of the first batch into the second, encodes both batches' images and
    takes ``mean(|codes_1 - codes_2|, axis=0)`` as the feature vector with label ``k``. A
    ``sklearn.linear_model.LogisticRegression(random_state=seed)`` (default settings) is fitted on
    ``num_train`` points; its accuracy on ``num_eval`` fresh points is the score (``eval_accuracy``).
    About 1.0 when each factor has its own dimension; about ``1/K`` for unrelated codes.

    Args:
        representation: ``images -> codes [batch, d]`` (numpy or torch; called under ``torch.no_grad``).
        dataset: a :class:`GroundTruthData`, e.g. ``load_dsprites(split="all")`` (grid variant).
        seed: int seed or ``numpy.random.Generator`` (an int also seeds the classifier).
        batch_size: pairs per point (disentanglement_lib: 64).
        num_train: training points (disentanglement_lib: 10,000).
        num_eval: evaluation points (disentanglement_lib: 5,000).

    Returns:
        ``{"train_accuracy": float, "eval_accuracy": float}``.

    Raises:
        ValueError: bad counts, a representation/dataset returning arrays of the wrong shape, or a
            training set in which only one factor was ever fixed.
    """
    batch_size = _check_count(batch_size, "batch_size")
    num_train = _check_count(num_train, "num_train")
    num_eval = _check_count(num_eval, "num_eval")
    rng = np.random.default_rng(seed)
    num_factors = _num_factors(dataset)

    def points(num_points: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.zeros(num_points, dtype=np.int64)
        features: list[np.ndarray] = []
        for p in range(num_points):
            k = int(rng.integers(num_factors))
            f1 = _sample_factors(dataset, batch_size, rng)
            f2 = _sample_factors(dataset, batch_size, rng)
            f2[:, k] = f1[:, k]
            r1 = _representations(representation, dataset.images_from_factors(f1), batch_size)
            r2 = _representations(representation, dataset.images_from_factors(f2), batch_size)
            labels[p] = k
            features.append(np.mean(np.abs(r1 - r2), axis=0))
        return np.stack(features), labels

    train_x, train_y = points(num_train)
    eval_x, eval_y = points(num_eval)
    return _fit_beta_vae_classifier(train_x, train_y, eval_x, eval_y, seed)


def beta_vae_score_from_codes(codes: Any, factors: Any, *, seed: int | np.random.Generator = 0,
                              batch_size: int = 64, num_train: int = 10000, num_eval: int = 5000) -> dict[str, float]:
    """BetaVAE score (Higgins et al., 2017) on a finite labelled set of codes.

    The logic of :func:`beta_vae_score` (``disentanglement_lib/evaluation/metrics/beta_vae.py``) with
    pairs drawn from the given rows: for a point, pick a factor ``k`` uniformly, draw ``batch_size``
    rows uniformly with replacement, and pair each with a uniformly random row (with replacement)
    that has the same factor-``k`` value. Feature = ``mean |code_a - code_b|`` over the pairs.

    Args:
        codes: ``[N, d]`` real (numpy or torch).
        factors: ``[N, K]`` integer class indices.
        seed, batch_size, num_train, num_eval: as in :func:`beta_vae_score` (same defaults: 0, 64,
            10,000, 5,000).

    Returns:
        ``{"train_accuracy": float, "eval_accuracy": float}``.

    Raises:
        ValueError: shape mismatch, non-integer factors, bad counts, or a training set in which only
            one factor was ever fixed.
    """
    c = _check_codes(codes)
    ys = _check_factors(factors, c.shape[0])
    batch_size = _check_count(batch_size, "batch_size")
    num_train = _check_count(num_train, "num_train")
    num_eval = _check_count(num_eval, "num_eval")
    rng = np.random.default_rng(seed)
    n, num_factors = ys.shape
    groups = _Groups(ys)

    def points(num_points: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(num_factors, size=num_points)
        features = np.zeros((num_points, c.shape[1]))
        for p in range(num_points):
            first = rng.integers(n, size=batch_size)
            second = groups.draw(int(labels[p]), first, rng)
            features[p] = np.mean(np.abs(c[first] - c[second]), axis=0)
        return features, labels.astype(np.int64)

    train_x, train_y = points(num_train)
    eval_x, eval_y = points(num_eval)
    return _fit_beta_vae_classifier(train_x, train_y, eval_x, eval_y, seed)
