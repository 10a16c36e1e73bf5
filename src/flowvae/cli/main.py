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
import sys
from pathlib import Path

from ..errors import FlowVAEError

log = logging.getLogger("flowvae")


def _common(p: argparse.ArgumentParser, seed: bool = True) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (CUDA when present) [default: auto]")
    if seed:
        p.add_argument("--seed", type=int, default=None, help="random seed [default: the config's train.seed, 0]")
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
    p.add_argument("config", metavar="PRESET_OR_CONFIG", help=f"preset ({', '.join(PRESETS)}) or a YAML/JSON config file")
    p.add_argument("--run", required=True, metavar="DIR", help="run folder to write (created if needed)")
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
    if args.resume and (run / "config.yaml").is_file() and args.config not in ("-", ""):
        from ..config import apply_overrides, load_config
        cfg = apply_overrides(load_config(run / "config.yaml"), overrides)
    else:
        cfg = resolve(args.config, overrides)
    res = train(cfg, run, resume=args.resume, progress=args.progress)
    _emit(args, {"run": str(run), **res},
          [f"run folder: {run}", f"steps: {res['step']}",
           f"test bits/dim (negative ELBO, k={res['test_k']}, {res['test_n']} images): {res['test_elbo_bpd']:.4f}"])
    return 0


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
    # Exact round trip: encode with the posterior mean and the exact v, decode, compare uint8.
    x = images[: min(len(images), 256)].to(device)
    with torch.no_grad():
        z, v = model.encode(x)
        xr = model.decode(z, v)
        expected = model.from_bins(model.to_bins(x))
    mismatched = int((xr != expected).sum())
    res.update(roundtrip_images=len(x), roundtrip_mismatched_pixels=mismatched, dataset=test.name)
    atomic_write_bytes(Path(args.run) / "eval.json", json.dumps(res, indent=2).encode())
    _emit(args, res, [
        f"{test.name}: {res['n']} images, K = {res['k']} posterior samples",
        f"bits/dim, negative ELBO (paper's figure): {res['elbo_bpd']:.4f}",
        f"bits/dim, importance-weighted bound:      {res['iw_bpd']:.4f}",
        f"KL(q(z|x) || p(z)), nats:                 {res['kl']:.3f}",
        f"round trip on {len(x)} images: {'exact' if mismatched == 0 else f'{mismatched} pixels differ'}",
    ])
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


def cmd_presets(args) -> int:
    import torch

    from ..config import PRESETS
    from ..models import FlowVAE

    rows = {}
    for name, make in PRESETS.items():
        cfg = make()
        with torch.device("meta"):
            n = sum(p.numel() for p in FlowVAE(cfg.model, cfg.data.n_bits).parameters())
        rows[name] = {"parameters": n, "dataset": cfg.data.dataset, "image": [cfg.model.in_channels, cfg.model.image_size]}
    _emit(args, rows, [f"{k:14s} {v['parameters']:>12,d} parameters  {v['dataset']}" for k, v in rows.items()])
    return 0


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "sample": cmd_sample, "presets": cmd_presets}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    level = logging.WARNING if getattr(args, "quiet", False) else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    try:
        return COMMANDS[args.command](args)
    except FlowVAEError as e:
        print(f"flowvae {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"flowvae {args.command}: interrupted", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
