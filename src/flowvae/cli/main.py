"""The ``flowvae`` command line.

Conventions shared by every command: ``flowvae train PRESET_OR_CONFIG --run DIR [--steps N]
[--seed S] [--device cpu|cuda|auto] [--set key=value ...]``; commands that read a run folder take
it as their first argument (``flowvae eval RUN``); ``--json`` prints the results as one JSON
object on standard output. Exit status: 0 success, 1 failure (a one-line message, no traceback,
for errors caused by input), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from ..errors import FlowVAEError

log = logging.getLogger("flowvae")


def _common(p: argparse.ArgumentParser, seed: bool = True) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (CUDA when present) [default: auto]")
    if seed:
        p.add_argument("--seed", type=int, default=None, help="random seed [default: the config's train.seed, 0]")
    _output(p)


def _output(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the results as one JSON object on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")


def build_parser() -> argparse.ArgumentParser:
    from ..config import PRESETS

    parser = argparse.ArgumentParser(prog="flowvae", description="Global/local generative flows "
                                     "(Ma et al., ICLR 2021): train, evaluate, sample.")
    parser.add_argument("--version", action="version", version=f"flowvae {__import__('flowvae').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train a model from a preset or a config file",
                       description="Train a model. Presets: " + ", ".join(PRESETS))
    p.add_argument("config", metavar="PRESET_OR_CONFIG", nargs="?", default=None,
                   help=f"preset ({', '.join(PRESETS)}) or a YAML/JSON config file; leave out with --data "
                        f"FOLDER to pick a preset from the images' size")
    p.add_argument("--run", "--run-dir", dest="run", required=True, metavar="DIR",
                   help="run folder to write (created if needed); under torchrun spell it --run-dir, "
                        "since torchrun reads --run as its own --run-path")
    p.add_argument("--steps", type=int, default=None, help="number of optimizer steps [default: the preset's]")
    p.add_argument("--data", default=None, metavar="PATH", help="dataset files or image folder (sets data.root)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override config fields, e.g. --set train.lr=5e-4 model.d_z=32")
    p.add_argument("--resume", action="store_true", help="continue the run in --run from its newest valid checkpoint")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar [default: when stderr is a terminal]")
    _common(p)

    p = sub.add_parser("eval", help="test-set bits/dim (ELBO and importance-weighted bound) of a run",
                       description="Evaluate a run: negative ELBO and importance-weighted bound in bits/dim "
                                   "with K posterior samples, the KL in nats, and the exact round-trip check.")
    p.add_argument("run", metavar="RUN", help="run folder")
    p.add_argument("-k", "--k", type=int, default=5, help="posterior samples per image [default: 5]")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N test images")
    p.add_argument("--batch-size", type=int, default=256, help="images x samples per batch [default: 256]")
    _common(p)

    p = sub.add_parser("sample", help="PNG grids of samples at several temperatures",
                       description="Sample images. The temperature scales the standard deviation of the "
                                   "local code v; z is drawn from the flow prior at --z-temperature (default 1).")
    p.add_argument("run", metavar="RUN", help="run folder")
    p.add_argument("-t", "--temperature", type=float, nargs="+", default=[0.7, 0.8, 0.9, 1.0],
                   help="temperatures of v [default: 0.7 0.8 0.9 1.0]")
    p.add_argument("--z-temperature", type=float, default=1.0, help="temperature of the prior of z [default: 1]")
    p.add_argument("-n", "--num", type=int, default=64, help="images per grid [default: 64]")
    p.add_argument("--out", default=None, help="output folder [default: RUN/samples]")
    _common(p)

    p = sub.add_parser("switch", help="swap the global codes of pairs of real test images (Figure 1)",
                       description="For pairs of test images, a 2x2 grid per pair of the decodes (v1,z1) (v1,z2) "
                                   "(v2,z2) (v2,z1): z is the posterior mean, v the exact local code, so the "
                                   "diagonal cells are the real images.")
    p.add_argument("run", metavar="RUN", help="run folder")
    p.add_argument("--pairs", type=int, default=8, help="number of image pairs [default: 8]")
    p.add_argument("--same-class", action="store_true", help="pair images of the same class")
    p.add_argument("--out", default=None, help="PNG file [default: RUN/switch.png]")
    _common(p)

    p = sub.add_parser("interpolate", help="2-D interpolation over z and v between two real images (eq. 8)",
                       description="Rows interpolate z (alpha), columns v (beta); corners are the real images.")
    p.add_argument("run", metavar="RUN", help="run folder")
    p.add_argument("--rows", type=int, default=5, help="values of alpha in [0, 1] [default: 5]")
    p.add_argument("--cols", type=int, default=11, help="values of beta in [0, 1] [default: 11]")
    p.add_argument("--spherical", action="store_true", help="spherical instead of linear interpolation")
    p.add_argument("--index", type=int, nargs=2, default=None, metavar=("I", "J"),
                   help="test-image indices of the two images [default: random]")
    p.add_argument("--out", default=None, help="PNG file [default: RUN/interpolation.png]")
    _common(p)

    p = sub.add_parser("probe", help="linear-probe accuracy from z, v and raw pixels (Table 4)",
                       description="Linear SVM accuracy on the test set from features z (posterior mean), v and "
                                   "raw pixels. Features standardised; C by 3-fold CV on the training features.")
    p.add_argument("run", metavar="RUN", help="run folder")
    p.add_argument("--train-limit", type=int, default=5000, help="training images for the probe [default: 5000]")
    p.add_argument("--test-limit", type=int, default=None, help="test images [default: all]")
    p.add_argument("--C", type=float, default=None, help="fix the SVM's C instead of cross-validating it")
    p.add_argument("--protocol", choices=["standard", "authors"], default="standard",
                   help="standard (scaled LinearSVC, CV over C) or authors (SVC linear kernel, C=1, no scaling)")
    _common(p)

    p = sub.add_parser("fid", help="FID and KID of samples against the test set",
                       description="FID/KID of model samples at --temperature against test images, with the "
                                   "Inception-v3 network of 2015-12-05 (pool3 features).")
    p.add_argument("run", metavar="RUN", help="run folder")
    p.add_argument("-n", "--num", type=int, default=1000, help="generated and real images [default: 1000]")
    p.add_argument("-t", "--temperature", type=float, default=1.0, help="temperature of v [default: 1]")
    p.add_argument("--inception", default=None, metavar="PATH", help="Inception network file")
    _common(p)

    p = sub.add_parser("check", help="verify a trained model: round trip, finite bounds, consistent inverses",
                       description="Check a run: finite weights, ActNorm initialised, every 1x1 convolution's "
                                   "inverse consistent with its weight, exact uint8 round trip and finite bits/dim "
                                   "on test images, finite samples. Exit status 1 if any check fails.")
    p.add_argument("run", metavar="RUN", help="run folder")
    p.add_argument("--limit", type=int, default=64, help="test images to check [default: 64]")
    _common(p)

    p = sub.add_parser("report", help="write a self-contained HTML report of a run",
                       description="One HTML page per run: config, bits/dim and KL curves, sample/switch/"
                                   "interpolation grids, probe and FID/KID tables, parameters, hardware, wall time.")
    p.add_argument("run", metavar="RUN", help="run folder")
    p.add_argument("--out", default=None, help="HTML file [default: RUN/report.html]")
    _output(p)

    p = sub.add_parser("compare", help="put several runs side by side in one HTML page",
                       description="A table (kind, parameters, steps, final test bits/dim, KL, wall time, probe "
                                   "accuracies) and the test bits/dim curves of several runs.")
    p.add_argument("runs", metavar="RUN", nargs="+", help="run folders")
    p.add_argument("--out", required=True, help="HTML file to write")
    _output(p)

    p = sub.add_parser("traverse", help="latent traversal grid: one latent dimension changed at a time",
                       description="From the posterior mean of one test image, set one dimension of the vector "
                                   "latent (z of the flow models, c of the beta-TCVAE and multi-stage models) to "
                                   "evenly spaced values, one row per dimension.")
    p.add_argument("run", metavar="RUN", help="run folder")
    p.add_argument("--index", type=int, nargs="+", default=[0], help="test-image indices, one grid each [default: 0]")
    p.add_argument("--dims", type=int, nargs="+", default=None, help="latent dimensions [default: all]")
    p.add_argument("--range", type=float, default=2.0, dest="span", metavar="R",
                   help="values run from -R to R [default: 2, in prior standard deviations for N(0, I) latents]")
    p.add_argument("--steps", type=int, default=9, help="values per dimension [default: 9]")
    p.add_argument("--local", choices=["keep", "zero"], default="keep",
                   help="flow models: decode with the image's own local code v (keep) or v = 0 (zero) [default: keep]")
    p.add_argument("--out", default=None, help="PNG file [default: RUN/traverse.png; RUN/traverse_I.png for several]")
    _common(p, seed=False)

    p = sub.add_parser("disentangle", help="MIG, DCI, SAP, FactorVAE and BetaVAE scores on the dSprites grid",
                       description="Disentanglement metrics of a run's vector latent (posterior means) against "
                                   "dSprites' ground-truth factors, on the full factor grid (46,080 images), "
                                   "with disentanglement_lib's settings. Writes RUN/disentanglement.json.")
    p.add_argument("run", metavar="RUN", help="run folder")
    p.add_argument("--data", default=None, metavar="PATH",
                   help="dSprites folder or dsprites_downsampled.npz [default: the run's data.root or ../shared/data/dsprites]")
    p.add_argument("--metrics", nargs="+", default=["mig", "dci", "sap", "factorvae", "betavae"],
                   choices=["mig", "dci", "sap", "factorvae", "betavae"], help="metrics to compute [default: all]")
    p.add_argument("--num-train", type=int, default=10000, help="training points of each metric [default: 10000]")
    p.add_argument("--num-test", type=int, default=5000, help="evaluation points of each metric [default: 5000]")
    _common(p)

    p = sub.add_parser("presets", help="list the presets and their parameter counts")
    p.add_argument("--json", action="store_true", help="print as JSON")
    return parser


def _emit(args, result: dict, lines: list[str]) -> None:
    if getattr(args, "json", False):
        print(json.dumps(result))
    else:
        print("\n".join(lines))


def cmd_train(args) -> int:
    from ..config import resolve
    from ..training import train

    overrides = list(args.overrides)
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.device:
        overrides.append(f"train.device={args.device}")
    if args.data is not None:
        overrides.append(f"data.root={args.data}")
    run = Path(args.run)
    if args.resume and (run / "config.yaml").is_file():
        from ..config import apply_overrides, load_config
        cfg = apply_overrides(load_config(run / "config.yaml"), overrides)
    elif args.config is None:
        if args.data is None:
            from ..errors import ConfigError
            raise ConfigError("give a preset or config file, or --data FOLDER to train on your own images "
                              "(see flowvae presets)")
        cfg = _preset_for_folder(Path(args.data), overrides)
    else:
        cfg = resolve(args.config, overrides)
    res = train(cfg, run, resume=args.resume, progress=args.progress)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return 0
    _emit(args, {"run": str(run), **res},
          [f"run folder: {run}", f"steps: {res['step']}",
           f"test bits/dim (negative ELBO, k={res['test_k']}, {res['test_n']} images): {res['test_elbo_bpd']:.4f}"])
    return 0


def _preset_for_folder(root: Path, overrides: list[str]):
    """Config for ``flowvae train --data FOLDER`` without a preset: chosen from the first image."""
    from PIL import Image

    from ..config import apply_overrides, preset_for_images
    from ..errors import DataError

    if not root.is_dir():
        raise DataError(f"--data {root}: not a folder; without a preset, --data must be a folder of images")
    suffixes = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
    first = next((p for p in sorted(root.rglob("*")) if p.suffix.lower() in suffixes and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts)), None)
    if first is None:
        raise DataError(f"no .png/.jpg/.jpeg images under {root}; check --data")
    try:
        with Image.open(first) as im:
            w, h = im.size
            channels = 1 if im.mode in ("1", "L", "I;16", "I", "F") else 3
    except OSError as e:
        raise DataError(f"cannot read {first}: {e}") from None
    n_bits = next((int(o.split("=", 1)[1]) for o in overrides if o.startswith("data.n_bits=")), 8)
    name, size, cfg = preset_for_images(channels, h, w, n_bits)
    log.info("no preset given: %s is %dx%d with %d channel(s); using the %s architecture at %dx%d "
             "(every image centre-cropped to a square and resized, bicubic), %d bits", first.name, w, h,
             channels, name, size, size, n_bits)
    return apply_overrides(cfg, overrides)


def cmd_eval(args) -> int:
    import torch

    from ..api import load_run
    from ..evaluation import evaluate_bpd
    from ..training.checkpoint import atomic_write_bytes
    from ..training.environment import resolve_device
    from ..training.trainer import load_data

    device = resolve_device(args.device)
    model = load_run(args.run, device)
    cfg = model.config
    if args.limit is not None:
        cfg.data.test_limit = args.limit
    test = load_data(cfg, "test")
    images = test.images
    seed = cfg.train.seed if args.seed is None else args.seed
    res = evaluate_bpd(model, images, args.k, args.batch_size, seed=seed, device=device)
    res["dataset"] = test.name
    mismatched = 0
    from ..models import FlowVAE

    if isinstance(model, FlowVAE):
        # Exact round trip: encode with the posterior mean and the exact v, decode, compare uint8.
        x = images[: min(len(images), 256)].to(device)
        with torch.no_grad():
            z, v = model.encode(x)
            xr = model.decode(z, v)
            expected = model.from_bins(model.to_bins(x))
        mismatched = int((xr != expected).sum())
        res.update(roundtrip_images=len(x), roundtrip_mismatched_pixels=mismatched)
    from ..models import BTCVAE, MultiStage

    recon_lines = []
    if isinstance(model, (BTCVAE, MultiStage)):
        from ..evaluation import reconstruction_quality

        rq = reconstruction_quality(model, images, seed=seed, device=device)
        res["reconstruction"] = rq
        mse = rq["mse"] if isinstance(rq["mse"], dict) else {"mean image": rq["mse"]}
        recon_lines = [f"reconstruction from the factors: {rq['recon_bpd']:.4f} bits/dim (-log p(x|c)), MSE "
                       + ", ".join(f"{k} {v:.5f}" for k, v in mse.items())]
    atomic_write_bytes(Path(args.run) / "eval.json", json.dumps(res, indent=2).encode())
    _emit(args, res, [
        f"{test.name}: {res['n']} images, K = {res['k']} posterior samples",
        f"bits/dim, negative ELBO (paper's figure): {res['elbo_bpd']:.4f}",
        f"bits/dim, importance-weighted bound:      {res['iw_bpd']:.4f}",
        f"KL(q(z|x) || p(z)), nats:                 {res['kl']:.3f}",
    ] + ([f"round trip on {res['roundtrip_images']} images: "
          f"{'exact' if mismatched == 0 else f'{mismatched} pixels differ'}"] if "roundtrip_images" in res else []))
    return 0 if mismatched == 0 else 1


def cmd_sample(args) -> int:
    import torch

    from ..api import load_run
    from ..imaging import save_grid
    from ..training.environment import resolve_device

    device = resolve_device(args.device)
    model = load_run(args.run, device)
    out = Path(args.out) if args.out else Path(args.run) / "samples"
    seed = model.config.train.seed if args.seed is None else args.seed
    paths = []
    for t in args.temperature:
        gen = torch.Generator(device=device).manual_seed(seed)
        imgs = model.sample(args.num, temperature=t, z_temperature=args.z_temperature, generator=gen)
        paths.append(str(save_grid(imgs.cpu(), out / f"samples_t{t:.2f}.png", nrow=8,
                                   scale=max(1, 64 // model.cfg.image_size))))
    _emit(args, {"files": paths, "temperatures": args.temperature, "z_temperature": args.z_temperature},
          [f"wrote {p}" for p in paths])
    return 0


def _load_for_eval(args):
    from ..api import load_run
    from ..errors import ConfigError
    from ..models import FlowVAE
    from ..training.environment import resolve_device

    device = resolve_device(args.device)
    model = load_run(args.run, device)
    if not isinstance(model, FlowVAE):
        raise ConfigError(f"flowvae {args.command} works on the flow models (global code z, local code v); "
                          f"{args.run} holds a {model.cfg.kind!r} model")
    seed = model.config.train.seed if args.seed is None else args.seed
    return model, device, seed


def cmd_switch(args) -> int:
    import torch

    from ..imaging import save_grid
    from ..training.trainer import load_data

    model, device, seed = _load_for_eval(args)
    test = load_data(model.config, "test")
    g = torch.Generator().manual_seed(seed)
    n = len(test)
    if args.same_class:
        if test.labels is None:
            from ..errors import DataError
            raise DataError(f"{test.name} has no labels, so --same-class cannot pair images")
        first = torch.randperm(n, generator=g)[: args.pairs]
        second = []
        for i in first.tolist():
            same = (test.labels == test.labels[i]).nonzero().flatten()
            same = same[same != i]
            second.append(int(same[torch.randint(len(same), (1,), generator=g)]))
        second = torch.tensor(second)
    else:
        perm = torch.randperm(n, generator=g)
        first, second = perm[: args.pairs], perm[args.pairs: 2 * args.pairs]
    x1, x2 = test.images[first].to(device), test.images[second].to(device)
    grid = model.switch(x1, x2).cpu()
    exact = bool(torch.equal(grid[:, 0], x1.cpu()) and torch.equal(grid[:, 2], x2.cpu()))
    out = Path(args.out) if args.out else Path(args.run) / "switch.png"
    save_grid(grid.flatten(0, 1), out, nrow=8 if args.pairs % 2 == 0 else 4, scale=max(1, 64 // model.cfg.image_size))
    res = {"file": str(out), "pairs": args.pairs, "same_class": args.same_class, "diagonal_exact": exact,
           "first": first.tolist(), "second": second.tolist()}
    _emit(args, res, [f"wrote {out}: {args.pairs} pairs, each (v1,z1) (v1,z2) (v2,z2) (v2,z1); "
                      f"real images reproduced exactly: {exact}"])
    return 0 if exact else 1


def cmd_interpolate(args) -> int:
    import torch

    from ..imaging import save_grid
    from ..training.trainer import load_data

    model, device, seed = _load_for_eval(args)
    test = load_data(model.config, "test")
    if args.index is None:
        i, j = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))[:2].tolist()
    else:
        i, j = args.index
    alphas = [a / (args.rows - 1) for a in range(args.rows)] if args.rows > 1 else [0.0]
    betas = [b / (args.cols - 1) for b in range(args.cols)] if args.cols > 1 else [0.0]
    x1, x2 = test.images[i:i + 1].to(device), test.images[j:j + 1].to(device)
    grid = model.interpolate(x1, x2, alphas, betas, spherical=args.spherical).cpu()
    # Corners that use the weights 0 (or 1) for both codes must be the real images.
    exact = bool(torch.equal(grid[0, 0], x1[0].cpu())
                 and (alphas[-1] != 1.0 or betas[-1] != 1.0 or torch.equal(grid[-1, -1], x2[0].cpu())))
    out = Path(args.out) if args.out else Path(args.run) / "interpolation.png"
    save_grid(grid.flatten(0, 1), out, nrow=len(betas), scale=max(1, 64 // model.cfg.image_size))
    res = {"file": str(out), "images": [i, j], "alphas": alphas, "betas": betas, "spherical": args.spherical,
           "corners_exact": exact}
    _emit(args, res, [f"wrote {out}: rows alpha (z) {alphas}, columns beta (v) {len(betas)} values; "
                      f"corners are the real test images {i} and {j}: {exact}"])
    return 0 if exact else 1


def cmd_probe(args) -> int:
    from ..evaluation.probe import linear_probe
    from ..training.checkpoint import atomic_write_bytes
    from ..training.trainer import load_data

    model, device, seed = _load_for_eval(args)
    cfg = model.config
    cfg.data.train_limit, cfg.data.test_limit = args.train_limit, args.test_limit
    train_d, test_d = load_data(cfg, "train"), load_data(cfg, "test")
    if train_d.labels is None or test_d.labels is None:
        from ..errors import DataError
        raise DataError(f"{train_d.name} has no labels: a linear probe needs class labels")
    ztr, vtr = model.features(train_d.images)
    zte, vte = model.features(test_d.images)
    rows = {}
    feats = {"pixels": (train_d.images.flatten(1).float(), test_d.images.flatten(1).float()), "v": (vtr, vte)}
    if ztr is not None:
        feats = {"z": (ztr, zte), **feats}
    for name, (a, b) in feats.items():
        rows[name] = linear_probe(a, train_d.labels, b, test_d.labels, C=args.C, protocol=args.protocol, seed=seed)
        log.info("probe %s: %.2f%% test accuracy", name, 100 * rows[name]["accuracy"])
    res = {"dataset": test_d.name, "protocol": args.protocol, "results": rows}
    atomic_write_bytes(Path(args.run) / "probe.json", json.dumps(res, indent=2).encode())
    lines = [f"linear probe on {test_d.name} ({args.protocol} protocol; {rows['v']['n_train']} train / "
             f"{rows['v']['n_test']} test images)", "| features | dim | C | test accuracy |", "| --- | --- | --- | --- |"]
    lines += [f"| {k} | {r['dim']} | {r['C']:g} | {100 * r['accuracy']:.2f}% |" for k, r in rows.items()]
    (Path(args.run) / "probe.md").write_text("\n".join(lines) + "\n")
    _emit(args, res, lines)
    return 0


def cmd_fid(args) -> int:
    import torch

    from ..evaluation.fid import InceptionFeatures, fid_kid
    from ..training.checkpoint import atomic_write_bytes
    from ..training.trainer import load_data

    model, device, seed = _load_for_eval(args)
    features = InceptionFeatures(args.inception, device)  # a missing network file fails before sampling
    cfg = model.config
    cfg.data.test_limit = args.num
    real = load_data(cfg, "test").images
    gen = torch.Generator(device=device).manual_seed(seed)
    from ..progress import progress

    fake = torch.cat([model.sample(min(256, args.num - i), args.temperature, generator=gen).cpu()
                      for i in progress(range(0, args.num, 256), total=-(-args.num // 256), desc="sampling")])
    res = fid_kid(real, fake, features)
    res.update(temperature=args.temperature, dataset=cfg.data.dataset)
    atomic_write_bytes(Path(args.run) / f"fid_t{args.temperature:.2f}.json", json.dumps(res, indent=2).encode())
    _emit(args, res, [f"FID {res['fid']:.2f}, KID {res['kid_mean']:.4f} +- {res['kid_std']:.4f} "
                      f"({res['n_fake']} samples at temperature {args.temperature} vs {res['n_real']} test images; "
                      f"Inception sha256 {res['inception_sha256'][:12]})"])
    return 0


def cmd_check(args) -> int:
    from ..evaluation.check import check_model
    from ..training.checkpoint import atomic_write_bytes
    from ..training.trainer import load_data

    model, device, seed = _load_for_eval(args)
    cfg = model.config
    cfg.data.test_limit = args.limit
    images = load_data(cfg, "test").images.to(device)
    res = check_model(model, images, seed=seed)
    atomic_write_bytes(Path(args.run) / "check.json", json.dumps(res, indent=2).encode())
    lines = [f"{'ok  ' if c['ok'] else 'FAIL'}  {c['name']}: {c['detail']}" for c in res["checks"]]
    lines.append("all checks passed" if res["ok"] else "some checks FAILED")
    _emit(args, res, lines)
    return 0 if res["ok"] else 1


def _vector_latent_model(args):
    """A run's model that has a per-image vector latent (flow models with z, beta-TCVAE, multi-stage)."""
    from ..api import load_run
    from ..errors import ConfigError
    from ..models import BTCVAE, FlowVAE
    from ..training.environment import resolve_device

    device = resolve_device(args.device)
    model = load_run(args.run, device)
    if not (isinstance(model, BTCVAE) or (isinstance(model, FlowVAE) and model.uses_z)):
        raise ConfigError(f"flowvae {args.command} needs a model with a per-image vector latent (flowvae, z_prior, "
                          f"btcvae, multistage); {args.run} holds a {model.config.model.kind!r} model")
    return model, device


