"""The GPU check: the CUDA tests, training speed against the GPU's own matrix rate, and memory, in one JSON.

    python benchmarks/gpu_check.py --out gpu_check.json [--budget-s 540]

Without a CUDA GPU it refuses in one line on stderr (exit 1) and writes nothing. With one, each
part below runs in its own subprocess under a timeout carved from ``--budget-s`` (seconds for the
whole check, default 540: under the 10 minutes one GPU command may take), so that a crash or hang
in one part keeps the others; the JSON is rewritten atomically after every part, so a check
killed half way still leaves the parts it finished. Each part's record has ``status`` (``ok``,
``failed``, ``timeout``, ``skipped``) and ``wall_s`` (seconds, subprocess start to end).

* ``hardware``: GPU names, count, memory (GiB) and multiprocessors; torch, CUDA runtime, cuDNN
  and driver versions.
* ``matmul``: TFLOP/s (10^12 floating-point operations per second) of an 8192 x 8192 x 8192
  matrix product on random values, the mean of 20 timed products after half a second of warm-up,
  in bfloat16, float32 (``fp32``, TF32 off) and TF32: the rates the training figures are set against.
* ``tests``: ``pytest -m cuda tests/integration/test_cuda.py``: exit code, passed/failed/skipped/error counts,
  the tail of its output.
* ``flops``: floating-point operations of one training step (forward + backward) of the
  ``cifar10`` preset at the benchmark batch, counted on the CPU (``bench.py --worker flops``).
* ``train_<mode>``: one ``bench.py --worker cifar10 MODE`` record on the GPU (batch 32 by default):
  ``train_images_per_s`` (median step), ``peak_memory_mb`` (``torch.cuda.max_memory_allocated``
  over the training steps, MiB) and the rest of bench.py's record; the check adds
  ``achieved_tflops`` and ``fraction_of_bf16_matmul`` (achieved rate over the measured bf16 matrix
  rate; also ``fraction_of_fp32_matmul`` for the float32 modes). Modes: ``bf16+compile`` (the
  fast configuration), ``fp32`` (the reference), and ``recompute``, ``bf16``, ``bf16+recompute``
  for the peak memory with and without recomputing the decoder's activations.
* ``nccl``: with two GPUs or more, two processes of ``torchrun`` training the tiny ``digits`` model
  over NCCL for a few steps: exit code, wall time, steps reached, final bits/dim; with one GPU
  ``{"skipped": "one GPU"}``.
* ``summary``: the headline figures of the parts above (units in the names), also printed at the end.

The JSON: ``{"check", "started", "budget_s", "batch", "steps", "preset", "complete", "elapsed_s",
"parts": {name: record}, "summary"}``; ``complete`` turns true when every part has run (or been
skipped). Exit status 0 when every part is ``ok`` or ``skipped``, 1 otherwise or without CUDA.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks" / "bench.py"
PRESET = "cifar10"
MATMUL_N, MATMUL_REPS, MATMUL_WARMUP = 8192, 20, 3
MEMORY_MODES = ("fp32", "recompute", "bf16", "bf16+recompute")
# Far below the preset's sizes: the NCCL run checks that data parallelism works, not speed.
NCCL_SETS = ("model.hidden=[8,16,16]", "model.encoder_widths=[8]", "model.prior_hidden=16", "train.batch_size=32",
             "train.init_batch_size=64", "train.sample_temperatures=[0.8]", "data.test_limit=64", "train.steps=20",
             "train.eval_every=10", "train.checkpoint_every=20", "train.loggers=[]")
GRACE_S = 10  # after SIGTERM, before SIGKILL: torchrun forwards SIGTERM to its workers and waits for them


# ---------------------------------------------------------------------------------------------
# what runs inside the subprocesses


def hardware_and_matmul(n: int = MATMUL_N) -> dict:
    """The ``hardware`` record (key ``hardware``) and the ``matmul`` rates of ``n x n x n`` products
    (TFLOP/s, keys ``bf16``, ``fp32``, ``tf32``), measured in this process on GPU 0."""
    import torch

    props = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
    driver_api = getattr(torch._C, "_cuda_getDriverVersion", lambda: None)()
    hw: dict[str, Any] = {
        "gpu": props[0].name, "gpu_count": len(props), "gpus": [p.name for p in props],
        "memory_gib": [round(p.total_memory / 2**30, 1) for p in props],
        "multiprocessors": props[0].multi_processor_count, "capability": f"{props[0].major}.{props[0].minor}",
        "torch": torch.__version__, "cuda_runtime": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
        # the CUDA version the driver supports (e.g. 13000 -> 13.0); its release number comes from nvidia-smi
        "driver_cuda": f"{driver_api // 1000}.{driver_api % 1000 // 10}" if driver_api else None,
        "driver": _nvidia_smi_driver(), "python": sys.version.split()[0],
    }
    dev = torch.device("cuda")
    rates: dict[str, Any] = {"n": n, "reps": MATMUL_REPS, "warmup_min_s": 0.5, "unit": "TFLOP/s"}
    for name, dtype, tf32 in (("bf16", torch.bfloat16, False), ("fp32", torch.float32, False),
                              ("tf32", torch.float32, True)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        g = torch.Generator(device=dev).manual_seed(0)
        # random values: zeros run measurably faster (less switching power), which would flatter the peak
        a = torch.randn(n, n, device=dev, dtype=dtype, generator=g)
        b = torch.randn(n, n, device=dev, dtype=dtype, generator=g)
        c = torch.empty_like(a)
        # at least MATMUL_WARMUP products and half a second: the clocks climb from idle (an H200
        # idles at a sixth of its SM clock) and three bf16 products last under 5 ms
        t = time.perf_counter()
        for i in range(10_000):
            torch.mm(a, b, out=c)
            if i + 1 >= MATMUL_WARMUP and i % 10 == 9:
                torch.cuda.synchronize()
                if time.perf_counter() - t > 0.5:
                    break
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(MATMUL_REPS):
            torch.mm(a, b, out=c)
        torch.cuda.synchronize()
        rates[name] = 2 * n**3 * MATMUL_REPS / (time.perf_counter() - t) / 1e12
        del a, b, c
    torch.backends.cuda.matmul.allow_tf32 = False
    return {"hardware": hw, **rates}


def _nvidia_smi_driver() -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


# ---------------------------------------------------------------------------------------------
# running a part


class Child:
    """One subprocess in its own process group, so that a timeout (or this script's own SIGTERM)
    ends everything it started: pytest's and Inductor's compile workers, torchrun's ranks. A group
    and not a session: whatever kills this check's session (a device's time limit) still reaches them.
    Output goes to files, not pipes: a straggler that keeps a pipe open would hold the wait past the
    child's own exit."""

    current: Child | None = None

    def __init__(self, cmd: list[str], env: dict[str, str], cwd: Path):
        self.out, self.err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=self.err, text=True, env=env, cwd=cwd,
                                     preexec_fn=os.setpgrp)

    def wait(self, timeout: float) -> tuple[int | None, str, str]:
        """``(exit code or None on timeout, stdout, stderr)``."""
        Child.current = self
        try:
            code: int | None = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            self.stop()  # also the stragglers of a child that exited
            Child.current = None
        texts = []
        for f in (self.out, self.err):
            f.seek(0)
            texts.append(f.read())
            f.close()
        return code, texts[0], texts[1]

    def stop(self) -> None:
        """SIGTERM to the group, up to ``GRACE_S`` for the child to exit, then SIGKILL to the group."""
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                pass
        self._signal(signal.SIGKILL)
        self.proc.wait()

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):  # the group is gone (a zombie leader may linger)
            pass


