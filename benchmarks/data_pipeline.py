"""Training data at scale: peak memory and loader throughput on image folders of 2k, 20k and 200k files.

Folders are made from the real CIFAR-10 JPEGs in ``../shared/data/cifar10-jpeg`` (hard links to
the 50,000 extracted training files, ``CLASS/NNNNNN.jpg``, so 200k files cost little disk). For
each size, in a fresh process each (so peak resident memory is that of one reader):

* **in memory**: ``load_dataset("folder", root)``, every image decoded into one uint8 tensor
  (the only path before streaming), then batches of 64 indexed from it;
* **streamed**: :class:`flowvae.data.streaming.ImageFiles` read by ``DataLoader`` workers through
  :class:`~flowvae.data.streaming.StreamingSource`, the trainer's streaming path, 64 per batch.

Printed: setup seconds, peak RSS of the process and its workers (MB), and images/s delivered, next
to the images/s of one training step of the ``cifar10-small`` preset on the same machine (the
loader must deliver several times what a step consumes).

    OMP_NUM_THREADS=1 python benchmarks/data_pipeline.py --sizes 2000 20000 200000 --workers 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ZIP = Path("..") / "shared" / "data" / "cifar10-jpeg" / "cifar10-jpeg-images.zip"


def _extract(work: Path) -> Path:
    src = work / "train-src"
    if (src / "done").exists():
        return src
    with zipfile.ZipFile(ZIP) as z:
        names = [n for n in z.namelist() if n.startswith("train/") and n.endswith(".jpg")]
        for i, name in enumerate(sorted(names)):
            cls = name.split("/")[1]
            out = src / cls / f"{i:06d}.jpg"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(z.read(name))
    (src / "done").write_text("ok")
    return src


def _folder(work: Path, src: Path, n: int) -> Path:
    root = work / f"n{n}"
    if (root / ".done").exists():
        return root
    files = sorted(p for p in src.rglob("*.jpg"))
    for k in range(n):
        f = files[k % len(files)]
        out = root / f.parent.name / f"{k:06d}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        if not out.exists():
            os.link(f, out)
    (root / ".done").write_text("ok")
    return root


CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(1)
mode, root, batches, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
t0 = time.time()
from flowvae.data.streaming import ImageFiles, InMemorySource, ShuffledOrder, StreamingSource
if mode == "memory":
    from flowvae.data import load_dataset
    data = load_dataset("folder", "train", root=root)
    source, n = InMemorySource(data.images), len(data)
else:
    files = ImageFiles.from_folder(root, 3, None)
    source, n = StreamingSource(files, workers), len(files)
order = ShuffledOrder(n, 64, 0)
source.start(order, 0, 64)
setup = time.time() - t0
t1 = time.time()
for _ in range(batches):
    idx, _ = order.next()
    x = source.fetch(idx)
rate = batches * 64 / (time.time() - t1)
source.close()
peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
print(json.dumps({"setup_s": setup, "peak_rss_mb": peak, "images_per_s": rate}))
"""

STEP = r"""
import json, time, torch
torch.set_num_threads(int(__import__("os").environ.get("OMP_NUM_THREADS", "1")))
from flowvae.presets import get_preset
from flowvae.models.base import create_model
cfg = get_preset("cifar10-small")
model = create_model(cfg).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
g = torch.Generator().manual_seed(0)
with torch.no_grad():
    from flowvae.flows.base import data_init
    with data_init(model):
        model.loss(x, g)
times = []
for i in range(4):
    t = time.time()
    loss, _ = model(x, g)
    opt.zero_grad(); loss.backward(); opt.step()
    times.append(time.time() - t)
print(json.dumps({"step_s": min(times[1:]), "images_per_s": 64 / min(times[1:])}))
"""


def _run(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000, 200000])
    ap.add_argument("--workers", type=int, default=1, help="DataLoader workers of the streamed path")
    ap.add_argument("--batches", type=int, default=60, help="batches of 64 timed per measurement")
    ap.add_argument("--modes", nargs="+", default=["memory", "streamed"], choices=["memory", "streamed"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/flowvae-data-bench"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    src = _extract(args.work)
    step = _run(STEP)
    print(f"cifar10-small training step: {step['step_s']:.2f} s per batch of 64 = {step['images_per_s']:.0f} images/s "
          f"({os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')})")
    print(f"{'files':>8s} {'path':9s} {'setup s':>8s} {'peak RSS MB':>12s} {'images/s':>9s} {'x step':>7s}")
    rows = []
    for n in args.sizes:
        root = _folder(args.work, src, n)
        for mode in args.modes:
            r = _run(CHILD, mode, str(root), str(args.batches), str(args.workers))
            r.update(files=n, path=mode, x_step=r["images_per_s"] / step["images_per_s"])
            rows.append(r)
            print(f"{n:8d} {mode:9s} {r['setup_s']:8.1f} {r['peak_rss_mb']:12.0f} {r['images_per_s']:9.0f} "
                  f"{r['x_step']:7.1f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"step": step, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
