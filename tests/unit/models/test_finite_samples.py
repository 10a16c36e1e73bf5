"""Finite samples from undertrained models (issue 20, part 5).

The fixture trains the tiny digits flow of ``conftest.py`` for 10 steps at ``lr = 0.1``: an
undertrained model whose likelihoods are finite and whose round trip is exact, but whose inverse
at temperature 1 leaves every float range for part of the samples (the doubly exponential growth
described in :mod:`flowvae.flows.coupling`). Before the fix those samples were NaN and became
black tiles; :func:`_old_inverse` is the formula of that time, patched in to show the tests would
catch it.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from flowvae import load_run
from flowvae.evaluation.check import check_model
from flowvae.evaluation.sampling import (
    FAR_WARNING_FRACTION,
    draw_samples,
    merge_stats,
    pixel_stats,
    sample_grids,
    sample_grids_with_stats,
    sample_health,
    write_sample_stats,
)
from flowvae.flows.coupling import INVERSE_LIMIT, AffineCoupling, affine_inverse, track_saturation
from flowvae.models.base import create_model
from flowvae.presets import resolve
from flowvae.training import train
from helpers.tiny import FLOW, TRAIN, one_thread

pytestmark = pytest.mark.usefixtures("single_thread")

UNSTABLE = (*TRAIN, *FLOW, "train.steps=10", "train.lr=0.1")  # TRAIN sets 2 steps; these come later
N = 64


def _old_inverse(self, y, cond=None):
    """AffineCoupling.inverse before the fix: the plain ``(y - b) * exp(-log s)``."""
    y_a, y_b = self.splitter.split(y)
    log_s, b = self._params(y_a, cond)
    return self.splitter.merge(y_a, (y_b - b) * torch.exp(-log_s)), -log_s.flatten(1).sum(1)


@pytest.fixture(scope="module")
def unstable_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("unstable") / "run"
    with one_thread():
        train(resolve("digits", list(UNSTABLE)), run, progress=False)
    return run


@pytest.fixture(scope="module")
def model(unstable_run):
    return load_run(unstable_run).eval()


@pytest.fixture(scope="module")
def test_images(model):
    from flowvae.data.streaming import head_images
    from flowvae.runs.data import load_data

    return head_images(load_data(model.config, "test"), 64)


@torch.no_grad()
def _continuous(model, n=N, seed=0, dtype=torch.float32):
    """The continuous samples ``model.sample`` would quantise (z from the prior, then v)."""
    gen = torch.Generator().manual_seed(seed)
    z = model.prior.sample(n, 1.0, gen)
    v = torch.randn(n, model.dim, generator=gen)
    dec = model.decoder if dtype == torch.float32 else copy.deepcopy(model.decoder).to(dtype)
    return dec.inverse(v.to(dtype), z.to(dtype))[0]


def _black_tiles(images: torch.Tensor) -> int:
    return int((images.flatten(1).amax(1) == 0).sum())


# ----------------------------------------------------------------------------------------------
# before the fix


def test_the_old_formula_gives_non_finite_samples_and_black_tiles(model, monkeypatch, caplog, test_images):
    monkeypatch.setattr(AffineCoupling, "inverse", _old_inverse)
    x = _continuous(model)
    bad = ~torch.isfinite(x).flatten(1).all(1)
    assert bad.sum() >= 1, "the fixture no longer reproduces the overflow; raise train.lr or train.steps"
    with caplog.at_level(logging.WARNING, logger="flowvae"):
        images = model.sample(N, 1.0, generator=torch.Generator().manual_seed(0))
    assert 1 <= _black_tiles(images) <= int(bad.sum())  # NaN samples became black tiles
    assert "non-finite pixel values" in caplog.text
    # and check failed the model for it
    record = next(c for c in check_model(model, test_images[:16])["checks"] if c["name"] == "samples")
    assert not record["ok"] and "NaN/Inf" in record["detail"]


def test_the_overflow_is_the_true_inverse_not_rounding(model, monkeypatch):
    """Every sample the float32 formula lost is lost in float64 too, or lies beyond float32's range
    there (so beyond the pixel range by ~38 orders of magnitude): no float32 intermediate overflowed
    on a sample whose true value is representable."""
    monkeypatch.setattr(AffineCoupling, "inverse", _old_inverse)
    x32, x64 = _continuous(model), _continuous(model, dtype=torch.float64)
    lost = ~torch.isfinite(x32).flatten(1).all(1)
    assert lost.any()
    peak64 = x64.abs().flatten(1).amax(1)  # NaN where float64 lost it too (amax propagates NaN)
    assert bool(((~torch.isfinite(peak64)) | (peak64 > torch.finfo(torch.float32).max))[lost].all())


# ----------------------------------------------------------------------------------------------
# after the fix


def test_samples_are_finite_counted_and_never_black(model, caplog):
    with caplog.at_level(logging.WARNING, logger="flowvae"):
        images, stats = draw_samples(model, N, 1.0, generator=torch.Generator().manual_seed(0))
    assert stats["nonfinite_pixels"] == 0 and stats["nonfinite_samples"] == 0
    assert "non-finite" not in caplog.text
    assert stats["saturated_samples"] >= 1  # the samples that were NaN before
    assert 0 < stats["far_pixels"] <= stats["clamped_pixels"] <= stats["pixels"] == images.numel()
    assert stats["clamped_fraction"] == stats["clamped_pixels"] / stats["pixels"]
    assert stats["max_abs"] == pytest.approx(INVERSE_LIMIT, rel=1.0)  # saturated values reach the pixels
    assert _black_tiles(images) == 0
    json.dumps(stats, allow_nan=False)  # plain numbers for --json and check.json


def test_draw_samples_gives_the_images_of_model_sample(model):
    """The statistics come from the same draws: bit-identical images, for the unstable model and
    for freshly built models of the other flow kinds (z from the prior or none)."""
    models = [model] + [create_model(resolve("digits", [*FLOW, f"model.kind={k}"])).eval()
                        for k in ("z_prior", "refined_glow", "glow")]
    for m in models:
        for t in (0.0, 0.7, 1.0):
            a, _ = draw_samples(m, 8, t, generator=torch.Generator().manual_seed(3))
            b = m.sample(8, t, generator=torch.Generator().manual_seed(3))
            assert torch.equal(a, b), (m.kind, t)
    grids = sample_grids_with_stats(model, [0.5, 1.0], 8, seed=1)
    plain = sample_grids(model, [0.5, 1.0], 8, seed=1)
    assert [t for t, _, _ in grids] == [t for t, _ in plain] == [0.5, 1.0]
    assert all(torch.equal(g[1], p[1]) for g, p in zip(grids, plain))


def test_finite_inverses_are_bitwise_unchanged(model, monkeypatch, test_images):
    with track_saturation() as masks:
        new = _continuous(model)
    saturated = torch.stack([m for m in masks if m.shape[0] == N]).any(0)
    monkeypatch.setattr(AffineCoupling, "inverse", _old_inverse)
    old = _continuous(model)
    kept = torch.isfinite(old).flatten(1).all(1) & ~saturated
    assert kept.sum() >= N // 2
    assert torch.equal(new[kept], old[kept])
    monkeypatch.undo()
    # real codes decode back exactly (the guard never touches an inverse of data)
    z, v = model.encode(test_images)
    assert torch.equal(model.decode(z, v), test_images)


def test_the_density_is_unchanged(model, monkeypatch, test_images):
    """The fix is in the inverse only: bits/dim with the coupling of before are bitwise the same."""
    new = model.bits_per_dim(test_images, 1, torch.Generator().manual_seed(0))["elbo_bpd"]
    monkeypatch.setattr(AffineCoupling, "inverse", _old_inverse)
    old = model.bits_per_dim(test_images, 1, torch.Generator().manual_seed(0))["elbo_bpd"]
    assert torch.isfinite(new).all() and torch.equal(new, old)


# ----------------------------------------------------------------------------------------------
# check and the report


def test_check_warns_on_an_unstable_model_instead_of_failing(model, test_images):
    res = check_model(model, test_images[:16])
    by_name = {c["name"]: c for c in res["checks"]}
    assert res["ok"] and res["warnings"] == ["samples", "where samples saturate"]
    rec = by_name["samples"]
    assert rec["ok"] and rec["warning"] is True
    assert "clamped" in rec["detail"] and "undertrained or unstable" in rec["detail"]
    assert rec["stats"]["nonfinite_pixels"] == 0 and rec["stats"]["samples"] == 16
    # The same 16 draws, traced back to where each saturated one first left the data's range.
    origin = by_name["where samples saturate"]["origin"]
    assert origin["saturated"] == rec["stats"]["saturated_samples"] > 0
    assert sum(origin["first_departure"].values()) + origin["unattributed"] == origin["saturated"]
    assert all(place.startswith(("decoder level", "prior of z")) for place in origin["first_departure"])
    assert 0 <= origin["narrow_fraction"] <= 1 and set(origin["saturated_at"]) == {"0.9", "0.8", "0.7"}
    assert all(c["ok"] and not c.get("warning") for n, c in by_name.items() if not n.startswith(("samples", "where")))
    json.dumps(res.to_dict(), allow_nan=False)


def _collapse_one_coupling(model, level_name: str) -> None:
    """Give the last coupling at ``level_name`` a scale of about 1e-17 whatever its input: its
    inverse multiplies by 1e17, past the saturation limit, while every other coupling of a fresh
    model is the identity (zero-initialised last layers). The last of its level, so that no
    coupling the inverse runs before it sees data the collapse has shrunk: a sample leaves the
    data's range there first."""
    from flowvae.evaluation.saturation import coupling_places

    places = coupling_places(model)
    layer = [m for m in model.decoder.modules() if isinstance(m, AffineCoupling) and places[id(m)] == level_name][-1]
    with torch.no_grad():
        layer.net.conv3.bias[: layer.splitter.size_b].fill_(-40.0)


