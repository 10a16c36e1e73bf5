"""Randomised kill trials: SIGKILL ``flowvae train`` at random moments, resume, compare.

For each model kind, one uninterrupted tiny run is the reference. A second run of the same config
is killed with SIGKILL again and again, each time resumed with ``flowvae train --resume``, until it
finishes. Its final weights must equal the reference's bitwise and its ``metrics.jsonl`` must hold
the same records (wall times aside); no temporary file or lock may be left behind.

Kill moments: most are random (during start-up, data loading, training steps, evaluations,
checkpoints); every ``--pause-every``-th one is aimed inside a checkpoint write, with the new
checkpoint's data written to its temporary file but not yet renamed ("tmp"), or renamed but its
checksum file not yet written ("sidecar"). Aimed kills use a child that pauses at that point
(:data:`CHILD`); the code under test is unchanged.

Run: ``python benchmarks/kill_trials.py --kinds flowvae ugvae --kills 20`` prints a table of trials
by kind; ``--json FILE`` saves it. ``PYTHONPATH=OTHER/src`` runs it against another checkout.
tests/integration/test_interruptions.py runs :func:`kill_chain` on the paper's model with 20 kills.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# A child that runs the CLI, pausing inside checkpoint writes when asked (KILL_TRIAL_PAUSE=tmp|sidecar):
# it touches KILL_TRIAL_MARK once paused, so the parent can kill it exactly there.
CHILD = r"""
import os, sys, time
mode, mark = os.environ.get("KILL_TRIAL_PAUSE"), os.environ.get("KILL_TRIAL_MARK")
if mode:
    real = os.replace
    def replace(src, dst, *a, **k):
        is_ckpt = str(dst).endswith(".pt")
        if is_ckpt and mode == "tmp":
            open(mark, "w").close(); time.sleep(30)
        real(src, dst, *a, **k)
        if is_ckpt and mode == "sidecar":
            open(mark, "w").close(); time.sleep(30)
    os.replace = replace
