"""Linear probes: how linearly decodable the class is from a representation (paper §3.2, Table 4).

Protocol (ours, stated so figures can be compared):

* features are standardised (zero mean, unit variance per dimension, statistics from the
  training features only), because z and v have very different scales;
* a linear SVM (scikit-learn ``LinearSVC``, squared hinge loss, one-vs-rest) is trained on
  training-set features; ``C`` is chosen by 3-fold stratified cross-validation on the training
  features from ``(0.001, 0.003, 0.01, 0.03)`` unless given (on standardised features of a few
  hundred dimensions larger C overfits and makes liblinear take minutes to converge);
* accuracy is measured once on the test set, which is never used for any choice.

The cross-validation is ``GridSearchCV``'s, run here fit by fit (:func:`_cross_validate`: the same
folds, scores and choice of C) so that the fits can be counted in progress lines
(:func:`flowvae.progress.ticker`) and, for large features, run in parallel processes: 13 fits of
``LinearSVC`` on 5,000 MNIST images of 784 pixels took 177 s one after the other and 118 s in two
processes on the project's 2-core CPU, with the same C and accuracies.

The authors used ``sklearn.svm.SVC(kernel="linear")`` with the default ``C = 1`` and no
scaling (a one-vs-one linear SVM); that protocol is available with ``protocol="authors"``
(much slower: kernel SVMs scale quadratically in the number of training images).

``protocol="logistic"`` (for :func:`fit_linear` callers that classify images, not the probe): the same
standardisation and C search with multinomial logistic regression (``LogisticRegression``, L-BFGS)
in place of the SVM. On thousands of pixel features liblinear's SVM needs minutes to converge
(830 s for one fit on 5,000 dSprites images of 4,096 pixels, one thread of the project's 2-core
CPU), L-BFGS seconds, with the same test accuracy within a few points
(``benchmarks/switch_classifier.py``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError

__all__ = ["fit_linear", "linear_probe"]

DEFAULT_CS = (0.001, 0.003, 0.01, 0.03)


def fit_linear(train_x, train_y, C: float | None = None, Cs=DEFAULT_CS, protocol: str = "standard", seed: int = 0,
               max_iter: int = 2000, desc: str = "linear probe", n_jobs: int | None = None) -> tuple[Any, dict]:
    """The linear SVM of :func:`linear_probe`, trained on ``train_x`` features, for callers that
    classify features of their own (e.g. decoded images, :func:`flowvae.evaluation.switching.switch_metric`).

    Args:
        train_x: features ``[N, F]`` (numpy or torch; cast to float64).
        train_y: integer labels ``[N]``.
        C, Cs, seed, max_iter: as for :func:`linear_probe`.
        protocol: as for :func:`linear_probe`, or ``"logistic"`` (module docstring).
        desc: what the progress lines call the job (:func:`flowvae.progress.ticker`).
        n_jobs: processes for the cross-validation fits; ``None``: one per CPU this process may
            use when the features are large (:data:`PARALLEL_MIN_VALUES`), else 1. The result does
            not depend on it.

    Returns:
        ``(classifier, info)``: a fitted scikit-learn estimator whose ``predict`` takes float64
        ``[M, F]`` features (scaling included); ``info`` is ``{"C", "cv_accuracy" (None when C was
        fixed), "n_train", "dim", "protocol"}``.

    Raises:
        DataError, ConfigError, ValueError: as for :func:`linear_probe`, for the training features.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, LinearSVC

    from ..progress import ticker

    tx, ty = _features("train_x", train_x), _labels(train_y)
    if len(tx) != len(ty):
        raise DataError(f"features and labels must have the same length, got {len(tx)} / {len(ty)} (train)")
    if not np.isfinite(tx).all():
        raise DataError("features contain NaN or infinite values; check the representation")
    if len(np.unique(ty)) < 2:
        raise DataError("a probe needs at least two classes in the training labels")
    if C is not None and (isinstance(C, bool) or not isinstance(C, (int, float)) or not np.isfinite(C) or C <= 0):
        raise ConfigError(f"C must be a finite number > 0, got {C!r}")
    cv_acc = None
    clf: Any
    if protocol == "authors":
        with ticker(1, desc) as t:
            clf = SVC(kernel="linear", C=1.0 if C is None else C).fit(tx, ty)
            t.update()
        chosen = clf.C
    elif protocol in ("standard", "logistic"):
        c0 = 1.0 if C is None else C
        est = (LinearSVC(C=c0, max_iter=max_iter, dual="auto", random_state=seed) if protocol == "standard"
               else LogisticRegression(C=c0, max_iter=max_iter, random_state=seed))
        pipe = make_pipeline(StandardScaler(), est)
        if C is None:
            chosen, cv_acc = _cross_validate(pipe, f"{pipe.steps[-1][0]}__C", list(Cs), tx, ty, seed, desc, n_jobs)
            with ticker(1, f"{desc}: refit at C={chosen:g}") as t:
                clf = pipe.set_params(**{f"{pipe.steps[-1][0]}__C": chosen}).fit(tx, ty)
                t.update()
        else:
            with ticker(1, desc) as t:
                clf, chosen = pipe.fit(tx, ty), C
                t.update()
    else:
        raise ConfigError(f"protocol must be 'standard', 'logistic' or 'authors', got {protocol!r}")
    return clf, {"C": float(chosen), "cv_accuracy": cv_acc, "n_train": int(len(tx)), "dim": int(tx.shape[1]),
                 "protocol": protocol}


