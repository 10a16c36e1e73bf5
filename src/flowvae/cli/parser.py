"""The argument parser of the ``flowvae`` command line: every command's flags and defaults.

The flags, defaults and help texts are those documented in ``docs/commands/*.md``. Numeric options
are declared with :func:`~flowvae.cli.options.number`, so their ranges are checked after parsing
(one-line error, exit status 1; see :mod:`flowvae.cli.main`).
"""

from __future__ import annotations

import argparse

from ..version import __version__
from .options import number

__all__ = ["build_parser"]

_METRICS = ["mig", "dci", "sap", "factorvae", "betavae"]


def common_options(p: argparse.ArgumentParser, seed: bool = True) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (CUDA when present) [default: auto]")
    if seed:
        number(p, "--seed", ge=0, default=None, help="random seed [default: the config's train.seed, 0]")
    output_options(p)


def output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the results as one JSON object on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")


def run_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="run folder")


def data_options(p: argparse.ArgumentParser, split: bool = True) -> None:
    """``--data PATH`` (and ``--split``) of a command that reads images (flowvae.runs.data.load_run_split)."""
    p.add_argument("--data", default=None, metavar="PATH",
                   help="read these images instead of the run's own data set: a folder or .zip of images, IDX "
                        "files, CIFAR-10 batches, ... (recognised as train --data recognises them; a set without "
                        "a test split gets its held-out one) [default: the data in the run's config.yaml]")
    if split:
        p.add_argument("--split", choices=["test", "train"], default="test",
                       help="the split of the data to read [default: test]")


