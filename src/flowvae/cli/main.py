"""The ``flowvae`` command line.

Conventions shared by every command: ``flowvae train PRESET_OR_CONFIG --run DIR [--steps N]
[--seed S] [--device cpu|cuda|auto] [--set key=value ...]``; commands that read a run folder take
it as their first argument (``flowvae eval RUN``); ``--json`` prints the results as one JSON
object on standard output.

Exit status: 0 success; 1 failure, printed as one line ``flowvae COMMAND: error: MESSAGE`` without a
traceback for every error caused by input; 2 usage error (argparse: an unknown option, a missing
argument, text where a number belongs); 128 + N when signal N stopped the command (130 SIGINT,
143 SIGTERM, 129 SIGHUP): ``train`` then finished its step and wrote a checkpoint of it first, and
``train --resume`` continues from there. Numeric options are range-checked after parsing
(:mod:`flowvae.cli.options`), so a number out of range (``eval -k 0``, ``sample -t nan``,
``fid -n 1``) is an error caused by input: exit status 1 with one line naming the option and its
range. Limits that depend on the run's data (``switch --pairs`` against the test-set size,
``interpolate --index`` / ``traverse --index`` against its indices) are checked once the data is
loaded, the same way. A command that does not apply to the run's model kind (``switch`` on a
model without a global and a local code) exits 1 with the model's one-line refusal
(:meth:`~flowvae.models.base.GenerativeModel.require`, "... does not apply to a 'KIND' model ...").

Layout: :mod:`~flowvae.cli.parser` holds every command's flags and defaults, :mod:`~flowvae.cli.options`
the range checks, :mod:`~flowvae.cli.folders` the preset chosen for ``train --data FOLDER``; the
``cmd_*`` functions here load the run and its data, call :mod:`flowvae.evaluation`, write the files
and print. They decide by the model's declared capabilities, never by its class.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import FlowVAEError, TrainingInterrupted
from .options import check_ranges
from .parser import build_parser

if TYPE_CHECKING:
    import torch

    from ..data import ImageData
    from ..models.base import GenerativeModel

__all__ = ["main", "build_parser", "COMMANDS"]

log = logging.getLogger("flowvae")


# ---------------------------------------------------------------------------------------------- helpers

def emit(args: argparse.Namespace, result: dict, lines: list[str]) -> None:
    """Print ``result`` as JSON with ``--json``, else ``lines``."""
    if getattr(args, "json", False):
        print(json.dumps(result))
    else:
        print("\n".join(lines))


def _write_json(path: Path, obj: Any) -> None:
    from ..safe_io import atomic_write as atomic_write_bytes

    atomic_write_bytes(path, json.dumps(obj, indent=2).encode())


def _root(args: argparse.Namespace) -> Path | None:
    """The run folder as the root of a default output path (a link out of it is refused); a path
    the user named with ``--out`` is theirs and written as given."""
    return None if getattr(args, "out", None) else Path(args.run)


def _scale(model: GenerativeModel) -> int:
    """Nearest-neighbour enlargement of saved grids, so small images stay visible (8x for 8 px)."""
    return max(1, 64 // model.cfg.image_size)


def load_for_eval(args: argparse.Namespace,
                   capability: str | None = None) -> tuple[GenerativeModel, torch.device, int]:
    """The run's model (eval mode, ``model.config`` attached), its device and the seed (``--seed``,
    else the run's ``train.seed``; commands without ``--seed`` get the run's).

    With ``capability``, a model without it is refused in one line before any data is read.
    """
    from ..devices import resolve_device
    from ..runs import load_run

    device = resolve_device(args.device)
    model = load_run(args.run, device)
    if capability is not None:
        model.require(capability, f"flowvae {args.command}")
    seed = getattr(args, "seed", None)
    return model, device, int(model.config.train.seed if seed is None else seed)


def command_data(args: argparse.Namespace, model: GenerativeModel, split: str | None = None, limit: int | None = None,
          whole: bool = False) -> ImageData:
    """The images a command reads: ``--data`` (else the run's own data, checked against its data
    record), split ``split`` (else ``--split``, else test), ``limit`` images (else the config's
    limit; ``whole``: all); see :func:`flowvae.runs.data.load_run_split`."""
    from ..runs.data import load_run_split

    split = split or getattr(args, "split", None) or "test"
    return load_run_split(model.config, args.run, split, getattr(args, "data", None), limit, whole=whole)


# ---------------------------------------------------------------------------------------------- commands

def cmd_train(args: argparse.Namespace) -> int:
    from ..config import apply_overrides, load_config
    from ..errors import ConfigError
    from ..presets import resolve
    from ..training import train
    from .folders import preset_for_folder

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
        cfg = apply_overrides(load_config(run / "config.yaml"), overrides)
    elif args.config is None:
        if args.data is None:
            raise ConfigError("give a preset or config file, or --data FOLDER to train on your own images "
                              "(see flowvae presets)")
        cfg = preset_for_folder(Path(args.data), overrides)
    else:
        cfg = resolve(args.config, overrides)
    if args.allow_changes and not args.resume:
        raise ConfigError("--allow-changes applies to --resume only")
    res = train(cfg, run, resume=args.resume, progress=args.progress, allow_changes=args.allow_changes)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return 0
    emit(args, {"run": str(run), **res},
          [f"run folder: {run}", f"steps: {res['step']}",
           f"test bits/dim (negative ELBO, k={res['test_k']}, {res['test_n']} images): {res['test_elbo_bpd']:.4f}"])
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ..evaluation.evaluate import evaluate_run

    model, device, seed = load_for_eval(args)
    features = None
    if args.recon_fid:
        from ..evaluation.sampling import inception_network

        model.require("reconstruction", "--recon-fid (FID of reconstructions from the factors; `flowvae fid` "
                                        "scores samples)")
        features = inception_network(args.inception, device)  # a missing network or package fails first
    test = command_data(args, model, limit=args.limit)
    res = evaluate_run(model, test.images, args.k, args.batch_size, seed=seed, device=device, dataset=test.name,
                       recon_features=features)
    _write_json(Path(args.run) / "eval.json", res)
    lines = [f"{test.name}: {res['n']} images, K = {res['k']} posterior samples",
             f"bits/dim, negative ELBO (paper's figure): {res['elbo_bpd']:.4f}",
             f"bits/dim, importance-weighted bound:      {res['iw_bpd']:.4f}",
             f"KL(q(z|x) || p(z)), nats:                 {res['kl']:.3f}"]
    mismatched = res.get("roundtrip_mismatched_pixels", 0)
    if "roundtrip_images" in res:
        lines.append(f"round trip on {res['roundtrip_images']} images: "
                     f"{'exact' if mismatched == 0 else f'{mismatched} pixels differ'}")
    if "reconstruction" in res:
        rq = res["reconstruction"]
        mse = rq["mse"] if isinstance(rq["mse"], dict) else {"mean image": rq["mse"]}
        lines.append(f"reconstruction from the factors: {rq['recon_bpd']:.4f} bits/dim (-log p(x|c)), MSE "
                     + ", ".join(f"{k} {v:.5f}" for k, v in mse.items()))
        if "fid" in rq:
            fids = rq["fid"] if "fid" not in rq["fid"] else {"mean image": rq["fid"]}
            lines.append("  FID / KID of the reconstructions against the test images: "
                         + ", ".join(f"{k} {f['fid']:.2f} / {f['kid_mean']:.4f}" for k, f in fids.items()))
    emit(args, res, lines)
    return 0 if mismatched == 0 else 1


def cmd_sample(args: argparse.Namespace) -> int:
    from ..evaluation.sampling import sample_grids_with_stats, sample_health, write_sample_stats
    from ..imaging import save_grid

    model, _, seed = load_for_eval(args)
    if args.precision != "fp32":
        model.require("bf16", "sampling with --precision bf16")
        model.set_precision(args.precision)
    out = Path(args.out) if args.out else Path(args.run) / "samples"
    grids = sample_grids_with_stats(model, args.temperature, args.num, global_temperature=args.z_temperature, seed=seed)
    paths = [str(save_grid(imgs, out / f"samples_t{t:.2f}.png", nrow=8, scale=_scale(model), root=_root(args)))
             for t, imgs, _ in grids]
    stats = [st for _, _, st in grids]
    write_sample_stats(out, list(zip(paths, stats)), root=_root(args))
    lines, failed = [], False
    for p, st in zip(paths, stats):
        lines.append(f"wrote {p}")
        level, detail = sample_health(st)
        failed |= level == "fail"
        if level != "ok":  # clamped or saturated samples of an unstable model, NaN of a broken one
            lines.append(f"  {'warning' if level == 'warn' else 'FAIL'}: {detail}")
    if failed:  # the grids are written to be looked at, but a script must not take them for samples
        lines.append("some samples are not finite: the model is broken (flowvae check RUN says where)")
    emit(args, {"files": paths, "temperatures": args.temperature, "z_temperature": args.z_temperature,
                 "stats": stats, "ok": not failed}, lines)
    return 1 if failed else 0


def cmd_switch(args: argparse.Namespace) -> int:
    from ..evaluation.switching import switch_metric, switch_pairs
    from ..imaging import save_grid
    from ..safe_io import atomic_write
    model, _, seed = load_for_eval(args, "global_local")
    test = command_data(args, model, "test")
    grid, info = switch_pairs(model, test, args.pairs, args.same_class, seed)
    out = Path(args.out) if args.out else Path(args.run) / "switch.png"
    save_grid(grid.flatten(0, 1), out, nrow=8 if args.pairs % 2 == 0 else 4, scale=_scale(model), root=_root(args))
    exact, metric = info["diagonal_exact"], None
    lines = [f"wrote {out}: {args.pairs} pairs, each (v1,z1) (v1,z2) (v2,z2) (v2,z1); real images reproduced exactly: {exact}"]
    if not args.no_metric and test.labels is None:  # the grid needs no labels; only the metric is left out
        log.warning("%s has no labels, so there is no switch metric (--no-metric skips it quietly)", test.name)
    elif not args.no_metric:
        train = command_data(args, model, "train", 5000)  # the classifier's training images, as for flowvae probe
        metric = switch_metric(model, train, test, args.metric_pairs, seed)
        atomic_write(Path(args.run) / "switch.json", json.dumps(metric, indent=2).encode(), root=args.run)
        lines.append(f"switch metric, {metric['pairs']} pairs of different classes: the decode of (v1,z2) is classified "
                     f"as z's class (image 2) {100 * metric['follow_z']:.1f}%, v's class (image 1) "
                     f"{100 * metric['follow_v']:.1f}%, neither {100 * metric['neither']:.1f}%"
                     f"{_saturated_text(metric['saturated'])}; linear classifier of "
                     f"pixels {100 * metric['test_accuracy']:.1f}% on real test images; wrote {Path(args.run) / 'switch.json'}")
    emit(args, {"file": str(out), **info, "metric": metric}, lines)
    return 0 if exact else 1


def _saturated_text(fraction: float | None) -> str:
    """The share of switched decodes whose inverse saturated (clamped noise), when there are any."""
    return f" (inverse saturated in {100 * fraction:.1f}%)" if fraction else ""


def cmd_interpolate(args: argparse.Namespace) -> int:
    from ..evaluation.interpolation import interpolation_grid
    from ..imaging import save_grid

    model, _, seed = load_for_eval(args, "global_local")
    grid, info = interpolation_grid(model, command_data(args, model), args.rows, args.cols, args.spherical,
                                    None if args.index is None else tuple(args.index), seed)
    out = Path(args.out) if args.out else Path(args.run) / "interpolation.png"
    save_grid(grid.flatten(0, 1), out, nrow=len(info["betas"]), scale=_scale(model), root=_root(args))
    (i, j), exact = info["images"], info["corners_exact"]
    emit(args, {"file": str(out), **info},
          [f"wrote {out}: rows alpha (z) {info['alphas']}, columns beta (v) {len(info['betas'])} values; "
           f"corners are the real test images {i} and {j}: {exact}"])
    return 0 if exact else 1


def cmd_probe(args: argparse.Namespace) -> int:
    from ..evaluation.representations import probe_run

    model, _, seed = load_for_eval(args)
    train_d = command_data(args, model, "train", args.train_limit)
    test_d = command_data(args, model, "test", args.test_limit, whole=True)
    res = probe_run(model, train_d, test_d, C=args.C, protocol=args.protocol, seed=seed)
    rows = res["results"]
    _write_json(Path(args.run) / "probe.json", res)
    lines = [f"linear probe on {test_d.name} ({args.protocol} protocol; {rows['pixels']['n_train']} train / "
             f"{rows['pixels']['n_test']} test images)", "| features | dim | C | test accuracy |", "| --- | --- | --- | --- |"]
    lines += [f"| {k} | {r['dim']} | {r['C']:g} | {100 * r['accuracy']:.2f}% |" for k, r in rows.items()]
    if "z_kl_nats" in res:
        lines.append(f"\nKL(q(z|x) || p(z)) on these test images: {res['z_kl_nats']:.3f} nats"
                     + (" (collapsed: z's probe reads the encoder, not the code the decoder uses)"
                        if res["z_collapsed"] else ""))
    from ..safe_io import atomic_write as atomic_write_bytes

    atomic_write_bytes(Path(args.run) / "probe.md", ("\n".join(lines) + "\n").encode(), root=args.run)
    emit(args, res, lines)
    return 0


def cmd_fid(args: argparse.Namespace) -> int:
    from ..evaluation.sampling import fid_run, inception_network

    model, device, seed = load_for_eval(args)
    features = inception_network(args.inception, device)  # a missing network file fails before sampling
    real = command_data(args, model, limit=args.num, whole=True)
    res = fid_run(model, real.images, args.num, args.temperature, seed, features)
    res["dataset"] = real.name
    _write_json(Path(args.run) / f"fid_t{args.temperature:.2f}.json", res)
    emit(args, res, [f"FID {res['fid']:.2f}, KID {res['kid_mean']:.4f} +- {res['kid_std']:.4f} "
                      f"({res['n_fake']} samples at temperature {args.temperature} vs {res['n_real']} test images; "
                      f"Inception sha256 {res['inception_sha256'][:12]}, resize {res['resize']})"])
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from ..evaluation.check import check_model

    model, device, seed = load_for_eval(args)
    res = check_model(model, command_data(args, model, limit=args.limit, whole=True).images.to(device), seed=seed)
    _write_json(Path(args.run) / "check.json", res)
    lines = [f"{'FAIL' if not c['ok'] else 'warn' if c.get('warning') else 'ok  '}  {c['name']}: {c['detail']}"
             for c in res["checks"]]
    warned = res.get("warnings") or []
    lines.append("some checks FAILED" if not res["ok"] else
                 f"all checks passed, with warnings: {', '.join(warned)}" if warned else "all checks passed")
    emit(args, res, lines)
    return 0 if res["ok"] else 1


def cmd_traverse(args: argparse.Namespace) -> int:
    from ..evaluation.traversal import traversal_grids, traversal_values
    from ..imaging import save_grid

    model, _, _ = load_for_eval(args, "vector_latent")
    values = traversal_values(args.span, args.steps)
    grids, info = traversal_grids(model, command_data(args, model), args.index, values, args.dims, args.local)
    files = []
    for i, grid in zip(args.index, grids):
        if args.out and len(args.index) == 1:
            out = Path(args.out)
        else:
            base = Path(args.out) if args.out else Path(args.run) / "traverse.png"
            out = base if len(args.index) == 1 else base.with_name(f"{base.stem}_{i}{base.suffix}")
        save_grid(grid.flatten(0, 1), out, nrow=len(values), scale=_scale(model), root=_root(args))
        files.append(str(out))
    emit(args, {"files": files, **info},
          [f"wrote {f}: rows = latent dimensions {info['dims']}, columns = values {values[0]:g}..{values[-1]:g}"
           for f in files])
    return 0


def cmd_disentangle(args: argparse.Namespace) -> int:
    from ..data import load_dsprites
    from ..evaluation.representations import disentangle_codes

    model, _, seed = load_for_eval(args, "vector_latent")
    cfg = model.config
    root = args.data or (cfg.data.root if cfg.data.dataset == "dsprites" else None)
    data = load_dsprites(root, split="all", variant="grid")
    res = disentangle_codes(model, data, args.metrics, args.num_train, args.num_test, seed)
    _write_json(Path(args.run) / "disentanglement.json", res)
    lines = [f"{data.name}: {res['n']} images, {res['d_z']} latent dimensions"]
    for name in args.metrics:
        scalars = {k: v for k, v in res[name].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        lines.append(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in scalars.items()))
    emit(args, res, lines)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ..report import write_report

    path = write_report(args.run, args.out)
    emit(args, {"file": str(path)}, [f"wrote {path}"])
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ..report import compare_runs

    path = compare_runs(args.runs, args.out)
    emit(args, {"file": str(path), "runs": args.runs}, [f"wrote {path}"])
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from .listing import preset_rows

    rows = preset_rows()
    lines = [f"{'preset':20s} {'kind':11s} {'parameters':>12s} {'refined Glow':>13s}  dataset"]
    lines += [f"{k:20s} {v['kind']:11s} {v['parameters']:>12,d} "
              f"{format(v['refined_glow_parameters'], ',d') if v['refined_glow_parameters'] else '-':>13s}  {v['dataset']}"
              for k, v in rows.items()]
    emit(args, rows, lines)
    return 0


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "sample": cmd_sample, "switch": cmd_switch,
            "interpolate": cmd_interpolate, "probe": cmd_probe, "fid": cmd_fid, "check": cmd_check,
            "report": cmd_report, "compare": cmd_compare, "presets": cmd_presets, "traverse": cmd_traverse,
            "disentangle": cmd_disentangle}

from .commands import command_modules  # noqa: E402 - after the cmd_* table they extend

for _module in command_modules():
    COMMANDS.update(_module.COMMANDS)


def main(argv: list[str] | None = None) -> int:
    """Run the ``flowvae`` command line; returns the exit status (0 success, 1 failure). Usage
    errors exit through argparse's ``SystemExit(2)``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    level = logging.WARNING if getattr(args, "quiet", False) else logging.INFO
    from ..progress import set_bars

    set_bars(sys.stderr.isatty() and not getattr(args, "quiet", False))
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    from ..devices import tune_cpu_allocator

    tune_cpu_allocator()  # fewer page faults per step on CPUs; a no-op off glibc
    try:
        check_ranges(args)
        return COMMANDS[args.command](args)
    except TrainingInterrupted as e:  # the checkpoint is written; 128 + N is the shell's "killed by signal N"
        print(f"flowvae {args.command}: {_one_line(e)}", file=sys.stderr)
        return 128 + e.signum
    except FlowVAEError as e:
        print(f"flowvae {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"flowvae {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader closed the pipe (`flowvae presets | head`): not an error of ours
        # Python would complain again when it flushes stdout at exit; point it at nothing instead.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as the shell reports a command the pipe ended
    except OSError as e:  # an output file or folder that cannot be written: a user problem, one line
        print(f"flowvae {args.command}: error: {e.strerror or e}: {e.filename or ''}", file=sys.stderr)
        return 1


def _one_line(e: BaseException) -> str:
    """The error's message on one line (a message with line breaks would break the one-line promise)."""
    return " ".join(str(e).split("\n")).strip()


if __name__ == "__main__":
    sys.exit(main())