PARALLEL_MIN_VALUES = 2_000_000
"""Training features of at least this many values (e.g. 5,000 images of 784 pixels) have their
cross-validation fits run in parallel processes: a fit then takes seconds to minutes, against the
second or two a worker process takes to start."""

N_FOLDS = 3


def _cv_jobs(n_values: int, n_fits: int, n_jobs: int | None) -> int:
    if n_jobs is not None:
        return max(1, min(int(n_jobs), n_fits))
    if n_values < PARALLEL_MIN_VALUES:
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, n_fits))


def _fit_score(pipe: Any, key: str, c: float, tx: np.ndarray, ty: np.ndarray, train: np.ndarray,
               test: np.ndarray) -> tuple[float, str | None]:
    """Accuracy on the fold ``test`` of a clone of ``pipe`` at ``C = c`` fitted on ``train``, as
    ``GridSearchCV``'s ``_fit_and_score`` computes it (NaN and the reason for a fit that raised)."""
    from sklearn.base import clone

    try:
        est = clone(pipe).set_params(**{key: c}).fit(tx[train], ty[train])
        return float(est.score(tx[test], ty[test])), None
    except Exception as e:  # noqa: BLE001 - GridSearchCV's error_score=nan: one failed fit is one NaN
        return float("nan"), f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def _cross_validate(pipe: Any, key: str, Cs: list, tx: np.ndarray, ty: np.ndarray, seed: int, desc: str,
                    n_jobs: int | None) -> tuple[float, float]:
    """``(C, mean accuracy)`` of the best C: what ``GridSearchCV(pipe, {key: Cs}, cv=StratifiedKFold(3,
    shuffle=True, random_state=seed))`` chooses (ties to the first, failed fits as NaN), with the
    fits counted for the progress lines and run in parallel processes when they are large. Processes,
    not threads: liblinear's random generator is one global state that concurrent fits would share.

    Raises:
        ValueError: every fit failed, or the folds cannot be drawn (a class with fewer images than folds).
    """
    from joblib import Parallel, delayed  # type: ignore[import-untyped]  # scikit-learn's own dependency, untyped
    from scipy.stats import rankdata
    from sklearn.model_selection import StratifiedKFold

    from ..progress import ticker

    folds = list(StratifiedKFold(N_FOLDS, shuffle=True, random_state=seed).split(tx, ty))
    jobs = [(c, train, test) for c in Cs for train, test in folds]  # candidate-major, as GridSearchCV
    n_jobs = _cv_jobs(tx.size, len(jobs), n_jobs)
    scores: list[float] = []
    errors: list[str] = []
    with ticker(len(jobs), f"{desc}: cross-validating C over {len(Cs)} values x {N_FOLDS} folds") as t:
        run = Parallel(n_jobs=n_jobs, return_as="generator")(
            delayed(_fit_score)(pipe, key, c, tx, ty, train, test) for c, train, test in jobs)
        for score, err in run:
            scores.append(score)
            errors += [err] if err else []
            t.update()
    if errors and len(errors) == len(jobs):
        raise ValueError(f"all {len(jobs)} cross-validation fits failed: {errors[0]}")
    means = np.asarray(scores, dtype=np.float64).reshape(len(Cs), len(folds)).mean(axis=1)
    filled = np.where(np.isnan(means), np.nanmin(means) - 1, means)
    best = int(rankdata(-filled, method="min").argmin())
    return Cs[best], float(means[best])