@pytest.mark.parametrize("level", ["decoder level 1 of 3", "decoder level 2 of 3"])
def test_saturation_origin_names_the_level_where_samples_leave_the_data(test_images, level):
    from flowvae.evaluation.saturation import saturation_origin
    from flowvae.flows import data_init

    fresh = create_model(resolve("digits", list(FLOW)))
    with torch.no_grad(), data_init(fresh):  # unit-variance activations, as training starts
        fresh.loss(test_images, torch.Generator().manual_seed(0))
    fresh.eval()
    found = saturation_origin(fresh, test_images, n=8)
    assert found["saturated"] == 0 and found["first_departure"] == {}
    _collapse_one_coupling(fresh, level)
    found = saturation_origin(fresh, test_images, n=8)
    assert found["saturated"] == 8 and found["first_departure"] == {level: 8} and found["unattributed"] == 0
    assert found["saturated_at"] == {"0.9": 8, "0.8": 8, "0.7": 8}


def test_coupling_places_count_levels_of_both_architectures():
    from flowvae.evaluation.saturation import coupling_places

    refined = create_model(resolve("digits", list(FLOW)))
    assert set(coupling_places(refined).values()) == {"decoder level 1 of 3", "decoder level 2 of 3", "prior of z"}
    glow = create_model(resolve("digits", ["model.kind=glow", "model.steps=[1,1]", "model.hidden=[8,8]"]))
    assert set(coupling_places(glow).values()) == {"decoder level 0 of 2", "decoder level 1 of 2"}


