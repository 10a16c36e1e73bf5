"""Linear probes: how linearly decodable the class is from a representation (paper §3.2, Table 4).

Protocol (ours, stated so figures can be compared):

* features are standardised (zero mean, unit variance per dimension, statistics from the
  training features only), because z and v have very different scales;
* a linear SVM (scikit-learn ``LinearSVC``, squared hinge loss, one-vs-rest) is trained on
  training-set features; ``C`` is chosen by 3-fold stratified cross-validation on the training
  features from ``(0.001, 0.003, 0.01, 0.03)`` unless given (on standardised features of a few
  hundred dimensions larger C overfits and makes liblinear take minutes to converge);
* accuracy is measured once on the test set, which is never used for any choice.

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

from typing import Any

import numpy as np

from ..errors import ConfigError, DataError

__all__ = ["fit_linear", "linear_probe"]

DEFAULT_CS = (0.001, 0.003, 0.01, 0.03)


def fit_linear(train_x, train_y, C: float | None = None, Cs=DEFAULT_CS, protocol: str = "standard", seed: int = 0,
               max_iter: int = 2000) -> tuple[Any, dict]:
    """The linear SVM of :func:`linear_probe`, trained on ``train_x`` features, for callers that
    classify features of their own (e.g. decoded images, :func:`flowvae.evaluation.switching.switch_metric`).

    Args:
        train_x: features ``[N, F]`` (numpy or torch; cast to float64).
        train_y: integer labels ``[N]``.
        C, Cs, seed, max_iter: as for :func:`linear_probe`.
        protocol: as for :func:`linear_probe`, or ``"logistic"`` (module docstring).

    Returns:
        ``(classifier, info)``: a fitted scikit-learn estimator whose ``predict`` takes float64
        ``[M, F]`` features (scaling included); ``info`` is ``{"C", "cv_accuracy" (None when C was
        fixed), "n_train", "dim", "protocol"}``.

    Raises:
        DataError, ConfigError, ValueError: as for :func:`linear_probe`, for the training features.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, LinearSVC

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
        clf = SVC(kernel="linear", C=1.0 if C is None else C).fit(tx, ty)
        chosen = clf.C
    elif protocol in ("standard", "logistic"):
        c0 = 1.0 if C is None else C
        est = (LinearSVC(C=c0, max_iter=max_iter, dual="auto", random_state=seed) if protocol == "standard"
               else LogisticRegression(C=c0, max_iter=max_iter, random_state=seed))
        pipe = make_pipeline(StandardScaler(), est)
        if C is None:
            key = f"{pipe.steps[-1][0]}__C"
            search = GridSearchCV(pipe, {key: list(Cs)}, cv=StratifiedKFold(3, shuffle=True, random_state=seed),
                                  n_jobs=1)
            search.fit(tx, ty)
            clf, chosen, cv_acc = search.best_estimator_, search.best_params_[key], float(search.best_score_)
        else:
            clf, chosen = pipe.fit(tx, ty), C
    else:
        raise ConfigError(f"protocol must be 'standard', 'logistic' or 'authors', got {protocol!r}")
    return clf, {"C": float(chosen), "cv_accuracy": cv_acc, "n_train": int(len(tx)), "dim": int(tx.shape[1]),
                 "protocol": protocol}


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
                 protocol: str = "standard", seed: int = 0, max_iter: int = 2000) -> dict:
    """Test accuracy of a linear SVM trained on ``train_x`` features (:func:`fit_linear`).

    Args:
        train_x, test_x: features ``[N, F]`` (numpy or torch; cast to float64).
        train_y, test_y: integer labels ``[N]``.
        C: fixed regularisation; ``None`` chooses it by cross-validation from ``Cs``.
        protocol: ``"standard"`` (see module docstring), ``"logistic"`` (logistic regression in place
            of the SVM) or ``"authors"`` (``SVC(kernel="linear")``, ``C = 1``, no scaling).

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
    clf, info = fit_linear(tx, ty, C, Cs, protocol, seed, max_iter)
    acc = float((clf.predict(vx) == vy).mean())
    return {"accuracy": acc, "C": info["C"], "cv_accuracy": info["cv_accuracy"], "n_train": info["n_train"],
            "n_test": int(len(vx)), "dim": info["dim"], "protocol": protocol}
