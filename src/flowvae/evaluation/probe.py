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
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError, DataError

__all__ = ["linear_probe"]

DEFAULT_CS = (0.001, 0.003, 0.01, 0.03)


def linear_probe(train_x, train_y, test_x, test_y, C: float | None = None, Cs=DEFAULT_CS,
                 protocol: str = "standard", seed: int = 0, max_iter: int = 2000) -> dict:
    """Test accuracy of a linear SVM trained on ``train_x`` features.

    Args:
        train_x, test_x: features ``[N, F]`` (numpy or torch; cast to float64).
        train_y, test_y: integer labels ``[N]``.
        C: fixed regularisation; ``None`` chooses it by cross-validation from ``Cs``.
        protocol: ``"standard"`` (see module docstring) or ``"authors"`` (``SVC(kernel="linear")``,
            ``C = 1``, no scaling).

    Returns:
        ``{"accuracy", "C", "cv_accuracy" (None when C was fixed), "n_train", "n_test", "dim", "protocol"}``.

    Raises:
        DataError: empty, non-numeric or non-finite features, features of different dimensions, labels
            that are not vectors of numbers, mismatched lengths, or fewer than two classes.
        ConfigError: a ``C`` that is not a finite number > 0, or an unknown protocol.
        ValueError: scikit-learn's own refusals (e.g. a class with fewer images than the folds).
    """
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, LinearSVC

    tx, ty, vx, vy = (np.asarray(a.cpu() if hasattr(a, "cpu") else a) for a in (train_x, train_y, test_x, test_y))
    for name, a in (("train_x", tx), ("test_x", vx)):
        if a.ndim < 1 or len(a) == 0 or a.size == 0 or a.dtype.kind not in "biuf":
            raise DataError(f"{name} must be a non-empty array of numbers [N, F], got shape {list(a.shape)} "
                            f"and dtype {a.dtype}")
    tx, vx = tx.reshape(len(tx), -1).astype(np.float64), vx.reshape(len(vx), -1).astype(np.float64)
    if tx.shape[1] != vx.shape[1]:
        raise DataError(f"training features have {tx.shape[1]} dimensions but test features {vx.shape[1]}; "
                        f"pass features of the same representation")
    if not (np.isfinite(tx).all() and np.isfinite(vx).all()):
        raise DataError("features contain NaN or infinite values; check the representation")
    if ty.ndim != 1 or vy.ndim != 1 or ty.dtype.kind not in "biuf" or vy.dtype.kind not in "biuf":
        raise DataError(f"labels must be vectors of class numbers [N], got shapes {list(ty.shape)} and "
                        f"{list(vy.shape)}, dtypes {ty.dtype} and {vy.dtype}")
    if len(tx) != len(ty) or len(vx) != len(vy):
        raise DataError(f"features and labels must have the same length, got {len(tx)} / {len(ty)} (train) "
                        f"and {len(vx)} / {len(vy)} (test)")
    if len(np.unique(ty)) < 2:
        raise DataError("a probe needs at least two classes in the training labels")
    if C is not None and (isinstance(C, bool) or not isinstance(C, (int, float)) or not np.isfinite(C) or C <= 0):
        raise ConfigError(f"C must be a finite number > 0, got {C!r}")
    cv_acc = None
    if protocol == "authors":
        clf = SVC(kernel="linear", C=1.0 if C is None else C).fit(tx, ty)
        chosen = clf.C
    elif protocol == "standard":
        pipe = make_pipeline(StandardScaler(), LinearSVC(C=1.0 if C is None else C, max_iter=max_iter, dual="auto",
                                                         random_state=seed))
        if C is None:
            search = GridSearchCV(pipe, {"linearsvc__C": list(Cs)},
                                  cv=StratifiedKFold(3, shuffle=True, random_state=seed), n_jobs=1)
            search.fit(tx, ty)
            clf, chosen, cv_acc = search.best_estimator_, search.best_params_["linearsvc__C"], float(search.best_score_)
        else:
            clf, chosen = pipe.fit(tx, ty), C
    else:
        raise ConfigError(f"protocol must be 'standard' or 'authors', got {protocol!r}")
    acc = float((clf.predict(vx) == vy).mean())
    return {"accuracy": acc, "C": float(chosen), "cv_accuracy": cv_acc, "n_train": int(len(tx)),
            "n_test": int(len(vx)), "dim": int(tx.shape[1]), "protocol": protocol}