def test_check_still_fails_a_broken_model(model, test_images):
    broken = copy.deepcopy(model)
    with torch.no_grad():
        next(m for m in broken.decoder.modules() if isinstance(m, AffineCoupling)).net.conv3.bias.fill_(float("nan"))
    res = check_model(broken, test_images[:16])
    by_name = {c["name"]: c for c in res["checks"]}
    assert not res["ok"]
    assert not by_name["finite weights"]["ok"]
    assert not by_name["samples"]["ok"] and "broken" in by_name["samples"]["detail"]


def test_sample_stats_file_and_report_caption(model, unstable_run, tmp_path):
    from flowvae.imaging import save_grid
    from flowvae.report import write_report

    run = tmp_path / "run"
    shutil.copytree(unstable_run, run)
    folder = run / "samples"
    written = []
    for temps in ([0.5], [1.0]):  # two calls, as two `flowvae sample -t` runs: the file keeps both
        for t, images, stats in sample_grids_with_stats(model, temps, 16):
            written.append((save_grid(images, folder / f"samples_t{t:.2f}.png", nrow=8), stats))
        path = write_sample_stats(folder, written[-1:])
    grids = {g["file"]: g for g in json.loads(path.read_text())["grids"]}
    assert set(grids) == {"samples_t0.50.png", "samples_t1.00.png"}
    grid = grids["samples_t1.00.png"]
    assert grid["health"] == "warn" and grid["temperature"] == 1.0
    assert grid["saturated_samples"] == written[1][1]["saturated_samples"]
    page = write_report(run, tmp_path / "report.html").read_text()
    assert 'class="sample-stats warn"' in page and "pixels clamped" in page
    # a grid rewritten after the statistics (e.g. by training) loses its caption
    save_grid(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), folder / "samples_t1.00.png", nrow=2)
    page = write_report(run, tmp_path / "report2.html").read_text()
    assert page.count('class="sample-stats') == 1 and "at temperature 0.5 finite" in page
    assert "at temperature 1 finite" not in page