def child_env() -> dict[str, str]:
    """This environment, with the checkout's ``src`` first on the path (flowvae need not be
    installed where the GPU is) and unbuffered output (a killed child keeps what it printed)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)  # a check started under torchrun must not make its children ranks
    return env


def run_child(cmd: list[str], timeout: float) -> dict:
    """Run ``cmd``; ``{"status", "wall_s", "exit_code", "stdout", "stderr"}``."""
    t = time.perf_counter()
    code, out, err = Child(cmd, child_env(), ROOT).wait(timeout)
    status = "timeout" if code is None else "ok" if code == 0 else "failed"
    return {"status": status, "wall_s": round(time.perf_counter() - t, 2), "exit_code": code,
            "timeout_s": round(timeout, 1), "stdout": out, "stderr": err}


def _tail(text: str, chars: int = 3000) -> str:
    return text[-chars:]


def _last_json(stdout: str) -> dict | None:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def json_part(cmd: list[str], timeout: float) -> dict:
    """A child that prints one JSON record on its last line: that record, plus status and time."""
    r = run_child(cmd, timeout)
    rec = _last_json(r["stdout"]) if r["status"] == "ok" else None
    base = {k: r[k] for k in ("status", "wall_s", "exit_code", "timeout_s")}
    if rec is None:
        if r["status"] == "ok":
            base["status"] = "failed"
        base["error"] = (r["stderr"].strip().splitlines() or ["no JSON record printed"])[-1][:300]
        base["stderr_tail"] = _tail(r["stderr"])
        return base
    return {**rec, **base}


# ---------------------------------------------------------------------------------------------
# the parts


def part_matmul(timeout: float, results: dict) -> dict:
    """The ``matmul`` record; files the ``hardware`` record, measured in the same child, before it."""
    rec = json_part([sys.executable, str(Path(__file__).resolve()), "--part", "matmul"], timeout)
    hw = rec.pop("hardware", None)
    results["hardware"] = ({"status": "ok", **hw} if hw else
                           {"status": rec["status"], "error": rec.get("error", "not measured")})
    return rec


PYTEST_COUNTS = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)\b")


def part_tests(timeout: float, _: dict) -> dict:
    r = run_child([sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-rs", "-p", "no:cacheprovider",
                   "tests/integration/test_cuda.py"], timeout)
    text = r["stdout"] + r["stderr"]
    counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    summary = [line for line in text.splitlines() if PYTEST_COUNTS.search(line) and re.search(r" in [\d.]+s", line)]
    if summary:
        for n, word in PYTEST_COUNTS.findall(summary[-1]):
            key = "errors" if word.startswith("error") else word
            counts[key] = counts.get(key, 0) + int(n)
    rec = {"status": r["status"], "wall_s": r["wall_s"], "exit_code": r["exit_code"], "timeout_s": r["timeout_s"],
           **counts, "tail": _tail(text)}
    # pytest exits 0 also when every test was skipped (CUDA not visible to it): that is no pass
    if r["status"] == "ok" and (counts["passed"] == 0 or counts["skipped"]):
        rec["status"] = "failed"
        rec["error"] = f"{counts['skipped']} of the CUDA tests skipped: CUDA not visible to pytest?"
    return rec


def part_flops(timeout: float, _: dict, batch: int = 32) -> dict:
    # CPU: the counter needs no GPU, and the count is of the float32 model whatever the mode
    return json_part([sys.executable, str(BENCH), "--worker", "flops", PRESET, "--batch", str(batch)], timeout)


def part_train(mode: str, batch: int, steps: int) -> Callable[[float, dict], dict]:
    def run(timeout: float, results: dict) -> dict:
        rec = json_part([sys.executable, str(BENCH), "--worker", PRESET, mode, "--batch", str(batch), "--steps",
                         str(steps), "--device", "cuda", "--eval-k", "1"], timeout)
        flops = results.get("flops", {}).get("flops")
        rates = results.get("matmul", {})
        if rec.get("status") == "ok" and flops and rec.get("step_s"):
            achieved = flops / rec["step_s"] / 1e12
            rec["achieved_tflops"] = achieved
            if rates.get("bf16"):
                rec["fraction_of_bf16_matmul"] = achieved / rates["bf16"]
            if "bf16" not in mode.split("+") and rates.get("fp32"):
                rec["fraction_of_fp32_matmul"] = achieved / rates["fp32"]
        return rec

    return run


def part_nccl(timeout: float, results: dict) -> dict:
    count = results.get("hardware", {}).get("gpu_count")
    if count is None:
        import torch

        count = torch.cuda.device_count()
    if count < 2:
        return {"status": "skipped", "skipped": "one GPU"}
    with tempfile.TemporaryDirectory(prefix="gpu_check_nccl_") as tmp:
        run = Path(tmp) / "run"
        r = run_child([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                       "-m", "flowvae.cli.main", "train", "digits", "--run-dir", str(run), "-q", "--device", "cuda",
                       "--set", *NCCL_SETS], timeout)
        rec: dict[str, Any] = {k: r[k] for k in ("status", "wall_s", "exit_code", "timeout_s")}
        rec["nproc_per_node"] = 2
        rec["tail"] = _tail(r["stdout"] + r["stderr"], 2000)
        try:
            last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
            env = json.loads((run / "environment.json").read_text())
        except (OSError, IndexError, json.JSONDecodeError) as e:
            rec["error"] = f"no complete run folder: {e}"
            if rec["status"] == "ok":
                rec["status"] = "failed"
            return rec
        rec.update(steps=last.get("step"), test_elbo_bpd=last.get("test_elbo_bpd"),
                   world=env.get("processes"), device=env.get("device"))
        bpd = last.get("test_elbo_bpd")
        if rec["status"] == "ok" and not (env.get("processes") == 2 and isinstance(bpd, float) and math.isfinite(bpd)):
            rec["status"] = "failed"
    return rec


# ---------------------------------------------------------------------------------------------
# the check


def summarise(results: dict) -> dict:
    """The headline figures (units in the names)."""
    hw = results.get("hardware", {})
    mm = results.get("matmul", {})
    tests = results.get("tests", {})
    s: dict[str, Any] = {"gpu": hw.get("gpu"), "gpu_count": hw.get("gpu_count"), "torch": hw.get("torch"),
                         "cuda_runtime": hw.get("cuda_runtime"), "driver": hw.get("driver") or hw.get("driver_cuda"),
                         "bf16_matmul_tflops": mm.get("bf16"), "fp32_matmul_tflops": mm.get("fp32"),
                         "tf32_matmul_tflops": mm.get("tf32"),
                         "tests": {k: tests.get(k) for k in ("exit_code", "passed", "failed", "skipped", "errors")},
                         "step_gflop": (results.get("flops", {}).get("flops") or 0) / 1e9 or None}
    for mode in ("bf16+compile", "fp32"):
        r = results.get(f"train_{mode}", {})
        s[f"{mode}_images_per_s"] = r.get("train_images_per_s")
        s[f"{mode}_fraction_of_bf16_matmul"] = r.get("fraction_of_bf16_matmul")
    s["peak_memory_mb"] = {m: results.get(f"train_{m}", {}).get("peak_memory_mb") for m in MEMORY_MODES}
    s["peak_memory_mb"]["bf16+compile"] = results.get("train_bf16+compile", {}).get("peak_memory_mb")
    s["fp32_fraction_of_fp32_matmul"] = results.get("train_fp32", {}).get("fraction_of_fp32_matmul")
    mem = s["peak_memory_mb"]
    for base in ("fp32", "bf16"):  # peak with recompute over peak without, same precision, both eager
        with_r = mem.get("recompute" if base == "fp32" else "bf16+recompute")
        s[f"{base}_recompute_memory_ratio"] = with_r / mem[base] if with_r and mem.get(base) else None
    s["parts"] = {name: r.get("status") for name, r in results.items() if isinstance(r, dict) and "status" in r}
    return s


def write_json(path: Path, doc: dict) -> None:
    """``doc`` to ``path`` through a temporary file in the same folder: a reader (or a crash) never
    sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _fmt(x: Any, spec: str) -> str:
    return format(x, spec) if isinstance(x, (int, float)) else "-"


