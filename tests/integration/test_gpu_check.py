"""benchmarks/gpu_check.py without a GPU: one line on stderr, exit status 1, nothing written.

The check itself needs a GPU (it runs tests/integration/test_cuda.py and the benchmark there); this is the
part of it CI can run, so that a machine without CUDA gets a clear refusal instead of a JSON
of failed parts that could pass for measurements.
"""

from __future__ import annotations

import os
import subprocess
import sys

from helpers import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def test_gpu_check_refuses_without_cuda_and_writes_no_json(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # hides a GPU where there is one
    r = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--budget-s", "60"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "CUDA" in lines[0], r.stderr
    assert r.stdout == ""
    assert list(tmp_path.iterdir()) == []  # neither the JSON nor its temporary file
