"""The multi-stage model: same disentanglement, better reconstruction?

    .venv/bin/python benchmarks/multistage.py --out runs/multistage                  # dSprites
    .venv/bin/python benchmarks/multistage.py --dataset mnist --out runs/ms-mnist    # binarised MNIST

Runs the library's commands in order (each step is skipped when its run folder already holds a
finished run, so an interrupted benchmark continues):

1. ``flowvae train dsprites-btcvae --run OUT/stage1`` (beta-TCVAE, beta = 6, MSS; stage 1);
2. ``flowvae train dsprites-multistage --run OUT/stage2 --set model.stage1_run=OUT/stage1
   model.recon_input=...`` (conditional Glow on the stage-1 factors; stage 2);
3. ``flowvae disentangle OUT/stage1`` on dSprites (MIG, DCI, SAP, FactorVAE, BetaVAE on the
   46,080-image factor grid; MNIST has no ground-truth factors). The multi-stage model's factors are
   stage 1's, so its scores are the same by construction, which step 6 checks on the codes;
4. ``flowvae eval --recon-fid`` of both runs on the test split: reconstruction bits/dim
   ``-log p(x | c)``, MSE on [0, 1], and FID/KID of the reconstructions from the factors against
   the test images (see ``flowvae.evaluation.reconstruction``);
5. ``flowvae traverse`` of both runs on the same test images.

``--dataset mnist`` trains the same two presets on MNIST binarised at 128 (``data.n_bits=1``, so
both stages' bits/dim are per binary pixel as on dSprites) at 28x28: stage 2 has one squeeze level
fewer (``model.steps=[0,[2,2],2]``).

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


def _evaluated(run: Path, n: int, fid: bool) -> bool:
    """Whether ``run/eval.json`` already holds the reconstruction figures on ``n`` images (with FID if asked):
    the Inception features take most of the time, so an interrupted benchmark does not redo them."""
    try:
        rec = json.loads((run / "eval.json").read_text())["reconstruction"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return rec.get("n") == n and (not fid or "fid" in rec)


def main(argv: list[str] | None = None) -> int:
    import torch

    from flowvae import load_run
    from flowvae.cli.main import main as cli

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/multistage")
    p.add_argument("--dataset", choices=["dsprites", "mnist"], default="dsprites")
    p.add_argument("--stage1-steps", type=int, default=6000)
    p.add_argument("--stage2-steps", type=int, default=2500)
    p.add_argument("--stage2-time-limit", type=float, default=None, metavar="S", help="wall-time cap of stage 2")
    p.add_argument("--recon-input", action=argparse.BooleanOptionalAction, default=True,
                   help="feed the stage-1 reconstruction to the couplings [default: on]")
    p.add_argument("--stage1", default=None, metavar="RUN", help="use this finished stage-1 run [default: OUT/stage1]")
    p.add_argument("--set", nargs="+", default=[], dest="overrides", metavar="KEY=VALUE",
                   help="extra config overrides of stage 2, e.g. model.dequantization=variational")
    p.add_argument("--eval-images", type=int, default=1000, help="test images for the reconstruction figures")
    p.add_argument("--no-fid", action="store_true", help="skip FID/KID of the reconstructions (needs flowvae[fid])")
    p.add_argument("--stage1-time-limit", type=float, default=None, metavar="S", help="wall-time cap of stage 1")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    out = Path(args.out)
    s1, s2 = Path(args.stage1) if args.stage1 else out / "stage1", out / "stage2"
    threads = [f"train.num_threads={args.threads}"] if args.threads else []
    data = {"dsprites": ([], []),
            "mnist": (["data.dataset=mnist", "model.image_size=28"],
                      ["data.dataset=mnist", "model.image_size=28", "model.steps=[0,[2,2],2]", "model.hidden=[8,64,64]"])}
    data1, data2 = data[args.dataset]
    timings = {}

    def run(cmd: list[str]) -> None:
        t = time.time()
        rc = cli(cmd)
        if rc != 0:
            raise SystemExit(f"command failed ({rc}): flowvae {' '.join(cmd)}")
        timings[cmd[0] + ":" + Path(cmd[1]).name] = round(time.time() - t, 1)

    if not _finished(s1):
        extra1 = [*data1, *threads]
        if args.stage1_time_limit:
            extra1.append(f"train.time_limit_s={args.stage1_time_limit}")
        run(["train", "dsprites-btcvae", "--run", str(s1), "--steps", str(args.stage1_steps), "--device", "cpu",
             "--no-progress", *(["--set", *extra1] if extra1 else [])])
    if not _finished(s2):
        extra = [*data2, f"model.stage1_run={s1}", f"model.recon_input={str(args.recon_input).lower()}", *threads,
                 *args.overrides]
        if args.stage2_time_limit:
            extra.append(f"train.time_limit_s={args.stage2_time_limit}")
        run(["train", "dsprites-multistage", "--run", str(s2), "--steps", str(args.stage2_steps), "--device", "cpu",
             "--no-progress", "--set", *extra])
    grid = args.dataset == "dsprites"
    if grid and not (s1 / "disentanglement.json").is_file():  # deterministic (seeded): once per stage-1 run
        run(["disentangle", str(s1), "--device", "cpu", "-q"])
    for r in (s1, s2):
        if not _evaluated(r, args.eval_images, not args.no_fid):
            run(["eval", str(r), "-k", "1", "--limit", str(args.eval_images), "--device", "cpu", "-q",
                 *([] if args.no_fid else ["--recon-fid"])])
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
    dis = json.loads((s1 / "disentanglement.json").read_text()) if grid else None
    e1, e2 = (json.loads((r / "eval.json").read_text()) for r in (s1, s2))
    r1, r2 = e1["reconstruction"], e2["reconstruction"]
    steps = [json.loads(line)["step"] for r in (s1, s2) for line in (r / "metrics.jsonl").read_text().splitlines()[-1:]]
    times = [json.loads((r / "metrics.jsonl").read_text().splitlines()[-1])["time_s"] for r in (s1, s2)]
    res = {"dataset": args.dataset, "stage1": {"steps": steps[0], "train_time_s": times[0], "reconstruction": r1},
           "multistage": {"steps": steps[1], "train_time_s": times[1], "reconstruction": r2,
                          "recon_input": m2.decoder.recon_input},
           "factors_identical": same, "command_times_s": timings}
    if dis is not None:
        res["disentanglement"] = {k: dis[k] for k in ("mig", "dci", "sap", "factorvae", "betavae")}
    out.mkdir(parents=True, exist_ok=True)
    (out / "multistage.json").write_text(json.dumps(res, indent=2))
    (out / "multistage.md").write_text("\n".join(_table(res, m2.decoder.recon_input)) + "\n")
    print((out / "multistage.md").read_text(), end="")
    return 0


def _table(res: dict, recon_input: bool) -> list[str]:
    """The Markdown table of ``multistage.json``: one row per way of reconstructing from the factors."""
    r1, r2 = res["stage1"]["reconstruction"], res["multistage"]["reconstruction"]
    s1, s2 = res["stage1"], res["multistage"]
    name = {"dsprites": "dSprites (factor grid, 90/10 split)", "mnist": "MNIST binarised at 128"}[res["dataset"]]
    lines = [f"{name}; test figures on {r1['n']} test images. Stage 1: beta-TCVAE ({s1['steps']} steps, "
             f"{s1['train_time_s'] / 60:.1f} min); multi-stage: conditional Glow on the stage-1 factors "
             f"({s2['steps']} steps, {s2['train_time_s'] / 60:.1f} min, reconstruction input "
             f"{'on' if recon_input else 'off'}). FID/KID: the reconstructions against the same test images.", ""]
    d = res.get("disentanglement")
    head = ["model", "reconstruction from the factors"]
    if d:
        head += ["MIG", "DCI dis.", "DCI compl.", "DCI inform. (test)", "SAP", "FactorVAE", "BetaVAE"]
    head += ["bits/dim, -log p(x|c)", "MSE", "FID", "KID"]
    lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    scores = ([f"{d['mig']['discrete_mig']:.3f}", f"{d['dci']['disentanglement']:.3f}", f"{d['dci']['completeness']:.3f}",
               f"{d['dci']['informativeness_test']:.3f}", f"{d['sap']['SAP_score']:.3f}",
               f"{d['factorvae']['eval_accuracy']:.3f}", f"{d['betavae']['eval_accuracy']:.3f}"] if d else [])
    same = ["same factors" if res["factors_identical"] else "FACTORS DIFFER"] + [""] * (len(scores) - 1) if d else []

    def fid(f: dict | None) -> list[str]:
        return [f"{f['fid']:.2f}", f"{f['kid_mean']:.4f} +- {f['kid_std']:.4f}"] if f else ["", ""]

    lines.append("| " + " | ".join(["stage 1: beta-TCVAE", "mean image", *scores, f"{r1['recon_bpd']:.4f} (exact)",
                                      f"{r1['mse']:.5f}", *fid(r1.get("fid"))]) + " |")
    for i, (t, mse) in enumerate(r2["mse"].items()):
        how = "v = 0" if t == "T=0.0" else f"v ~ N(0, {t[2:]}^2 I)"
        bpd = f"{r2['recon_bpd']:.4f} (bound)" if i == 0 else ""
        lines.append("| " + " | ".join(["multi-stage", how, *same, bpd, f"{mse:.5f}",
                                          *fid((r2.get("fid") or {}).get(t))]) + " |")
    lines.append("| " + " | ".join(["multi-stage", "the image's own v", *same, "", "0 (exact)", "", ""]) + " |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