def report(s: dict) -> list[str]:
    t = s["tests"]
    mem = s["peak_memory_mb"]
    lines = [f"GPU: {s['gpu']} x{s['gpu_count']}; torch {s['torch']}, CUDA {s['cuda_runtime']}, driver {s['driver']}",
             f"matmul 8192^3: bf16 {_fmt(s['bf16_matmul_tflops'], '.0f')} TFLOP/s, fp32 "
             f"{_fmt(s['fp32_matmul_tflops'], '.1f')}, tf32 {_fmt(s['tf32_matmul_tflops'], '.0f')}",
             f"tests (pytest -m cuda): {t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped, "
             f"{t['errors']} errors (exit {t['exit_code']})"]
    pct = lambda f: _fmt(100 * f if f else None, ".1f")  # noqa: E731
    lines.append(f"{PRESET} train bf16+compile: {_fmt(s['bf16+compile_images_per_s'], '.1f')} images/s "
                 f"({pct(s['bf16+compile_fraction_of_bf16_matmul'])}% of the bf16 matmul rate)")
    lines.append(f"{PRESET} train fp32: {_fmt(s['fp32_images_per_s'], '.1f')} images/s "
                 f"({pct(s['fp32_fraction_of_bf16_matmul'])}% of the bf16, "
                 f"{pct(s['fp32_fraction_of_fp32_matmul'])}% of the fp32 matmul rate)")
    lines.append("peak memory MiB: " + ", ".join(f"{m} {_fmt(v, '.0f')}" for m, v in mem.items())
                 + f"; with recompute / without: fp32 {_fmt(s['fp32_recompute_memory_ratio'], '.2f')}, "
                 f"bf16 {_fmt(s['bf16_recompute_memory_ratio'], '.2f')}")
    lines.append("parts: " + ", ".join(f"{k} {v}" for k, v in s["parts"].items()))
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="gpu_check.json", help="the JSON file to write")
    p.add_argument("--budget-s", type=float, default=540, help="seconds for the whole check (default 540)")
    p.add_argument("--batch", type=int, default=32, help="training batch of the throughput and memory parts")
    p.add_argument("--steps", type=int, default=5, help="timed training steps per mode (after 2 warm-up steps)")
    p.add_argument("--part", choices=["matmul"], help=argparse.SUPPRESS)  # the subprocess of one part
    args = p.parse_args(argv)

    import torch  # after parsing: --help needs no torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU visible to torch (torch.cuda.is_available() is False); nothing measured, "
              "no JSON written", file=sys.stderr)
        return 1
    if args.part == "matmul":
        print(json.dumps(hardware_and_matmul()))
        return 0

    out = Path(args.out)
    start = time.perf_counter()
    deadline = start + args.budget_s
    two_gpus = torch.cuda.device_count() >= 2
    # (name, run, cap_s, floor_s): a part gets at most its cap and leaves the floors of the parts
    # after it, unless that would leave it less than its own floor: then it takes its floor from
    # theirs (earlier parts matter more). A part that cannot have its floor is skipped.
    parts: list[tuple[str, Callable[[float, dict], dict], float, float]] = [
        ("matmul", part_matmul, 90, 30),
        ("tests", part_tests, 200, 60),
        ("flops", lambda t, r: part_flops(t, r, args.batch), 90, 20),
        ("train_bf16+compile", part_train("bf16+compile", args.batch, args.steps), 240, 60),
        *[(f"train_{m}", part_train(m, args.batch, args.steps), 90 if m in ("fp32", "recompute") else 60, 20)
          for m in MEMORY_MODES],
        ("nccl", part_nccl, 150, 40 if two_gpus else 0),
    ]
    doc: dict[str, Any] = {"check": "benchmarks/gpu_check.py", "started": datetime.now(timezone.utc).isoformat(),
                           "budget_s": args.budget_s, "batch": args.batch, "steps": args.steps, "preset": PRESET,
                           "complete": False, "parts": {}}
    results: dict[str, dict] = doc["parts"]

    def on_term(signum: int, _frame: Any) -> None:
        # the device's own limit or a user's kill: end the running part's processes, keep the JSON
        if Child.current is not None:
            Child.current.stop()
        doc["interrupted_by"] = signal.Signals(signum).name
        doc["summary"] = summarise(results)
        write_json(out, doc)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    write_json(out, doc)
    for i, (name, run, cap, floor) in enumerate(parts):
        remaining = deadline - time.perf_counter()
        timeout = min(cap, remaining - sum(f for *_, f in parts[i + 1:]))
        if timeout < floor:
            timeout = min(floor, remaining)
        if timeout < floor or timeout <= 0:
            results[name] = {"status": "skipped", "skipped": f"budget spent ({remaining:.0f} s of it left)"}
            if name == "matmul":
                results["hardware"] = results[name]
        else:
            print(f"[gpu_check] {name} (timeout {timeout:.0f} s) ...", flush=True)
            try:
                results[name] = run(timeout, results)
            except Exception as e:  # noqa: BLE001 - one part's bug must not lose the others
                results[name] = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
            r = results[name]
            print(f"[gpu_check] {name}: {r.get('status')} in {r.get('wall_s', 0):.0f} s"
                  + (f" ({r['error']})" if r.get("error") else ""), flush=True)
        doc["elapsed_s"] = round(time.perf_counter() - start, 1)
        doc["summary"] = summarise(results)
        write_json(out, doc)
    doc["complete"] = True
    write_json(out, doc)
    for line in report(doc["summary"]):
        print(line)
    print(f"wrote {out} in {doc['elapsed_s']:.0f} s")
    bad = [n for n, r in results.items() if r.get("status") not in ("ok", "skipped")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