def build_parser() -> argparse.ArgumentParser:
    """The ``flowvae`` parser, one subcommand per command (``flowvae COMMAND --help``)."""
    from ..presets import PRESETS

    parser = argparse.ArgumentParser(prog="flowvae", description="Global/local generative flows "
                                     "(Ma et al., ICLR 2021): train, evaluate, sample.")
    parser.add_argument("--version", action="version", version=f"flowvae {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train a model from a preset or a config file",
                       description="Train a model. Presets: " + ", ".join(PRESETS))
    p.add_argument("config", metavar="PRESET_OR_CONFIG", nargs="?", default=None,
                   help=f"preset ({', '.join(PRESETS)}) or a YAML/JSON config file; leave out with --data "
                        f"FOLDER to pick a preset from the images' size")
    p.add_argument("--run", "--run-dir", dest="run", required=True, metavar="DIR",
                   help="run folder to write (created if needed); under torchrun spell it --run-dir, "
                        "since torchrun reads --run as its own --run-path")
    number(p, "--steps", ge=0, default=None, help="number of optimizer steps [default: the preset's]")
    p.add_argument("--data", default=None, metavar="PATH", help="dataset files or image folder (sets data.root)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override config fields, e.g. --set train.lr=5e-4 model.d_z=32")
    p.add_argument("--resume", action="store_true", help="continue the run in --run from its newest valid checkpoint")
    p.add_argument("--allow-changes", action="store_true",
                   help="with --resume: continue with changed settings (e.g. --set train.grad_clip=1 after a "
                        "loss spike); the run is then no longer the same as an uninterrupted one")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar [default: when stderr is a terminal]")
    common_options(p)

    p = sub.add_parser("eval", help="test-set bits/dim (ELBO and importance-weighted bound) of a run",
                       description="Evaluate a run: negative ELBO and importance-weighted bound in bits/dim "
                                   "with K posterior samples, the KL in nats, the exact round-trip check (kinds "
                                   "with exact codes) and the reconstruction quality (kinds that reconstruct).")
    run_argument(p)
    number(p, "-k", "--k", ge=1, default=5, help="posterior samples per image [default: 5]")
    number(p, "--limit", ge=1, default=None, help="evaluate a seeded random subset of N test images, stratified by class")
    number(p, "--batch-size", ge=1, default=256, help="images x samples per batch [default: 256]")
    p.add_argument("--recon-fid", action="store_true",
                   help="also FID/KID of the reconstructions from the factors against the test images "
                        "(kinds that reconstruct: btcvae, multistage; needs flowvae[fid])")
    p.add_argument("--inception", default=None, metavar="PATH", help="Inception network file (with --recon-fid)")
    data_options(p)
    common_options(p)

    p = sub.add_parser("sample", help="PNG grids of samples at several temperatures",
                       description="Sample images. The temperature scales the standard deviation of the "
                                   "local (or only) latent; the global code (z of the flow models, beta of the "
                                   "UG-VAE, c of the multi-stage model) is drawn at --global-temperature "
                                   "(default 1), which kinds without a global code refuse.")
    run_argument(p)
    number(p, "-t", "--temperature", integer=False, ge=0, nargs="+", default=[0.7, 0.8, 0.9, 1.0],
           help="temperatures of the local code [default: 0.7 0.8 0.9 1.0]")
    number(p, "--z-temperature", "--global-temperature", dest="z_temperature", integer=False, ge=0, default=1.0,
           help="temperature of the global code's prior [default: 1]")
    number(p, "-n", "--num", ge=1, default=64, help="images per grid [default: 64]")
    p.add_argument("--out", default=None, help="output folder [default: RUN/samples]")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: the coupling networks in bfloat16 (faster; the inverse transforms stay float32, "
                        "the pixels differ slightly from fp32's) [default: fp32]")
    common_options(p)

    p = sub.add_parser("switch", help="swap the global codes of pairs of real test images (Figure 1)",
                       description="For pairs of test images, a 2x2 grid per pair of the decodes (v1,z1) (v1,z2) "
                                   "(v2,z2) (v2,z1): z is the posterior mean, v the exact local code, so the "
                                   "diagonal cells are the real images.")
    run_argument(p)
    number(p, "--pairs", ge=1, default=8, help="number of image pairs [default: 8]")
    p.add_argument("--same-class", action="store_true", help="pair images of the same class")
    p.add_argument("--out", default=None, help="PNG file [default: RUN/switch.png]")
    number(p, "--metric-pairs", ge=1, default=None,
           help="pairs of test images of different classes for the switch metric [default: 500, or all if fewer]")
    p.add_argument("--no-metric", action="store_true",
                   help="skip the switch metric (a linear classifier of pixels applied to the (v1,z2) decodes)")
    data_options(p, split=False)
    common_options(p)

    p = sub.add_parser("interpolate", help="2-D interpolation over z and v between two real images (eq. 8)",
                       description="Rows interpolate z (alpha), columns v (beta); corners are the real images.")
    run_argument(p)
    number(p, "--rows", ge=1, default=5, help="values of alpha in [0, 1] [default: 5]")
    number(p, "--cols", ge=1, default=11, help="values of beta in [0, 1] [default: 11]")
    p.add_argument("--spherical", action="store_true", help="spherical instead of linear interpolation")
    number(p, "--index", ge=0, nargs=2, default=None, metavar=("I", "J"),
           help="test-image indices of the two images [default: random]")
    p.add_argument("--out", default=None, help="PNG file [default: RUN/interpolation.png]")
    data_options(p)
    common_options(p)

    p = sub.add_parser("probe", help="linear-probe accuracy from z, v and raw pixels (Table 4)",
                       description="Linear SVM accuracy on the test set from the model's representations "
                                   "(z posterior mean, v, ...) and raw pixels. Features standardised; C by 3-fold "
                                   "CV on the training features.")
    run_argument(p)
    number(p, "--train-limit", ge=1, default=5000, help="training images for the probe [default: 5000]")
    number(p, "--test-limit", ge=1, default=None, help="test images [default: all]")
    number(p, "--C", integer=False, gt=0, default=None, help="fix the SVM's C instead of cross-validating it")
    p.add_argument("--protocol", choices=["standard", "authors"], default="standard",
                   help="standard (scaled LinearSVC, CV over C) or authors (SVC linear kernel, C=1, no scaling)")
    data_options(p, split=False)
    common_options(p)

    p = sub.add_parser("fid", help="FID and KID of samples against the test set",
                       description="FID/KID of model samples at --temperature against test images, with the "
                                   "Inception-v3 network of 2015-12-05 (pool3 features).")
    run_argument(p)
    number(p, "-n", "--num", ge=2, default=1000, help="generated and real images, at least 2 [default: 1000]")
    number(p, "-t", "--temperature", integer=False, ge=0, default=1.0,
           help="temperature of the local code [default: 1]")
    p.add_argument("--inception", default=None, metavar="PATH", help="Inception network file")
    data_options(p)
    common_options(p)

    p = sub.add_parser("check", help="verify a trained model: round trip, finite bounds, consistent inverses",
                       description="Check a run: finite weights, ActNorm initialised, every 1x1 convolution's "
                                   "inverse consistent with its weight, exact uint8 round trip and finite bits/dim "
                                   "on test images, finite samples. Exit status 1 if any check fails.")
    run_argument(p)
    number(p, "--limit", ge=1, default=64, help="test images to check [default: 64]")
    data_options(p)
    common_options(p)

    p = sub.add_parser("report", help="write a self-contained HTML report of a run",
                       description="One HTML page per run: config, bits/dim and KL curves, sample/switch/"
                                   "interpolation grids, probe and FID/KID tables, parameters, hardware, wall time.")
    run_argument(p)
    p.add_argument("--out", default=None, help="HTML file [default: RUN/report.html]")
    output_options(p)

    p = sub.add_parser("compare", help="put several runs side by side in one HTML page",
                       description="A table (kind, parameters, steps, final test bits/dim, KL, wall time, probe "
                                   "accuracies) and the test bits/dim curves of several runs.")
    p.add_argument("runs", metavar="RUN", nargs="+", help="run folders")
    p.add_argument("--out", required=True, help="HTML file to write")
    output_options(p)

    p = sub.add_parser("traverse", help="latent traversal grid: one latent dimension changed at a time",
                       description="From the posterior mean of one test image, set one dimension of the vector "
                                   "latent (z of the flow models and the VAE, c of the beta-TCVAE and multi-stage "
                                   "models) to evenly spaced values, one row per dimension.")
    run_argument(p)
    number(p, "--index", ge=0, nargs="+", default=[0], help="image indices (of --split), one grid each [default: 0]")
    number(p, "--dims", ge=0, nargs="+", default=None, help="latent dimensions [default: all]")
    number(p, "--range", integer=False, gt=0, default=2.0, dest="span", metavar="R",
           help="values run from -R to R [default: 2, in prior standard deviations for N(0, I) latents]")
    number(p, "--steps", ge=2, default=9, help="values per dimension, at least 2 [default: 9]")
    p.add_argument("--local", choices=["keep", "zero"], default="keep",
                   help="kinds with a local code v: decode with the image's own v (keep) or v = 0 (zero) "
                        "[default: keep]")
    p.add_argument("--out", default=None, help="PNG file [default: RUN/traverse.png; RUN/traverse_I.png for several]")
    data_options(p)
    common_options(p, seed=False)

    p = sub.add_parser("disentangle", help="MIG, DCI, SAP, FactorVAE and BetaVAE scores on the dSprites grid",
                       description="Disentanglement metrics of a run's vector latent (posterior means) against "
                                   "dSprites' ground-truth factors, on the full factor grid (46,080 images), "
                                   "with disentanglement_lib's settings. Writes RUN/disentanglement.json.")
    run_argument(p)
    p.add_argument("--data", default=None, metavar="PATH",
                   help="dSprites folder or dsprites_downsampled.npz [default: the run's data.root or ../shared/data/dsprites]")
    p.add_argument("--metrics", nargs="+", default=list(_METRICS), choices=_METRICS,
                   help="metrics to compute [default: all]")
    number(p, "--num-train", ge=1, default=10000, help="training points of each metric [default: 10000]")
    number(p, "--num-test", ge=1, default=5000, help="evaluation points of each metric [default: 5000]")
    common_options(p)

    p = sub.add_parser("presets", help="list the presets and their parameter counts")
    p.add_argument("--json", action="store_true", help="print as JSON")

    from .commands import command_modules

    for module in command_modules():
        module.add_parsers(sub)
    return parser