def cmd_traverse(args) -> int:
    from ..errors import ConfigError
    from ..imaging import save_grid
    from ..models import BTCVAE
    from ..training.trainer import load_data

    model, device = _vector_latent_model(args)
    if args.steps < 2:
        raise ConfigError(f"--steps must be at least 2, got {args.steps}")
    test = load_data(model.config, "test")
    values = [-args.span + 2 * args.span * i / (args.steps - 1) for i in range(args.steps)]
    files = []
    for i in args.index:
        if not 0 <= i < len(test):
            raise ConfigError(f"--index {i} is outside the test set (0..{len(test) - 1})")
        x = test.images[i:i + 1].to(device)
        if isinstance(model, BTCVAE):
            grid = model.traverse(x, values, args.dims)
        else:
            grid = model.traverse(x, values, args.dims, local=args.local)
        if args.out and len(args.index) == 1:
            out = Path(args.out)
        else:
            base = Path(args.out) if args.out else Path(args.run) / "traverse.png"
            out = base if len(args.index) == 1 else base.with_name(f"{base.stem}_{i}{base.suffix}")
        save_grid(grid.flatten(0, 1).cpu(), out, nrow=len(values), scale=max(1, 64 // model.config.model.image_size))
        files.append(str(out))
    dims = args.dims or list(range(model.config.model.d_z))
    res = {"files": files, "index": args.index, "dims": dims, "values": values,
           "local": None if isinstance(model, BTCVAE) else args.local}
    _emit(args, res, [f"wrote {f}: rows = latent dimensions {dims}, columns = values {values[0]:g}..{values[-1]:g}"
                      for f in files])
    return 0


def cmd_disentangle(args) -> int:
    import numpy as np
    import torch

    from ..data.dsprites import load_dsprites
    from ..evaluation import disentanglement as D
    from ..models import BTCVAE
    from ..progress import progress
    from ..training.checkpoint import atomic_write_bytes

    model, device = _vector_latent_model(args)
    cfg = model.config
    seed = cfg.train.seed if args.seed is None else args.seed
    root = args.data or (cfg.data.root if cfg.data.dataset == "dsprites" else None)
    data = load_dsprites(root, split="all", variant="grid")
    images = data.to_image_data().images
    if tuple(images.shape[1:]) != (cfg.model.in_channels, cfg.model.image_size, cfg.model.image_size):
        from ..errors import DataError
        raise DataError(f"dSprites images are {list(images.shape[1:])}, this model takes "
                        f"[{cfg.model.in_channels}, {cfg.model.image_size}, {cfg.model.image_size}]")
    codes = []
    with torch.no_grad():
        for i in progress(range(0, len(images), 512), total=-(-len(images) // 512), desc="codes"):
            x = images[i:i + 512].to(device)
            mu = model.encode(x) if isinstance(model, BTCVAE) else model.posterior(model.to_bins(x))[0]
            codes.append(mu.float().cpu())
    codes = torch.cat(codes).numpy().astype(np.float64)
    factors = data.factors.numpy()
    res = {"dataset": data.name, "n": len(codes), "d_z": codes.shape[1], "seed": seed,
           "factor_names": list(data.factor_names)}
    nt, ne = args.num_train, args.num_test
    for name in args.metrics:
        log.info("computing %s", name)
        if name == "mig":
            res["mig"] = D.mig(codes, factors, num_train=nt, seed=seed)
        elif name == "dci":
            res["dci"] = D.dci(codes, factors, num_train=nt, num_test=ne, seed=seed)
        elif name == "sap":
            res["sap"] = D.sap_score(codes, factors, num_train=nt, num_test=ne, seed=seed)
        elif name == "factorvae":
            res["factorvae"] = D.factor_vae_score_from_codes(codes, factors, seed=seed, num_train=nt, num_eval=ne)
        else:
            res["betavae"] = D.beta_vae_score_from_codes(codes, factors, seed=seed, num_train=nt, num_eval=ne)
    res = json.loads(json.dumps(res, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    atomic_write_bytes(Path(args.run) / "disentanglement.json", json.dumps(res, indent=2).encode())
    lines = [f"{data.name}: {len(codes)} images, {codes.shape[1]} latent dimensions"]
    for name in args.metrics:
        r = res[name]
        scalars = {k: v for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        lines.append(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in scalars.items()))
    _emit(args, res, lines)
    return 0


def cmd_report(args) -> int:
    from ..report import write_report

    path = write_report(args.run, args.out)
    _emit(args, {"file": str(path)}, [f"wrote {path}"])
    return 0


def cmd_compare(args) -> int:
    from ..report import compare_runs

    path = compare_runs(args.runs, args.out)
    _emit(args, {"file": str(path), "runs": args.runs}, [f"wrote {path}"])
    return 0


def cmd_presets(args) -> int:
    import torch

    from ..config import PRESETS
    from ..models import create_model

    rows = {}
    for name, make in PRESETS.items():
        cfg = make()
        with torch.device("meta"):
            n = sum(p.numel() for p in create_model(cfg).parameters())
        rows[name] = {"parameters": n, "dataset": cfg.data.dataset, "image": [cfg.model.in_channels, cfg.model.image_size]}
    _emit(args, rows, [f"{k:20s} {v['parameters']:>12,d} parameters  {v['dataset']}" for k, v in rows.items()])
    return 0


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "sample": cmd_sample, "switch": cmd_switch,
            "interpolate": cmd_interpolate, "probe": cmd_probe, "fid": cmd_fid, "check": cmd_check,
            "report": cmd_report, "compare": cmd_compare, "presets": cmd_presets, "traverse": cmd_traverse,
            "disentangle": cmd_disentangle}


def main(argv: list[str] | None = None) -> int:
    """Run the ``flowvae`` command line; returns the exit status (0 success, 1 failure, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    level = logging.WARNING if getattr(args, "quiet", False) else logging.INFO
    from ..progress import set_bars

    set_bars(sys.stderr.isatty() and not getattr(args, "quiet", False))
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    from ..training.environment import tune_cpu_allocator

    tune_cpu_allocator()  # fewer page faults per step on CPUs; a no-op off glibc
    try:
        return COMMANDS[args.command](args)
    except FlowVAEError as e:
        print(f"flowvae {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"flowvae {args.command}: interrupted", file=sys.stderr)
        return 1
    except OSError as e:  # an output file or folder that cannot be written: a user problem, one line
        print(f"flowvae {args.command}: error: {e.strerror or e}: {e.filename or ''}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
