"""Training, sampling and evaluation speed and memory of flowvae, with a normflows Glow beside it.

    .venv/bin/python benchmarks/bench.py                       # default table, writes benchmarks/results.json
    .venv/bin/python benchmarks/bench.py --presets mnist --modes fp32 bf16 --steps 3
    .venv/bin/python benchmarks/bench.py --device cuda --modes fp32 bf16 bf16+compile

Each (preset, mode) runs in its own subprocess so that peak memory is that configuration's alone
(CPU: peak resident set size of the process, and its growth during the training steps; CUDA:
``torch.cuda.max_memory_allocated``). Modes are ``+``-joined flags:

* ``fp32``: float32, NCHW (the reference);
* ``cl``: channels-last memory format for the model and the images;
* ``bf16``: the coupling networks under bfloat16 autocast (logdets, affine maps, priors and the
  loss stay float32; ``train.precision=bf16``);
* ``compile``: ``torch.compile`` of the model's loss;
* ``recompute``: decoder activations recomputed by inversion during backward (``train.recompute``);
* ``stockmalloc``: leave glibc's allocator as it is (every mode else runs with
  ``flowvae.training.environment.tune_cpu_allocator``, as ``flowvae train`` does).

Images are random uint8 of the preset's shape (speed does not depend on content). FLOPs of one
training step are counted with ``torch.utils.flop_counter`` on the float32 model; achieved GFLOP/s
is that count over the median step time, set against the float32 or bfloat16 peak rate measured on
the spot (the faster of a matrix product and the model's 512-channel 1x1 convolution). Also
timed, as the commands run them: sampling (``draw_samples``, images/s at temperature 0.7) and
evaluation (``evaluate_bpd`` with K importance samples, images/s); both convert the model to
channels-last on the CPU in every mode. Also a normflows Glow of about the same size as the refined
Glow (no z), trained the same way (``pip install normflows``).

``--compare`` adds a table of each mode's ratio to ``fp32`` of the same preset in the same run
(training, sampling and evaluation images/s), so that a speed-up is read against a reference
measured on the same machine at the same time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from flowvae.training.environment import cpu_model, tune_cpu_allocator

ROOT = Path(__file__).resolve().parent
SAMPLE_TEMPERATURE = 0.7


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_rates(device: torch.device, n: int = 2048, reps: int = 10) -> dict:
    """GFLOP/s of dense products in float32 and bfloat16: an ``n x n`` matrix product (``fp32``,
    ``bf16``) and the model's own dominant operation, a 1x1 convolution of 512 to 512 channels on
    32 images of 16x16 in channels-last (``conv_fp32``, ``conv_bf16``; oneDNN on CPUs, often faster
    than the BLAS matrix product). ``peak_fp32``/``peak_bf16`` are the larger of the two, the rate
    the fraction column divides by."""
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        out[name] = _rate(lambda a=a, b=b: a @ b, 2 * n**3, reps, device)
        x = torch.randn(32, 512, 16, 16, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        w = torch.randn(512, 512, 1, 1, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        out[f"conv_{name}"] = _rate(lambda x=x, w=w: torch.nn.functional.conv2d(x, w),
                                    2 * 32 * 256 * 512 * 512, reps, device)
        out[f"peak_{name}"] = max(out[name], out[f"conv_{name}"])
    return out


def _rate(fn, flops: float, reps: int, device: torch.device) -> float:
    """GFLOP/s of ``fn``: the best of ``reps`` timed calls after two warm-up calls (the machine is
    shared and noisy; the best call is the closest to what the hardware can do)."""
    fn()
    fn()
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return flops / best / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _images(cfg, batch: int, device) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (batch, cfg.model.in_channels, cfg.model.image_size, cfg.model.image_size),
                         dtype=torch.uint8, generator=g).to(device)


def step_flops(preset: str, batch: int, kind: str) -> float:
    """FLOPs of one forward + backward of the float32 model at this batch."""
    from torch.utils.flop_counter import FlopCounterMode

    from flowvae.models import create_model
    from flowvae.presets import get_preset

    cfg = get_preset(preset)
    cfg.model.kind = kind
    model = create_model(cfg)  # the class of cfg.model.kind (Glow for the baselines)
    x = _images(cfg, batch, "cpu")
    with FlopCounterMode(display=False) as counter:
        loss, _ = model.loss(x, torch.Generator().manual_seed(0))
        loss.backward()
    return float(counter.get_total_flops())


def worker(preset: str, mode: str, batch: int, steps: int, device_name: str, kind: str, eval_k: int) -> dict:
    """One configuration in this process: the record of one table row."""
    from flowvae.flows import data_init
    from flowvae.models import create_model
    from flowvae.presets import get_preset

    device = torch.device(device_name)
    flags = set(mode.split("+"))
    if device.type == "cpu" and "stockmalloc" not in flags:
        tune_cpu_allocator()  # as `flowvae train` does
    cfg = get_preset(preset)
    cfg.model.kind = kind
    torch.manual_seed(0)
    model = create_model(cfg).to(device)
    model.set_precision("bf16" if "bf16" in flags else "fp32")
    model.decoder.recompute = "recompute" in flags
    x = _images(cfg, batch, device)
    if "cl" in flags:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    gen = torch.Generator(device=device).manual_seed(1)
    with torch.no_grad(), data_init(model):
        model.loss(x, gen)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    loss_fn = torch.compile(model.loss) if "compile" in flags else model.loss

    def train_step() -> float:
        loss, _ = loss_fn(x, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    rss_before = _rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    warm = 2  # the first steps grow the allocator's pools (and compile, with `compile`)
    for _ in range(warm):
        train_step()
    _sync(device)
    warm_s = time.perf_counter() - t
    times, losses = [], []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        t = time.perf_counter()
        losses.append(train_step())
        _sync(device)
        times.append(time.perf_counter() - t)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps
    step_s = sorted(times)[len(times) // 2]  # median: robust to other work on a shared machine
    rec = {"preset": preset, "kind": kind, "mode": mode, "batch": batch, "steps": steps,
           "step_s": step_s, "step_times_s": times, "page_faults_per_step": faults,
           "train_images_per_s": batch / step_s, "first_steps_s": warm_s,
           "loss_bpd": losses[-1], "parameters": sum(p.numel() for p in model.parameters())}
    if device.type == "cuda":
        rec["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        rec["peak_memory_mb"] = _peak_rss_mb()
        rec["step_memory_mb"] = _peak_rss_mb() - rss_before  # growth of the peak during training steps

    # What `flowvae sample` and `flowvae eval` run (channels-last on the CPU whatever the mode).
    from flowvae.evaluation.bpd import evaluate_bpd
    from flowvae.evaluation.sampling import draw_samples

    model.eval()
    with torch.no_grad():
        for _ in range(2):  # the first call warms the allocator (and compiles nothing: eager)
            _sync(device)
            t = time.perf_counter()
            draw_samples(model, batch, SAMPLE_TEMPERATURE, generator=gen)
            _sync(device)
        rec["sample_images_per_s"] = batch / (time.perf_counter() - t)
        rec["sample_temperature"] = SAMPLE_TEMPERATURE
        for _ in range(2):
            _sync(device)
            t = time.perf_counter()
            evaluate_bpd(model, x, eval_k, batch_size=batch * eval_k, device=device)
            _sync(device)
        rec["eval_images_per_s"] = batch / (time.perf_counter() - t)
        rec["eval_k"] = eval_k
    return rec


def normflows_glow(batch: int, steps: int, device_name: str, levels: int, depth: int, hidden: int) -> dict:
    """A Glow built from normflows blocks (multi-scale, affine couplings, LU 1x1 convolutions)."""
    import normflows as nf

    device = torch.device(device_name)
    c, s = 3, 32
    flows, merges, q0 = [], [], []
    for i in range(levels):
        width = c * 2 ** (levels + 1 - i)
        flows.append([nf.flows.GlowBlock(width, hidden, split_mode="channel", scale=True) for _ in range(depth)]
                     + [nf.flows.Squeeze()])
        if i > 0:
            merges.append(nf.flows.Merge())
            shape = (c * 2 ** (levels - i), s // 2 ** (levels - i), s // 2 ** (levels - i))
        else:
            shape = (c * 2 ** (levels + 1), s // 2 ** levels, s // 2 ** levels)
        q0.append(nf.distributions.DiagGaussian(shape))
    model = nf.MultiscaleFlow(q0, flows, merges, class_cond=False).to(device)
    g = torch.Generator().manual_seed(0)
    x = (torch.randint(0, 256, (batch, c, s, s), generator=g).float() + torch.rand(batch, c, s, s, generator=g)) / 256
    x = x.to(device)
    with torch.no_grad():
        model.forward_kld(x)  # ActNorm data-dependent initialisation
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def train_step() -> None:
        loss = model.forward_kld(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    rss_before = _rss_mb()
    train_step()
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        train_step()
    _sync(device)
    step_s = (time.perf_counter() - t) / steps
    return {"preset": f"normflows Glow L={levels} K={depth} hidden={hidden}", "kind": "glow (normflows "
            f"{nf.__version__})", "mode": "fp32", "batch": batch, "steps": steps, "step_s": step_s,
            "train_images_per_s": batch / step_s, "peak_memory_mb": _peak_rss_mb(),
            "step_memory_mb": _peak_rss_mb() - rss_before,
            "parameters": sum(p.numel() for p in model.parameters())}


def _run_child(args: list[str], timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1][:200]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=["cifar10", "cifar10-small"])
    p.add_argument("--modes", nargs="+", default=["fp32", "cl", "bf16", "bf16+cl", "recompute", "bf16+compile"])
    p.add_argument("--kind", default="flowvae", choices=["flowvae", "refined_glow"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=3, help="timed training steps per configuration")
    p.add_argument("--eval-k", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--normflows", action=argparse.BooleanOptionalAction, default=True,
                   help="also time a normflows Glow of the refined Glow's size")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per configuration")
    p.add_argument("--json", default=str(ROOT / "results.json"), help="where to write the figures")
    p.add_argument("--compare", action="store_true", help="also print each mode's speed as a ratio to fp32")
    p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        if args.worker[0] == "normflows":
            levels, depth, hidden = map(int, args.worker[1:4])
            rec = normflows_glow(args.batch, args.steps, args.device, levels, depth, hidden)
        elif args.worker[0] == "flops":
            rec = {"flops": step_flops(args.worker[1], args.batch, args.kind)}
        else:
            rec = worker(args.worker[0], args.worker[1], args.batch, args.steps, args.device, args.kind, args.eval_k)
        print(json.dumps(rec))
        return 0

    device = torch.device(args.device)
    rates = matmul_rates(device)
    hw = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
          "cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
          "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
          "cpu_model": cpu_model(), "matmul_gflops": rates}
    print(f"# {hw['processor']}, {hw['cpu_count']} CPUs, torch {hw['torch']} ({hw['threads']} threads), "
          f"device {device}{' ' + hw['gpu'] if hw['gpu'] else ''}")
    print(f"# {hw['cpu_model']}; measured GFLOP/s: matrix product {rates['fp32']:.0f} float32, {rates['bf16']:.0f} "
          f"bfloat16; 1x1 convolution {rates['conv_fp32']:.0f} float32, {rates['conv_bf16']:.0f} bfloat16")
    rows = []
    header = (f"| model | mode | batch | images/s (train) | step s | peak MB | step MB | GFLOP/s | "
              f"% of peak rate | sample images/s (T = 0.7) | eval images/s (K={args.eval_k}) |")
    print(header)
    print("|" + " --- |" * (header.count("|") - 1))
    for preset in args.presets:
        flops = _run_child(["--worker", "flops", preset, "--batch", str(args.batch), "--kind", args.kind],
                           args.timeout).get("flops")
        for mode in args.modes:
            rec = _run_child(["--worker", preset, mode, "--batch", str(args.batch), "--steps", str(args.steps),
                              "--device", args.device, "--kind", args.kind, "--eval-k", str(args.eval_k)], args.timeout)
            rec.setdefault("preset", preset)
            rec.setdefault("mode", mode)
            if "error" not in rec and flops:
                rec["gflops_per_step"] = flops / 1e9
                rec["achieved_gflops"] = flops / rec["step_s"] / 1e9
                ref = rates["peak_bf16" if "bf16" in mode else "peak_fp32"]
                rec["fraction_of_peak_rate"] = rec["achieved_gflops"] / ref
            rows.append(rec)
            print(_row(rec, args.batch), flush=True)
    if args.normflows:
        # Glow's CIFAR-10 shape (3 levels of 32 steps, width 512): 44.2 M parameters, close to the
        # 46.5 M of the refined Glow of the `cifar10` preset.
        rec = _run_child(["--worker", "normflows", "3", "32", "512", "--batch", str(args.batch), "--steps",
                          str(args.steps), "--device", args.device], args.timeout)
        rows.append(rec)
        print(_row(rec, args.batch), flush=True)
        ours = _run_child(["--worker", "cifar10", "fp32", "--batch", str(args.batch), "--steps", str(args.steps),
                           "--device", args.device, "--kind", "refined_glow", "--eval-k", str(args.eval_k)], args.timeout)
        ours["preset"] = "cifar10 (refined Glow, flowvae)"
        rows.append(ours)
        print(_row(ours, args.batch), flush=True)
    if args.compare:
        for line in _compare(rows):
            print(line)
    Path(args.json).write_text(json.dumps({"hardware": hw, "rows": rows}, indent=2))
    print(f"# wrote {args.json}")
    return 0


def _compare(rows: list[dict]) -> list[str]:
    """Each mode's images/s over the ``fp32`` row of its preset, for training, sampling and evaluation."""
    keys = ("train_images_per_s", "sample_images_per_s", "eval_images_per_s")
    ref = {r["preset"]: r for r in rows if r.get("mode") == "fp32" and "error" not in r}
    out = ["", "| model | mode | train x fp32 | sample x fp32 | eval x fp32 |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        base = ref.get(r.get("preset"))
        if base is None or "error" in r or r.get("mode") is None:
            continue
        ratios = [f"{r[k] / base[k]:.2f}" if r.get(k) and base.get(k) else "-" for k in keys]
        out.append(f"| {r['preset']} | {r['mode']} | " + " | ".join(ratios) + " |")
    return out


def _row(r: dict, batch: int) -> str:
    if "error" in r:
        return f"| {r.get('preset')} | {r.get('mode')} | {batch} | error: {r['error']} |"
    f = lambda key, fmt: (format(r[key], fmt) if r.get(key) is not None else "-")  # noqa: E731
    pct = f"{100 * r['fraction_of_peak_rate']:.0f}%" if r.get("fraction_of_peak_rate") else "-"
    name = f"{r['preset']} ({r['parameters'] / 1e6:.1f} M)" if r.get("parameters") else r["preset"]
    return (f"| {name} | {r['mode']} | {r['batch']} | {f('train_images_per_s', '.2f')} | {f('step_s', '.2f')} | "
            f"{f('peak_memory_mb', '.0f')} | {f('step_memory_mb', '.0f')} | {f('achieved_gflops', '.0f')} | {pct} | "
            f"{f('sample_images_per_s', '.1f')} | {f('eval_images_per_s', '.1f')} |")


if __name__ == "__main__":
    sys.exit(main())