# ----------------------------------------------------------------------------------------------
# the pieces


def test_affine_inverse_is_the_plain_formula_where_that_is_finite():
    gen = torch.Generator().manual_seed(0)
    y, b, u = (torch.randn(4, 3, 5, 5, generator=gen) * 3 for _ in range(3))
    log_s = torch.nn.functional.logsigmoid(u) + 0.6931471805599453  # s in (0, 2), 1/s up to ~e^10 here
    plain = (y - b) * torch.exp(-log_s)
    assert plain.abs().max() > 1e3  # large inverses, still under the limit: left as they are
    assert torch.equal(affine_inverse(y, b, log_s), plain)


def test_affine_inverse_rescues_overflow_and_saturates_with_sign():
    y = torch.tensor([[1e-38, 0.0, 3.0, -3.0, float("nan"), 2.0]])
    b = torch.zeros_like(y)
    log_s = torch.tensor([[-95.0, -95.0, -95.0, -95.0, 0.0, -1.0]])
    plain = (y - b) * torch.exp(-log_s)
    assert not torch.isfinite(plain[0, :4]).any()  # what the old formula gave: inf, NaN (0 * inf), inf, -inf
    with track_saturation() as masks:
        x = affine_inverse(y, b, log_s)
    expected_first = float(torch.tensor(1e-38, dtype=torch.float64) * torch.tensor(95.0, dtype=torch.float64).exp())
    assert float(x[0, 0]) == pytest.approx(expected_first, rel=1e-5)  # 1/s beyond float32, product not
    assert float(x[0, 1]) == 0.0
    assert float(x[0, 2]) == INVERSE_LIMIT and float(x[0, 3]) == -INVERSE_LIMIT
    assert torch.isnan(x[0, 4])  # NaN in, NaN out: a broken model stays visible
    assert float(x[0, 5]) == pytest.approx(2.0 * 2.718281828459045)
    assert len(masks) == 1 and masks[0].tolist() == [True]
    with track_saturation() as masks:
        affine_inverse(y[:, 5:], b[:, 5:], log_s[:, 5:])
    assert masks[0].tolist() == [False]


def test_affine_inverse_keeps_finite_gradients_in_the_plain_region():
    y = torch.tensor([0.0, 1.0, -2.0], requires_grad=True)
    log_s = torch.tensor([0.1, -0.5, 0.3], requires_grad=True)
    affine_inverse(y, torch.zeros(3), log_s).sum().backward()
    assert y.grad is not None and log_s.grad is not None
    assert torch.isfinite(y.grad).all() and torch.isfinite(log_s.grad).all()  # y = 0 gives log(0) in the unused branch
    assert torch.allclose(y.grad, torch.exp(-log_s.detach()))


