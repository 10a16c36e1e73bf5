"""Time to quality on a CPU (issue 33): test bits/dim after equal wall-clock budgets, for our presets
of each kind that models images against a multi-scale Glow built from normflows blocks of about the
same parameter count, in one invocation so that every job sees the same machine.

Each job is a process of its own, pinned to one core (``os.sched_setaffinity``) with one torch thread
(``--threads``); jobs run side by side, as many at a time as ``--cores``. A job trains for the
largest budget; when its wall time (set-up included: data, model, initialisation) crosses a budget
it copies its weights, and the copy's time is left out of the clock. After training, every copy is
scored on the same ``--test-images`` test images (a seeded, class-stratified subset: the images
``flowvae train`` evaluates with ``train.eval_images``; negative ELBO for the kinds with a global code,
exact likelihood for the flows; uniform dequantisation with a fixed seed; bits/dim). A job of ours
with Polyak averaging (``train.ema_decay``) is scored on the averaged weights, which its runs report,
and its copies of the last update's weights are scored beside them (``test_bpd_last_update``): the
averaging's gain along one trajectory.

Jobs:

* ``KIND:PRESET[:section.field=value]...`` trains one of ours through ``flowvae.train`` (``flowvae:mnist``,
  ``glow:mnist``, ``vae:mnist-vae``): the preset, ``model.kind=KIND``, the overrides after it, and no
  periodic evaluation, probes, switch score or sample grids (they would take training time);
* ``normflows[:width=W]`` trains normflows' ``MultiscaleFlow`` of ``GlowBlock`` s (two levels of 16
  steps, as normflows' own Glow example; width chosen to match ``--match``'s parameter count unless
  given), Adamax 1e-3, batch 64, uniform dequantisation (``pip install normflows==1.7.3``).

Usage::

    python benchmarks/time_to_quality.py --data mnist --budgets 300 600 1200 \
        --jobs flowvae:mnist normflows --out ttq.json --plot docs/assets/ttq-mnist.svg

Prints a table (bits/dim at each budget, steps done, parameters, and for our flow kinds how many of
256 samples at temperature 1 and 0.7 saturated the inverse flow at the last budget) and writes JSON
(and an SVG plot of test bits/dim against wall time).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

NORMFLOWS_LEVELS, NORMFLOWS_STEPS = 2, 16
SATURATION_SAMPLES = 256


def _load(data: str, split: str, limit: int | None = None) -> torch.Tensor:
    """uint8 images ``[N, C, H, W]`` of the shared data set ``data``."""
    from flowvae.data import load_dataset, shared_data_dir
    from flowvae.data.base import subset_indices

    root = shared_data_dir() / {"mnist": "mnist", "cifar10-jpeg": "cifar10-jpeg"}[data]
    dataset = load_dataset(data, split, root=root)
    if not limit or limit >= len(dataset.images):
        return dataset.images
    # The seeded, class-stratified subset that `flowvae train` evaluates on (train.eval_images): the
    # first 2,000 MNIST test images are 0.04 bits/dim easier than the whole test set (docs/speed.md).
    return dataset.images[subset_indices(len(dataset.images), limit, dataset.labels)]


class _Marks:
    """Copies of the weights as the wall time crosses each budget (copy time left out of the clock)."""

    def __init__(self, budgets: list[float], out: Path):
        self.budgets, self.out, self.t0, self.paused = sorted(budgets), out, time.time(), 0.0
        self.taken: list[dict[str, Any]] = []
        self.pending: dict[str, str] = {}

    def wall(self) -> float:
        return time.time() - self.t0 - self.paused

    def due(self) -> bool:
        return len(self.taken) < len(self.budgets) and self.wall() >= self.budgets[len(self.taken)]

    def save(self, state_dict: dict[str, torch.Tensor], name: str) -> None:
        """Copy further weights at the budget the next :meth:`take` marks (copy time left out too)."""
        t = time.time()
        budget = self.budgets[len(self.taken)]
        path = self.out / f"weights_{name}_{budget:g}.pt"
        torch.save({k: v.detach().clone() for k, v in state_dict.items()}, path)
        self.pending[f"file_{name}"] = str(path)
        self.paused += time.time() - t

    def take(self, state_dict: dict[str, torch.Tensor], step: int,
             last_update: dict[str, torch.Tensor] | None = None) -> None:
        t = time.time()
        budget = self.budgets[len(self.taken)]
        path = self.out / f"weights_{budget:g}.pt"
        torch.save({k: v.detach().clone() for k, v in state_dict.items()}, path)
        mark = {"budget_s": budget, "wall_s": round(self.wall(), 2), "step": step, "file": str(path), **self.pending}
        self.pending = {}
        if last_update is not None:
            mark["file_last_update"] = str(self.out / f"weights_last_update_{budget:g}.pt")
            torch.save({k: v.detach().clone() for k, v in last_update.items()}, mark["file_last_update"])
        self.taken.append(mark)
        self.paused += time.time() - t

    def done(self) -> bool:
        return len(self.taken) == len(self.budgets)


def _ours(job: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Train one of our kinds (``KIND:PRESET[:section.field=value]...``) and score its copies."""
    from flowvae.evaluation.bpd import evaluate_bpd
    from flowvae.models import create_model
    from flowvae.presets import resolve
    from flowvae.training import Callback, train
    from flowvae.training.averaging import WeightAverage

    kind, preset, *extra = job.split(":")
    marks = _Marks(args.budgets, out)
    also: dict[float, WeightAverage] = {}

    class Snap(Callback):
        def on_step(self, state: Any, metrics: dict[str, float]) -> None:
            for d in args.also_ema:  # averages beside the run's own, along the same trajectory
                also[d] = also.get(d) or WeightAverage(state.model, d)
                also[d].update(state.model)
            if marks.due():
                for d, avg in also.items():
                    marks.save(avg.avg, f"ema{d:g}")
            if marks.due() and state.averaged is not None:  # the weights the run reports, and the last update's
                marks.take(state.averaged, state.step, last_update=state.model.state_dict())
            elif marks.due():
                marks.take(state.model.state_dict(), state.step)

    sets = [f"model.kind={kind}", f"train.time_limit_s={max(args.budgets) + 5}", "train.eval_every=1000000000",
            "train.probe_images=0", "train.switch_pairs=0", "train.sample_temperatures=[]", "train.loggers=[]",
            f"train.num_threads={args.threads}", "train.eval_images=16", "train.steps=100000000",
            "train.checkpoint_every=1000000000", *extra]
    cfg = resolve(preset, sets)
    marks.t0 = time.time()
    train(cfg, out / "run", progress=False, callbacks=[Snap()])
    model = create_model(cfg)
    test = _load(args.data, "test", args.test_images)
    points = []
    model.eval()
    for m in marks.taken:
        extra = {}
        if "file_last_update" in m:
            model.load_state_dict(torch.load(m["file_last_update"], weights_only=True))
            extra["test_bpd_last_update"] = evaluate_bpd(model, test, 1, seed=0)["elbo_bpd"]
        for d in args.also_ema:
            model.load_state_dict(torch.load(m[f"file_ema{d:g}"], weights_only=True))
            extra[f"test_bpd_ema{d:g}"] = evaluate_bpd(model, test, 1, seed=0)["elbo_bpd"]
        model.load_state_dict(torch.load(m["file"], weights_only=True))
        points.append({**m, "test_bpd": evaluate_bpd(model, test, 1, seed=0)["elbo_bpd"], **extra, **_saturation(model)})
    params = sum(p.numel() for p in model.parameters())
    return {"job": job, "params": params, "points": points}