def _features(name: str, a) -> np.ndarray:
    """``a`` as float64 ``[N, F]``, or a one-line DataError when it is empty or not numeric."""
    a = np.asarray(a.cpu() if hasattr(a, "cpu") else a)
    if a.ndim < 1 or len(a) == 0 or a.size == 0 or a.dtype.kind not in "biuf":
        raise DataError(f"{name} must be a non-empty array of numbers [N, F], got shape {list(a.shape)} "
                        f"and dtype {a.dtype}")
    return a.reshape(len(a), -1).astype(np.float64)


def _labels(y) -> np.ndarray:
    y = np.asarray(y.cpu() if hasattr(y, "cpu") else y)
    if y.ndim != 1 or y.dtype.kind not in "biuf":
        raise DataError(f"labels must be vectors of class numbers [N], got shape {list(y.shape)} and dtype {y.dtype}")
    return y


def linear_probe(train_x, train_y, test_x, test_y, C: float | None = None, Cs=DEFAULT_CS,
                 protocol: str = "standard", seed: int = 0, max_iter: int = 2000, desc: str = "linear probe",
                 n_jobs: int | None = None) -> dict:
    """Test accuracy of a linear SVM trained on ``train_x`` features (:func:`fit_linear`).

    Args:
        train_x, test_x: features ``[N, F]`` (numpy or torch; cast to float64).
        train_y, test_y: integer labels ``[N]``.
        C: fixed regularisation; ``None`` chooses it by cross-validation from ``Cs``.
        protocol: ``"standard"`` (see module docstring), ``"logistic"`` (logistic regression in place
            of the SVM) or ``"authors"`` (``SVC(kernel="linear")``, ``C = 1``, no scaling).
        desc, n_jobs: as for :func:`fit_linear` (progress lines; processes of the cross-validation).

    Returns:
        ``{"accuracy", "C", "cv_accuracy" (None when C was fixed), "n_train", "n_test", "dim", "protocol"}``.

    Raises:
        DataError: empty, non-numeric or non-finite features, features of different dimensions, labels
            that are not vectors of numbers, mismatched lengths, or fewer than two classes.
        ConfigError: a ``C`` that is not a finite number > 0, or an unknown protocol.
        ValueError: scikit-learn's own refusals (e.g. a class with fewer images than the folds).
    """
    tx, vx = _features("train_x", train_x), _features("test_x", test_x)
    if tx.shape[1] != vx.shape[1]:
        raise DataError(f"training features have {tx.shape[1]} dimensions but test features {vx.shape[1]}; "
                        f"pass features of the same representation")
    if not (np.isfinite(tx).all() and np.isfinite(vx).all()):
        raise DataError("features contain NaN or infinite values; check the representation")
    ty, vy = _labels(train_y), _labels(test_y)
    if len(tx) != len(ty) or len(vx) != len(vy):
        raise DataError(f"features and labels must have the same length, got {len(tx)} / {len(ty)} (train) "
                        f"and {len(vx)} / {len(vy)} (test)")
    clf, info = fit_linear(tx, ty, C, Cs, protocol, seed, max_iter, desc, n_jobs)
    acc = float((clf.predict(vx) == vy).mean())
    return {"accuracy": acc, "C": info["C"], "cv_accuracy": info["cv_accuracy"], "n_train": info["n_train"],
            "n_test": int(len(vx)), "dim": info["dim"], "protocol": protocol}
