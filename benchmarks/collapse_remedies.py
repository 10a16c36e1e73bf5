"""Does z carry the class? The paper's model on the 8x8 digits, with and without the remedies for
posterior collapse (departures from the paper), read by the KL, two probes and the switch metric.

    .venv/bin/python benchmarks/collapse_remedies.py --out runs/remedies [--seeds 0 1] [--jobs 2]
    .venv/bin/python benchmarks/collapse_remedies.py --variants paper dz32-fb8   # a subset

For each variant and seed it runs the library's commands, each on one thread (``--jobs`` of them at
once; two on a 2-core machine):

1. ``flowvae train digits --run OUT/VARIANT-sSEED --seed SEED --set train.num_threads=1 ...``;
2. ``flowvae eval`` (test bits/dim, negative ELBO with K = 5, and the KL);
3. ``flowvae probe`` with the standard protocol (standardised features, LinearSVC, C by 3-fold CV),
   then ``flowvae probe --protocol authors`` (SVC, linear kernel, C = 1, no scaling);
4. ``flowvae switch --json`` (the class of each decode of (v1, z2), over 500 pairs of different classes).

A finished step is not redone. Writes ``OUT/remedies.md`` (the table) and ``OUT/remedies.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

VARIANTS: dict[str, list[str]] = {
    "paper": [],                                               # the digits preset, the paper's objective
    "dz32": ["model.d_z=32"],
    "fb8": ["model.free_bits=8"],
    "dz32-fb8": ["model.d_z=32", "model.free_bits=8"],         # = the digits-global preset (the demo)
    "local": ["model.coupling_kernel=1"],
    "local-fb8": ["model.coupling_kernel=1", "model.free_bits=8"],
    "local-dz32-fb8": ["model.coupling_kernel=1", "model.d_z=32", "model.free_bits=8"],
    "local-warmup": ["model.coupling_kernel=1", "train.kl_warmup_steps=1000"],
}


def _flowvae(*args: str, out: Path | None = None) -> None:
    exe = Path(sys.executable).with_name("flowvae")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(out, "w") if out else open(os.devnull, "w") as f:
        subprocess.run([str(exe), *args, "--device", "cpu"], check=True, env=env, stdout=f)


def _one(out: Path, name: str, seed: int) -> dict:
    run = out / f"{name}-s{seed}"
    if not (run / "model.safetensors").is_file():
        _flowvae("train", "digits", "--run", str(run), "--seed", str(seed), "-q",
                 "--set", "train.num_threads=1", *VARIANTS[name])
    steps = [("eval.json", ["eval", str(run), "-q"]),
             ("probe-standard.json", ["probe", str(run), "--json", "-q"]),
             ("probe-authors.json", ["probe", str(run), "--protocol", "authors", "--json", "-q"]),
             ("switch-metric.json", ["switch", str(run), "--json", "-q"])]
    for fname, args in steps:
        if not (run / fname).is_file():
            _flowvae(*args, out=None if fname == "eval.json" else run / fname)
    ev = json.loads((run / "eval.json").read_text())
    std, auth = (json.loads((run / f).read_text()) for f in ("probe-standard.json", "probe-authors.json"))
    sw = json.loads((run / "switch-metric.json").read_text())["metric"]
    return {"variant": name, "seed": seed, "overrides": VARIANTS[name], "bpd": ev["elbo_bpd"], "kl_nats": ev["kl"],
            "probe_z": std["results"]["z"]["accuracy"], "probe_v": std["results"]["v"]["accuracy"],
            "authors_z": auth["results"]["z"]["accuracy"], "authors_v": auth["results"]["v"]["accuracy"],
            "pixels": std["results"]["pixels"]["accuracy"],
            "follow_z": sw["follow_z"], "follow_v": sw["follow_v"], "neither": sw["neither"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/remedies")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--jobs", type=int, default=2, help="runs at once, one thread each")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    todo = [(v, s) for v in a.variants for s in a.seeds]
    with ThreadPoolExecutor(a.jobs) as pool:
        rows = list(pool.map(lambda vs: _one(out, *vs), todo))
    pct = "{:.1%}".format
    lines = ["| variant | seed | test bits/dim (K = 5) | KL, nats | probe z / v (standard) | probe z / v (authors) "
             "| switch: follows z / v / neither |", "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['variant']} (`{' '.join(r['overrides']) or 'digits preset'}`) | {r['seed']} | {r['bpd']:.3f} | "
              f"{r['kl_nats']:.2f} | {pct(r['probe_z'])} / {pct(r['probe_v'])} | {pct(r['authors_z'])} / "
              f"{pct(r['authors_v'])} | {pct(r['follow_z'])} / {pct(r['follow_v'])} / {pct(r['neither'])} |"
              for r in rows]
    (out / "remedies.md").write_text("\n".join(lines) + "\n")
    (out / "remedies.json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
