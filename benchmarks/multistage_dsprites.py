"""The multi-stage model on dSprites: same disentanglement, better reconstruction?

    .venv/bin/python benchmarks/multistage_dsprites.py --out runs/multistage

Runs the library's commands in order (each step is skipped when its run folder already holds a
finished run, so an interrupted benchmark continues):

1. ``flowvae train dsprites-btcvae --run OUT/stage1`` (beta-TCVAE, beta = 6, MSS; stage 1);
2. ``flowvae train dsprites-multistage --run OUT/stage2 --set model.stage1_run=OUT/stage1
   model.recon_input=...`` (conditional Glow on the stage-1 factors; stage 2);
3. ``flowvae disentangle OUT/stage1`` (MIG, DCI, SAP, FactorVAE, BetaVAE on the 46,080-image factor
   grid; the multi-stage model's factors are stage 1's, so its scores are the same by construction,
   which step 4 checks on the codes);
4. ``flowvae eval`` of both runs on the test split (reconstruction bits/dim ``-log p(x | c)`` and MSE
   on [0, 1]; see ``flowvae.evaluation.reconstruction``);
5. ``flowvae traverse`` of both runs on the same test images.

Writes ``OUT/multistage.md`` (the table), ``OUT/multistage.json`` and ``OUT/reconstructions.png``
(rows: 12 test images; stage 1's mean image; stage 2 from the factors with v = 0; stage 2 with each
image's own local code, which is exact).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _finished(run: Path) -> bool:
    return (run / "model.safetensors").is_file()


def main(argv: list[str] | None = None) -> int:
    import torch

    from flowvae import load_run
    from flowvae.cli.main import main as cli

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/multistage")
    p.add_argument("--stage1-steps", type=int, default=6000)
    p.add_argument("--stage2-steps", type=int, default=2500)
    p.add_argument("--stage2-time-limit", type=float, default=None, metavar="S", help="wall-time cap of stage 2")
    p.add_argument("--recon-input", action=argparse.BooleanOptionalAction, default=True,
                   help="feed the stage-1 reconstruction to the couplings [default: on]")
    p.add_argument("--stage1", default=None, metavar="RUN", help="use this finished stage-1 run [default: OUT/stage1]")
    p.add_argument("--set", nargs="+", default=[], dest="overrides", metavar="KEY=VALUE",
                   help="extra config overrides of stage 2, e.g. model.dequantization=variational")
    p.add_argument("--eval-images", type=int, default=1000, help="test images for the reconstruction figures")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    out = Path(args.out)
    s1, s2 = Path(args.stage1) if args.stage1 else out / "stage1", out / "stage2"
    threads = [f"train.num_threads={args.threads}"] if args.threads else []
    timings = {}

    def run(cmd: list[str]) -> None:
        t = time.time()
        rc = cli(cmd)
        if rc != 0:
            raise SystemExit(f"command failed ({rc}): flowvae {' '.join(cmd)}")
        timings[cmd[0] + ":" + Path(cmd[1]).name] = round(time.time() - t, 1)

    if not _finished(s1):
        run(["train", "dsprites-btcvae", "--run", str(s1), "--steps", str(args.stage1_steps), "--device", "cpu",
             "--no-progress", *(["--set", *threads] if threads else [])])
    if not _finished(s2):
        extra = [f"model.stage1_run={s1}", f"model.recon_input={str(args.recon_input).lower()}", *threads,
                 *args.overrides]
        if args.stage2_time_limit:
            extra.append(f"train.time_limit_s={args.stage2_time_limit}")
        run(["train", "dsprites-multistage", "--run", str(s2), "--steps", str(args.stage2_steps), "--device", "cpu",
             "--no-progress", "--set", *extra])
    if not (s1 / "disentanglement.json").is_file():  # deterministic (seeded): computed once per stage-1 run
        run(["disentangle", str(s1), "--device", "cpu", "-q"])
    for r in (s1, s2):
        run(["eval", str(r), "-k", "1", "--limit", str(args.eval_images), "--device", "cpu", "-q"])
        run(["traverse", str(r), "--index", "0", "7", "--range", "2.5", "--steps", "9", "--device", "cpu", "-q",
             *(["--local", "zero"] if r == s2 else [])])

    # The combined model's factors are stage 1's: check on the test images.
    m1, m2 = load_run(s1), load_run(s2)
    from flowvae.training.trainer import load_data

    test = load_data(m1.config, "test").images  # in file order: shapes come in blocks, so draw at random
    x = test[torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:512]]
    same = bool(torch.allclose(m1.encode(x), m2.encode(x)[0]))
    # Rows: test images; stage 1's mean image; stage 2 from the factors with v = 0; stage 2 with the
    # image's own local code v (exact).
    from flowvae.imaging import save_grid

    pick = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:12]]
    c, v = m2.encode(pick)
    rows = [pick, m1.reconstruct(pick), m2.reconstruct(pick, 0.0), m2.decode(c, v)]
    save_grid(torch.cat(rows), out / "reconstructions.png", nrow=12, scale=1)
    dis = json.loads((s1 / "disentanglement.json").read_text())
    e1, e2 = (json.loads((r / "eval.json").read_text()) for r in (s1, s2))
    r1, r2 = e1["reconstruction"], e2["reconstruction"]
    steps = [json.loads(line)["step"] for r in (s1, s2) for line in (r / "metrics.jsonl").read_text().splitlines()[-1:]]
    times = [json.loads((r / "metrics.jsonl").read_text().splitlines()[-1])["time_s"] for r in (s1, s2)]
    res = {"stage1": {"steps": steps[0], "train_time_s": times[0], "reconstruction": r1},
           "multistage": {"steps": steps[1], "train_time_s": times[1], "reconstruction": r2,
                          "recon_input": m2.decoder.recon_input},
           "factors_identical": same, "disentanglement": {k: dis[k] for k in ("mig", "dci", "sap", "factorvae", "betavae")},
           "command_times_s": timings}
    out.mkdir(parents=True, exist_ok=True)
    (out / "multistage.json").write_text(json.dumps(res, indent=2))
    d = dis
    mse2 = r2["mse"]
    lines = [
        f"dSprites (factor grid, 90/10 split; test figures on {r1['n']} test images). Stage 1: beta-TCVAE "
        f"({steps[0]} steps, {times[0] / 60:.1f} min); multi-stage: conditional Glow on the stage-1 factors "
        f"({steps[1]} steps, {times[1] / 60:.1f} min, reconstruction input {'on' if m2.decoder.recon_input else 'off'}).",
        "",
        "| model | MIG | DCI disentanglement | DCI completeness | DCI informativeness (test) | SAP | FactorVAE | BetaVAE "
        "| reconstruction bits/dim | MSE |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    scores = (f"{d['mig']['discrete_mig']:.3f} | {d['dci']['disentanglement']:.3f} | {d['dci']['completeness']:.3f} | "
              f"{d['dci']['informativeness_test']:.3f} | {d['sap']['SAP_score']:.3f} | "
              f"{d['factorvae']['eval_accuracy']:.3f} | {d['betavae']['eval_accuracy']:.3f}")
    lines.append(f"| stage 1 (beta-TCVAE) | {scores} | {r1['recon_bpd']:.4f} | {r1['mse']:.5f} (mean image) |")
    same_txt = "same factors" if same else "FACTORS DIFFER"
    lines.append(f"| multi-stage | {same_txt} | | | | | | | {r2['recon_bpd']:.4f} | "
                 + ", ".join(f"{k}: {v:.5f}" for k, v in mse2.items()) + " |")
    lines.append("| multi-stage, own local code v | same factors | | | | | | | (same) | 0 (exact: v = f(x; c)) |")
    (out / "multistage.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