from flowvae.cli.main import main
sys.exit(main(sys.argv[1:]))
"""

# Small models that train a few hundred steps in seconds on one CPU thread; frequent evaluations
# and checkpoints so that kills land in every phase.
COMMON = ["train.batch_size=16", "train.init_batch_size=64", "train.sample_temperatures=[0.8]",
          "train.num_threads=1", "data.test_limit=64", "train.eval_images=32", "train.eval_every=30",
          "train.checkpoint_every=7", "train.keep_checkpoints=2", "train.warmup_steps=10"]
FLOW = ["model.hidden=[8,16,16]", "model.encoder_widths=[8]", "model.prior_hidden=16"]
DSPRITES = ["data.train_limit=512", "data.root={dsprites}"]
RECIPES: dict[str, tuple[str, list[str]]] = {
    "flowvae": ("digits", FLOW),
    "z_prior": ("digits", [*FLOW, "model.kind=z_prior"]),
    "refined_glow": ("digits", ["model.hidden=[8,16,16]", "model.kind=refined_glow"]),
    "glow": ("digits", ["model.hidden=[8,16,16]", "model.kind=glow"]),
    "ugvae": ("digits", ["model.kind=ugvae", "model.d_local=3", "model.d_global=2", "model.n_components=3",
                         "model.hidden=[16]", "model.encoder=mlp", "model.decoder=mlp", "model.group_by=label",
                         "model.groups_per_batch=4"]),
    "vae": ("digits-vae", ["model.d_z=3", "model.conv_channels=[4]", "model.hidden=16"]),
    "btcvae": ("dsprites-btcvae", ["model.n_factors=3", "model.conv_channels=[4,4,4,4]", "model.hidden=16", *DSPRITES]),
    # stage 1: the reference btcvae run of this script (trained first when missing)
    "multistage": ("dsprites-multistage", ["model.steps=[0,[1,1],1]", "model.hidden=[4,8,8]",
                                           "model.dequantization=uniform", "model.stage1_run={stage1}", *DSPRITES]),
}


def _recipe(kind: str, work: Path, env: dict) -> tuple[str, list[str]]:
    """The preset and overrides of ``kind``, with the dSprites folder and the stage-1 run filled in."""
    from flowvae.data import shared_data_dir

    preset, sets = RECIPES[kind]
    stage1 = work / "btcvae-reference"
    if kind == "multistage" and not (stage1 / "model.safetensors").exists():
        reference("btcvae", work, 40, env)
    fill = {"dsprites": str((shared_data_dir() / "dsprites").resolve()), "stage1": str(stage1)}
    return preset, [x.format(**fill) for x in sets]


def _cli(run: Path, preset: str, sets: list[str], resume: bool) -> list[str]:
    return [sys.executable, "-c", CHILD, "train", preset, "--run", str(run), "-q",
            *(["--resume"] if resume else []), "--set", *sets]


def _metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    recs = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    for r in recs:
        r.pop("time_s", None)
    return recs


def _weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "model.safetensors"))


def reference(kind: str, work: Path, steps: int, env: dict) -> Path:
    """The uninterrupted run of ``kind``."""
    preset, sets = _recipe(kind, work, env)
    run = work / f"{kind}-reference"
    subprocess.run(_cli(run, preset, [*COMMON, *sets, f"train.steps={steps}"], False), check=True, env=env,
                   stdout=subprocess.DEVNULL, timeout=600)
    return run


def kill_chain(kind: str, work: Path, kills: int, steps: int = 160, seed: int = 0, pause_every: int = 4,
               ref: Path | None = None) -> dict:
    """Kill a training run ``kills`` times (SIGKILL), resuming after each, then compare it with an
    uninterrupted run. Returns ``{"kind", "kills", "aimed", "ok", "problems"}``; each problem is a
    sentence (weights differ, metrics differ, files left behind, a resume that failed)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rng = random.Random(seed)
    ref = ref or reference(kind, work, steps, env)
    preset, sets = _recipe(kind, work, env)
    sets = [*COMMON, *sets, f"train.steps={steps}"]
    run = work / f"{kind}-killed"
    mark = work / f"{kind}-paused"
    problems: list[str] = []
    done, aimed, n, t_start = 0, 0, 0, 1.2  # t_start: seconds to import torch and flowvae, roughly
    while done < kills:
        n += 1
        pause = ("tmp", "sidecar")[aimed % 2] if pause_every and n % pause_every == 0 else None
        mark.unlink(missing_ok=True)
        child_env = {**env, **({"KILL_TRIAL_PAUSE": pause, "KILL_TRIAL_MARK": str(mark)} if pause else {})}
        proc = subprocess.Popen(_cli(run, preset, sets, n > 1), env=child_env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.time() + (60 if pause else t_start + rng.uniform(0.0, 2.0))
        while time.time() < deadline and proc.poll() is None and not (pause and mark.exists()):
            time.sleep(0.002)
        if proc.poll() is not None:  # finished (or failed) before the kill
            err = proc.stderr.read() if proc.stderr else ""
            if proc.returncode != 0:
                problems.append(f"attempt {n} exited {proc.returncode}: {err.strip()[-300:]}")
                break
            if pause:  # no checkpoint was left to pause in; fine, but not an aimed kill
                continue
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stderr:
            proc.stderr.close()
        done += 1
        aimed += bool(pause)
    # Finish the run, untouched.
    res = subprocess.run(_cli(run, preset, sets, True), env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, timeout=600)
    if res.returncode != 0:
        problems.append(f"final resume exited {res.returncode}: {res.stderr.strip()[-300:]}")
    else:
        a, b = _weights(ref), _weights(run)
        differ = [k for k in a if k not in b or not bool((a[k] == b[k]).all())]
        if differ:
            problems.append(f"{len(differ)} of {len(a)} weight tensors differ from the uninterrupted run "
                            f"(first: {differ[0]})")
        ma, mb = _metrics(ref), _metrics(run)
        if ma != mb:
            problems.append(f"metrics.jsonl differs: steps {[r.get('step') for r in mb]} vs "
                            f"{[r.get('step') for r in ma]}")
    left = [p.name for folder in (run, run / "checkpoints", run / "samples") if folder.is_dir()
            for p in folder.iterdir() if re.search(r"\.tmp\d*$", p.name) or p.name == ".lock"]
    if left:
        problems.append(f"left behind: {', '.join(left[:5])}")
    return {"kind": kind, "kills": done, "aimed": aimed, "ok": not problems, "problems": problems}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kinds", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--kills", type=int, default=20, help="SIGKILLs per kind")
    ap.add_argument("--steps", type=int, default=160)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="kill-trials-") as tmp:
        for kind in args.kinds:
            t = time.time()
            r = kill_chain(kind, Path(tmp), args.kills, args.steps, args.seed)
            r["seconds"] = round(time.time() - t, 1)
            rows.append(r)
            print(f"{kind:13s} kills {r['kills']:3d} (aimed at checkpoint writes {r['aimed']:2d})  "
                  f"{'ok' if r['ok'] else 'FAILED: ' + '; '.join(r['problems'])}  [{r['seconds']} s]", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