def _saturation(model: Any) -> dict[str, int]:
    """Of :data:`SATURATION_SAMPLES` samples at temperature 1 and at 0.7 (fixed seed), how many
    saturated the inverse flow (``flowvae check``'s count); empty for kinds without the count."""
    from flowvae.evaluation.sampling import draw_samples

    out = {}
    for t in (1.0, 0.7):
        _, stats = draw_samples(model, SATURATION_SAMPLES, t, generator=torch.Generator().manual_seed(0))
        if stats.get("saturated_samples") is not None:
            out[f"saturated_t{t:g}"] = int(stats["saturated_samples"])
    return out


def _normflows_model(shape: tuple[int, int, int], width: int) -> Any:
    import normflows as nf

    c, h, w = shape
    levels = NORMFLOWS_LEVELS
    q0, merges, flows = [], [], []
    for i in range(levels):
        flows.append([nf.flows.GlowBlock(c * 2 ** (levels + 1 - i), width, split_mode="channel", scale=True)
                      for _ in range(NORMFLOWS_STEPS)] + [nf.flows.Squeeze()])
        if i > 0:
            merges.append(nf.flows.Merge())
            latent = (c * 2 ** (levels - i), h // 2 ** (levels - i), w // 2 ** (levels - i))
        else:
            latent = (c * 2 ** (levels + 1), h // 2 ** levels, w // 2 ** levels)
        q0.append(nf.distributions.DiagGaussian(latent))
    return nf.MultiscaleFlow(q0, flows, merges, class_cond=False)


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _normflows_width(shape: tuple[int, int, int], target: int) -> int:
    """The hidden width whose model has the parameter count nearest ``target``."""
    best = min(range(16, 513, 8), key=lambda w: abs(_params(_normflows_model(shape, w)) - target))
    return best


def _normflows(job: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Train the normflows Glow and score its copies."""
    train_x = _load(args.data, "train")
    test = _load(args.data, "test", args.test_images)
    shape = tuple(train_x.shape[1:])
    opts = dict(kv.split("=") for kv in job.split(":")[1:] if kv)
    width = int(opts["width"]) if "width" in opts else _normflows_width(shape, args.match_params)
    torch.manual_seed(0)
    marks = _Marks(args.budgets, out)
    model = _normflows_model(shape, width)  # type: ignore[arg-type]
    opt = torch.optim.Adamax(model.parameters(), lr=1e-3, weight_decay=1e-5)
    g = torch.Generator().manual_seed(0)
    dims = math.prod(shape)

    def batch(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:  # uniform dequantisation to [0, 1)
        return (x.float() + torch.rand(x.shape, generator=gen)) / 256.0

    step = 0
    model.train()
    while not marks.done():
        idx = torch.randint(len(train_x), (64,), generator=g)
        loss = model.forward_kld(batch(train_x[idx], g))
        opt.zero_grad(set_to_none=True)
        if torch.isfinite(loss):
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
            opt.step()
        step += 1
        if marks.due():
            marks.take(model.state_dict(), step)
    points = []
    model.eval()
    for m in marks.taken:
        model.load_state_dict(torch.load(m["file"], weights_only=True))
        gen, total = torch.Generator().manual_seed(0), 0.0
        with torch.no_grad():
            for i in range(0, len(test), 256):
                x = batch(test[i: i + 256], gen)
                total += float(-model.log_prob(x, None).sum())
        points.append({**m, "test_bpd": total / len(test) / (math.log(2) * dims) + 8})
    return {"job": job, "params": _params(model), "width": width, "points": points}


def _worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    out = Path(args.work)
    result = (_normflows if args.worker.startswith("normflows") else _ours)(args.worker, args, out)
    (out / "result.json").write_text(json.dumps(result))


def _launch(job: str, core: int | None, args: argparse.Namespace, work: Path) -> subprocess.Popen:
    argv = [sys.executable, __file__, "--worker", job, "--work", str(work), "--data", args.data,
            "--threads", str(args.threads), "--test-images", str(args.test_images),
            "--match-params", str(args.match_params), "--budgets", *map(str, args.budgets),
            "--also-ema", *map(str, args.also_ema)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}

    def pin() -> None:
        if core is not None and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {core})

    log = open(work / "log.txt", "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=pin)


def _plot(results: list[dict[str, Any]], path: Path, title: str) -> None:
    from flowvae.reporting.plot import svg_plot

    series = [(r["job"], [(p["wall_s"] / 60, p["test_bpd"]) for p in r["points"]]) for r in results]
    svg = svg_plot(series, "ttq-plot", "wall time (min)", "test bits/dim")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'<!-- {title} -->\n{svg}\n')


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default="mnist", choices=["mnist", "cifar10-jpeg"])
    p.add_argument("--budgets", type=float, nargs="+", default=[300, 600, 1200], help="seconds of wall time")
    p.add_argument("--jobs", nargs="+", default=["flowvae:mnist", "normflows"])
    p.add_argument("--threads", type=int, default=1, help="torch threads per job")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="jobs side by side, one core each")
    p.add_argument("--test-images", type=int, default=2000)
    p.add_argument("--match-params", type=int, default=1_823_489,
                   help="parameter count the normflows Glow is sized to (default: our mnist preset's)")
    p.add_argument("--also-ema", type=float, nargs="*", default=[], metavar="DECAY",
                   help="for our jobs, also score weights averaged with these decays along the same run "
                        "(Polyak averaging beside the run's own train.ema_decay; one lerp per decay and step)")
    p.add_argument("--out", type=Path, default=None, help="JSON of every point")
    p.add_argument("--plot", type=Path, default=None, help="SVG of test bits/dim against wall time")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return _worker(args)
    root = Path(tempfile.mkdtemp(prefix="ttq-"))
    results, queue = [], list(enumerate(args.jobs))
    while queue:
        group, queue = queue[: args.cores], queue[args.cores:]
        procs = []
        for slot, (i, job) in enumerate(group):
            work = root / f"job{i}"
            work.mkdir()
            procs.append((job, work, _launch(job, slot if args.cores > 1 else None, args, work)))
        for job, work, proc in procs:
            if proc.wait() != 0:
                sys.exit(f"{job} failed; its log: {work / 'log.txt'}")
            results.append(json.loads((work / "result.json").read_text()))
    from flowvae.training.environment import cpu_model

    hardware = f"{cpu_model() or 'CPU'}, {os.cpu_count()} cores; {args.threads} thread(s) per job"
    for r in results:
        for q in r["points"]:
            q.pop("file", None)  # the copies were in a temporary folder
            for k in [k for k in q if k.startswith("file_")]:
                q.pop(k)
    head = " | ".join(f"{b / 60:.3g} min" for b in sorted(args.budgets))
    print(f"test bits/dim on {args.test_images} {args.data} test images after wall-clock budgets ({hardware}; "
          f"{min(args.cores, len(args.jobs))} jobs side by side)")
    print(f"| job | parameters | {head} | steps at the last | saturated at T = 1 / 0.7 (of {SATURATION_SAMPLES}) |")
    print("| --- | --- |" + " --- |" * len(args.budgets) + " --- | --- |")
    for r in results:
        cells = " | ".join(f"{q['test_bpd']:.3f}" for q in r["points"])
        last = r["points"][-1]
        sat = f"{last['saturated_t1']} / {last['saturated_t0.7']}" if "saturated_t1" in last else "-"
        print(f"| {r['job']} | {r['params']:,} | {cells} | {last['step']:,} | {sat} |")
        if "test_bpd_last_update" in last:
            cells = " | ".join(f"{q['test_bpd_last_update']:.3f}" for q in r["points"])
            print(f"| {r['job']}, the last update's weights (not averaged) | | {cells} | | |")
        for d in args.also_ema:
            if f"test_bpd_ema{d:g}" in last:
                cells = " | ".join(f"{q[f'test_bpd_ema{d:g}']:.3f}" for q in r["points"])
                print(f"| {r['job']}, weights averaged with decay {d:g} | | {cells} | | |")
    if args.out:
        args.out.write_text(json.dumps({"data": args.data, "hardware": hardware, "budgets": args.budgets,
                                        "results": results}, indent=1))
    if args.plot:
        _plot(results, args.plot, f"{args.data}, {hardware}")


if __name__ == "__main__":
    main()