def test_sample_health_rule():
    base = {"samples": 10, "temperature": 1.0, "pixels": 1000, "clamped_pixels": 300, "clamped_fraction": 0.3,
            "far_pixels": 0, "far_fraction": 0.0, "nonfinite_pixels": 0, "nonfinite_samples": 0,
            "saturated_samples": 0, "max_abs": 0.9}
    assert sample_health(base)[0] == "ok"  # clamping alone (a trained flow at T = 1) is no warning
    far = FAR_WARNING_FRACTION * 1000
    assert sample_health({**base, "far_pixels": far, "far_fraction": FAR_WARNING_FRACTION})[0] == "ok"
    assert sample_health({**base, "far_pixels": far + 1, "far_fraction": (far + 1) / 1000})[0] == "warn"
    assert sample_health({**base, "saturated_samples": 1})[0] == "warn"
    level, detail = sample_health({**base, "nonfinite_pixels": 5, "nonfinite_samples": 1})
    assert level == "fail" and "1 of 10 samples" in detail
    assert sample_health({**base, **{k: None for k in base if k not in ("samples", "temperature")}})[0] == "ok"


def test_pixel_stats_counts_what_the_quantiser_clips():
    x = torch.tensor([-0.5, 0.4999, 0.5, -0.5001, 2.0, float("inf"), float("nan"), 0.0]).view(2, 1, 2, 2)
    st = pixel_stats(x, 256, torch.tensor([False, True]))
    assert (st["clamped_pixels"], st["far_pixels"], st["nonfinite_pixels"]) == (3, 1, 2)
    assert (st["nonfinite_samples"], st["saturated_samples"], st["max_abs"]) == (1, 1, 2.0)
    both = merge_stats([{"temperature": 1.0, **st}, {"temperature": 1.0, **st}])
    assert both["samples"] == 4 and both["clamped_pixels"] == 6 and both["clamped_fraction"] == st["clamped_fraction"]


def test_cli_check_and_sample_report_the_warning(unstable_run, tmp_path, capsys):
    """Through the command line: `check` exits 0 with `samples` and where they saturate among its warnings, and `sample`
    prints the counts of each grid in --json and writes samples/sample_stats.json."""
    import json

    from flowvae.cli.main import main

    assert main(["check", str(unstable_run), "--device", "cpu", "--limit", "8", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["warnings"] == ["samples", "where samples saturate"]
    out = tmp_path / "grids"
    assert main(["sample", str(unstable_run), "--device", "cpu", "-t", "1.0", "-n", "64", "--out", str(out),
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["stats"], "sample --json carries no per-grid counts"
    stats = next(iter(res["stats"].values())) if isinstance(res["stats"], dict) else res["stats"][0]
    assert stats["nonfinite_pixels"] == 0 and stats["saturated_samples"] >= 1
    assert (out / "sample_stats.json").is_file()


@pytest.mark.parametrize("narrow, says", [(0.3, "narrower than the prior"), (0.0, "about the prior's spread")])
def test_check_blames_the_prior_only_when_the_latent_is_narrow(model, test_images, monkeypatch, narrow, says):
    import flowvae.evaluation.check as check

    record = {"samples": 16, "saturated": 3, "temperature": 1.0, "first_departure": {"decoder level 2 of 3": 3},
              "unattributed": 0, "narrow_fraction": narrow, "latent_std_range": [0.1, 1.2],
              "saturated_at": {"0.9": 2, "0.8": 1, "0.7": 0}}
    monkeypatch.setattr(check, "saturation_origin", lambda *a, **k: record)
    detail = {c["name"]: c for c in check.check_model(model, test_images[:16])["checks"]}["where samples saturate"]["detail"]
    assert says in detail and "decoder level 2 of 3 (3)" in detail and "2 at 0.9, 1 at 0.8, 0 at 0.7" in detail
