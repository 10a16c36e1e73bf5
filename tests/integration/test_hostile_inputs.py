"""The last hostile inputs of issue 32: each is refused in one line (a FlowVAEError; on the command
line ``flowvae CMD: error: ...``, exit 1, no traceback) before it costs memory or follows a link.

* a ``torch.save`` archive whose entry is deflate-compressed to state 4 GiB (``import-wolf``'s
  ``model.pt``, a run folder's checkpoint with a matching checksum): refused from the zip directory,
  in bounded memory (the CLI runs in a subprocess under an address-space limit, its peak resident
  memory measured);
* nesting deep enough to exhaust Python's stack (``config.json``, a YAML config, ``--set``) and a
  YAML mapping key given twice;
* unbounded counts: ``eval -k 100000000``, ``model.sample(10**12)`` of every kind, ``meta`` images;
* ``data.on_bad=skip`` on a small folder whose automatic batch size counted the unreadable files;
* a plain-pickle ``model.pt`` or checkpoint: no torch warning, no advice to load it unsafely;
* links and FIFOs in image folders (one warning line), a Hub cache whose ``blobs`` folder links
  out of the cache, a FIFO ``config.yaml``.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import pickle
import re
import resource
import shutil
import struct
import subprocess
import sys
import threading
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from flowvae.api import load_run
from flowvae.cli.main import main
from flowvae.config import _parse_override, load_config, parse_yaml
from flowvae.errors import CheckpointError, ConfigError, DataError
from flowvae.models import MODEL_KINDS, create_model
from flowvae.presets import get_preset, resolve
from flowvae.runs.checkpoints import list_checkpoints, load_latest_checkpoint
from flowvae.safe_io import check_torch_archive

pytestmark = pytest.mark.usefixtures("single_thread")

LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING) ")
BOMB_BYTES = 4 * 2**30 - 256  # the most a zip entry states without zip64
TORCH_ADVICE = ("weights_only", "will likely succeed", "trusted source", "file an issue")


# ---------------------------------------------------------------------------------------------- helpers

def _deflate_zeros(n: int) -> bytes:
    """A raw deflate stream that inflates to ``n`` zero bytes while taking about ``n / 1032`` bytes:
    one dynamic Huffman block whose codes are a literal 0 and a match of 258 at distance 1, one bit
    each for length and distance, so the body is zero bytes (built at once, nothing compressed)."""
    out, acc, bits = bytearray(), 0, 0

    def put(value: int, width: int) -> None:  # fields LSB first
        nonlocal acc, bits
        acc |= value << bits
        bits += width
        while bits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            bits -= 8

    def code(text: str) -> None:  # Huffman codes MSB first
        for c in text:
            put(int(c), 1)

    put(1, 1)
    put(2, 2)  # final block, dynamic Huffman
    put(29, 5)
    put(0, 5)
    put(14, 4)  # 286 literal/length codes, 1 distance code, 18 code-length codes
    order = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1]
    for sym in order:
        put({18: 1, 2: 2, 1: 2}.get(sym, 0), 3)  # code lengths: 18 -> "0", 1 -> "10", 2 -> "11"
    code("11")  # literal 0: length 2
    code("0")
    put(138 - 11, 7)
    code("0")
    put(117 - 11, 7)  # literals 1..255 unused
    code("11")  # end of block: length 2
    code("0")
    put(28 - 11, 7)  # lengths 257..284 unused
    code("10")  # length 258 (symbol 285): length 1
    code("10")  # distance 1: length 1
    # literal 0 -> "10", end of block -> "11", length 258 -> "0", distance 1 -> "0"
    code("10")
    matches, rest = divmod(n - 1, 258)
    zero_bits = 2 * matches
    first = min(zero_bits, (-bits) % 8)
    put(0, first)
    zero_bits -= first
    if bits == 0:
        out += bytes(zero_bits // 8)
        zero_bits %= 8
    put(0, zero_bits)
    for _ in range(rest):
        code("10")
    code("11")
    if bits:
        put(0, 8 - bits)
    return bytes(out)


def _zip(entries: list[tuple[str, int, int, int, int, bytes]]) -> bytes:
    """A zip of ``(name, method, crc, compressed size, stated size, payload)`` entries, written by hand
    so that an entry can state any size."""
    out, central = bytearray(), bytearray()
    for name, method, crc, csize, usize, payload in entries:
        offset = len(out)
        raw = name.encode()
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, csize, usize, len(raw), 0)
        out += raw + payload
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, csize, usize,
                               len(raw), 0, 0, 0, 0, 0, offset) + raw
    start = len(out)
    out += central
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central), start, 0)
    return bytes(out)


def _torch_entries(obj: object) -> list[tuple[str, int, int, int, int, bytes]]:
    buf = io.BytesIO()
    torch.save(obj, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        return [(i.filename, zipfile.ZIP_STORED, i.CRC, i.file_size, i.file_size, zf.read(i)) for i in zf.infolist()]


def deflate_bomb(obj: object, stated: int = BOMB_BYTES) -> bytes:
    """``torch.save(obj)`` (whose first storage must be ``data/0``) with that entry replaced by a
    deflate stream that really inflates to ``stated`` zero bytes: about 4 MB for 4 GiB."""
    stream = _deflate_zeros(stated)
    entries = _torch_entries(obj)
    # CRC 0: the inflating happens (and costs its memory) before a CRC could be checked
    return _zip([(e[0], zipfile.ZIP_DEFLATED, 0, len(stream), stated, stream) if e[0].endswith("/data/0") else e
                 for e in entries])


@functools.cache
def _baseline_address_space() -> int:
    """Bytes of address space a fresh interpreter holds once the command line and scikit-learn are
    imported: about 0.8 GiB with a CPU build of torch, 3.2 GiB with a CUDA build (its libraries are
    mapped at import), so the limit below is set above it rather than as a fixed figure."""
    out = subprocess.run([sys.executable, "-c", _BASELINE], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    return int(out.stdout) * 1024


_BASELINE = """
import flowvae.cli.main, sklearn.linear_model
with open("/proc/self/status") as f:
    print(next(line.split()[1] for line in f if line.startswith("VmPeak:")))
"""


def _limit_memory(limit: int) -> None:  # in the child, before exec: a regression fails to allocate
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


# Runs the command line and, however it ends, writes the process's peak resident memory (VmHWM of
# /proc/self/status, in kB) to the file named by the first argument. Not ru_maxrss: Linux carries
# that over fork and exec, so a child of a large pytest process would report the parent's peak.
_MEASURED_MAIN = """
import sys
def peak():
    with open("/proc/self/status") as f:
        return next(line.split()[1] for line in f if line.startswith("VmHWM:"))
try:
    from flowvae.cli.main import main
    code = main(sys.argv[2:])
finally:
    with open(sys.argv[1], "w") as out:
        out.write(peak())
sys.exit(code)
"""


def run_cli(argv: list[str], tmp_path: Path, timeout: float = 120) -> tuple[int, str, float]:
    """The ``flowvae`` command line with ``ARGV`` in a subprocess whose address space is limited to
    3 GiB above what the imports alone take (less than a 4 GiB bomb would need):
    ``(exit status, standard error, peak resident memory of that process in MiB)``."""
    limit = _baseline_address_space() + 3 * 2**30
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FLOWVAE_TUNE_MALLOC": "0"}
    n = len(list(tmp_path.glob("stderr-*")))
    err_path, peak_path = tmp_path / f"stderr-{n}.txt", tmp_path / f"peak-{n}.txt"
    with open(err_path, "wb") as err:
        p = subprocess.Popen([sys.executable, "-c", _MEASURED_MAIN, str(peak_path), *argv], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=err, env=env, preexec_fn=functools.partial(_limit_memory, limit))
        timer = threading.Timer(timeout, p.kill)
        timer.start()
        try:
            p.wait()
        finally:
            timer.cancel()
    peak = int(peak_path.read_text()) / 1024 if peak_path.is_file() else float("inf")
    return p.returncode, err_path.read_text(errors="replace"), peak


def error_line(err: str, command: str) -> str:
    """The one line of ``err`` that is not a log line: ``flowvae COMMAND: error: ...``, no traceback."""
    lines = [line for line in err.strip().splitlines() if line.strip() and not LOG_LINE.match(line)]
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith(f"flowvae {command}: error: "), lines[0]
    return lines[0]


def _run_without_weights(tiny_runs, dest: Path) -> Path:
    run = Path(shutil.copytree(tiny_runs["flowvae"], dest))
    (run / "model.safetensors").unlink()
    return run


def _replace_checkpoint(run: Path, data: bytes) -> Path:
    ckpt = list_checkpoints(run / "checkpoints")[-1]
    ckpt.write_bytes(data)
    ckpt.with_suffix(".pt.sha256").write_text(hashlib.sha256(data).hexdigest())
    return ckpt


# ---------------------------------------------------------------------------------------------- item 11

def test_the_bomb_is_what_it_claims():
    """The hand-made stream really inflates to the stated size (checked on a small one)."""
    import zlib

    for n in (1, 257, 259, 10_000, 1_000_003):
        assert zlib.decompressobj(-15).decompress(_deflate_zeros(n)) == bytes(n)
    assert len(_deflate_zeros(BOMB_BYTES)) < 4_200_000


def test_check_torch_archive_refuses_compressed_and_oversized_entries(tmp_path):
    good = _torch_entries({"w": torch.zeros(3)})
    check_torch_archive(_zip(good))  # what torch.save writes passes
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(3)}, buf, _use_new_zipfile_serialization=False)
    check_torch_archive(buf.getvalue())  # not a zip: left to torch.load

    with pytest.raises(CheckpointError, match=r"entry 'archive/data/0' is compressed \(deflate, stating "
                                              r"4,294,967,040 bytes"):
        check_torch_archive(deflate_bomb({"w": torch.zeros(3)}), "model.pt")
    lying = [(n, m, c, s, 2**31 if n.endswith("/data/0") else u, p) for n, m, c, s, u, p in good]
    with pytest.raises(CheckpointError, match="more than the .* of the file itself"):
        check_torch_archive(_zip(lying), "x.pt")
    path = tmp_path / "x.pt"
    path.write_bytes(_zip(lying))
    with open(path, "rb") as f:
        f.seek(5)
        with pytest.raises(CheckpointError, match="x.pt"):
            check_torch_archive(f)
        assert f.tell() == 5  # a file object is left where it was
    with pytest.raises(CheckpointError, match="its directory cannot be read"):
        check_torch_archive(b"PK\x03\x04" + bytes(100), "x.pt")


def test_import_wolf_refuses_a_deflate_bomb_in_bounded_memory(tmp_path):
    src = tmp_path / "wolf"
    src.mkdir()
    (src / "config.json").write_text("{}")
    (src / "model.pt").write_bytes(deflate_bomb({"core": {"w": torch.zeros(4)}}))
    assert (src / "model.pt").stat().st_size < 5_000_000
    rc, err, peak = run_cli(["import-wolf", str(src), "--run", str(tmp_path / "run")], tmp_path)
    line = error_line(err, "import-wolf")
    assert rc == 1 and "is compressed (deflate" in line and "model.pt" in line, line
    assert peak < 1024, f"peak resident memory {peak:.0f} MiB"
    assert not (tmp_path / "run").exists()


def test_a_checkpoint_deflate_bomb_is_skipped_in_bounded_memory(tiny_runs, tmp_path):
    run = _run_without_weights(tiny_runs, tmp_path / "run")
    state = {"format_version": 1, "model": {"w": torch.zeros(4)}}
    ckpt = _replace_checkpoint(run, deflate_bomb(state))
    skipped: list[tuple[Path, str]] = []
    assert load_latest_checkpoint(run / "checkpoints", skipped) is None
    assert skipped and skipped[0][0] == ckpt and "is compressed (deflate" in skipped[0][1]
    rc, err, peak = run_cli(["eval", str(run), "--limit", "8", "-k", "1", "--device", "cpu"], tmp_path)
    line = error_line(err, "eval")
    assert rc == 1 and "neither model.safetensors nor a valid checkpoint" in line, line
    assert "is compressed (deflate" in err  # the warning that skipped it names why
    assert peak < 1024, f"peak resident memory {peak:.0f} MiB"


# ---------------------------------------------------------------------------------------------- item 12

def test_deep_json_in_import_wolf_is_one_line(tmp_path, capsys):
    for name, text in {"deep": "[" * 200_000, "closed": "[" * 40 + "]" * 40}.items():
        src = tmp_path / name
        src.mkdir()
        (src / "config.json").write_text(text)
        assert main(["import-wolf", str(src), "--run", str(tmp_path / f"run-{name}")]) == 1
        line = error_line(capsys.readouterr().err, "import-wolf")
        assert "nests lists or objects" in line and "config.json" in line, line


def test_deep_yaml_is_one_config_error(tiny_runs, tmp_path, capsys):
    deep = tmp_path / "deep.yaml"
    deep.write_text("[" * 100_000)
    with pytest.raises(ConfigError, match="more than 32 levels deep") as e:
        load_config(deep)
    assert "\n" not in str(e.value)
    assert main(["train", str(deep), "--run", str(tmp_path / "r1")]) == 1
    assert "more than 32 levels deep" in error_line(capsys.readouterr().err, "train")

    run = Path(shutil.copytree(tiny_runs["flowvae"], tmp_path / "run"))
    (run / "config.yaml").write_text("model:\n  steps: " + "[" * 100_000)
    for argv in (["eval", str(run), "--limit", "8", "-k", "1"], ["sample", str(run), "-n", "2"]):
        assert main([*argv, "--device", "cpu"]) == 1
        assert "more than 32 levels deep" in error_line(capsys.readouterr().err, argv[0])

    bomb = "train.betas=" + "[" * 100_000 + "0.9" + "]" * 100_000
    assert main(["train", "digits", "--run", str(tmp_path / "r2"), "--set", bomb]) == 1
    line = error_line(capsys.readouterr().err, "train")
    assert "cannot parse the value of train.betas" in line and len(line) < 300, line


def test_duplicate_yaml_keys_are_refused_with_their_lines(tiny_runs, tmp_path, capsys):
    run = Path(shutil.copytree(tiny_runs["flowvae"], tmp_path / "run"))
    text = (run / "config.yaml").read_text()
    assert "\ntrain:\n" in text
    (run / "config.yaml").write_text(text.replace("\ntrain:\n", "\ntrain:\n  lr: 0.5\n", 1) + "  lr: 0.25\n")
    with pytest.raises(ConfigError, match=r"the key 'lr' is given twice \(lines \d+ and \d+\)"):
        load_config(run / "config.yaml")
    assert main(["eval", str(run), "--limit", "8", "-k", "1", "--device", "cpu"]) == 1
    assert "the key 'lr' is given twice" in error_line(capsys.readouterr().err, "eval")
    with pytest.raises(ConfigError, match="the key 'a' is given twice"):
        _parse_override("model.steps={a: 1, a: 2}")
    # merge keys may repeat what they merge: YAML's own way of overriding, not a duplicate
    assert parse_yaml("x: &a {p: 1}\ny:\n  <<: *a\n  p: 2\n") == {"x": {"p": 1}, "y": {"p": 2}}
    assert yaml.safe_load("a: 1\na: 2\n") == {"a": 2}  # what PyYAML alone does, silently


# ---------------------------------------------------------------------------------------------- item 13

def _small_model(kind: str):
    """A freshly built model of ``kind`` (no training: the bounds come before any computation)."""
    from helpers.tiny import RECIPES

    recipe = RECIPES[kind]
    model_overrides = [o for o in recipe.overrides if o.startswith("model.") and "stage1_run" not in o]
    return create_model(resolve(recipe.preset, model_overrides))


@pytest.mark.parametrize("kind", sorted(MODEL_KINDS))
def test_counts_and_devices_are_bounded_for_every_kind(kind):
    model = _small_model(kind).eval()
    c, s = model.cfg.in_channels, model.cfg.image_size
    with pytest.raises(ConfigError, match=r"sample\(n=1,000,000,000,000\) needs at least .* GiB free on cpu") as e:
        model.sample(10**12)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="sample"):
        model.sample(n=10**12, temperature=0.5)
    assert model.sample(2).shape == (2, c, s, s)  # ordinary counts are untouched
    x = torch.zeros(2, c, s, s, dtype=torch.uint8)
    with pytest.raises(ConfigError, match="more than the 10,000 allowed"):
        model.bits_per_dim(x[:1], k=100_000_000)
    with pytest.raises(ConfigError, match="k must be a positive integer"):
        model.bits_per_dim(x, 0)
    with pytest.raises(DataError, match="'meta' tensor"):
        model.bits_per_dim(x.to("meta"))
    if hasattr(model, "sample_group"):
        with pytest.raises(ConfigError, match=r"sample_group\(n=1,000,000,000,000\)"):
            model.sample_group(10**12)


def test_eval_k_is_bounded_before_anything_is_allocated(tiny_runs, tmp_path):
    from flowvae.evaluation import evaluate_bpd

    model = load_run(tiny_runs["flowvae"])
    x = torch.zeros(1, model.cfg.in_channels, model.cfg.image_size, model.cfg.image_size, dtype=torch.uint8)
    with pytest.raises(ConfigError, match="k = 10,001 posterior samples per image is more than the 10,000"):
        evaluate_bpd(model, x, k=10_001)
    rc, err, peak = run_cli(["eval", str(tiny_runs["flowvae"]), "-k", "100000000", "--device", "cpu"], tmp_path)
    line = error_line(err, "eval")
    assert rc == 1 and "k = 100,000,000 posterior samples" in line, line
    assert peak < 1024


def test_sample_count_is_bounded_on_the_command_line_for_kinds_without_exact_codes(tiny_runs, tmp_path):
    # (the flow kinds' `flowvae sample` draws through flowvae.evaluation.sampling, not model.sample)
    rc, err, _ = run_cli(["sample", str(tiny_runs["vae"]), "-n", str(10**12), "--out", str(tmp_path / "s"),
                          "--device", "cpu"], tmp_path)
    assert rc == 1 and "sample(n=1,000,000,000,000) needs at least" in error_line(err, "sample")


# ---------------------------------------------------------------------------------------------- item 15

def test_on_bad_skip_trains_a_small_folder_with_unreadable_files(tmp_path, capsys, caplog):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        if i in (0, 17):  # the first too: the folder's description must not stop at it
            (folder / f"img{i:02d}.png").write_bytes(b"not an image")
        else:
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), mode="L").save(folder / f"img{i:02d}.png")
    with caplog.at_level(logging.INFO, logger="flowvae"):
        rc = main(["train", "--data", str(folder), "--run", str(tmp_path / "run"), "--device", "cpu", "-q", "--set",
                   "data.on_bad=skip", "train.steps=1", "train.eval_images=4"])
    assert rc == 0, capsys.readouterr().err
    assert "data.on_bad=skip: 34 of the 36 training images can be read (2 skipped)" in caplog.text
    assert load_config(tmp_path / "run" / "config.yaml").train.batch_size <= 34
    for i in range(40):  # nothing readable: one line, whatever on_bad says
        (folder / f"img{i:02d}.png").write_bytes(b"not an image")
    assert main(["train", "--data", str(folder), "--run", str(tmp_path / "run2"), "--set", "data.on_bad=skip"]) == 1
    assert "none of the first 40 image files under" in error_line(capsys.readouterr().err, "train")


# ---------------------------------------------------------------------------------------------- item 16

def test_a_plain_pickle_model_pt_gets_no_unsafe_advice(tmp_path, capsys):
    src = tmp_path / "wolf"
    src.mkdir()
    (src / "config.json").write_text("{}")
    (src / "model.pt").write_bytes(pickle.dumps({"core": {"w": [1.0, 2.0]}}, protocol=4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["import-wolf", str(src), "--run", str(tmp_path / "run")]) == 1
    assert not [w for w in caught if "pickle" in str(w.message)], [str(w.message) for w in caught]
    err = capsys.readouterr().err
    line = error_line(err, "import-wolf")
    assert "is not a weights-only PyTorch archive" in line and "will not unpickle it" in line, line
    assert not any(a in err for a in TORCH_ADVICE), err


def test_a_plain_pickle_checkpoint_gets_no_unsafe_advice(tiny_runs, tmp_path, capsys):
    run = _run_without_weights(tiny_runs, tmp_path / "run")
    _replace_checkpoint(run, pickle.dumps({"format_version": 1, "model": {}}, protocol=5))
    skipped: list[tuple[Path, str]] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_latest_checkpoint(run / "checkpoints", skipped) is None
    assert not caught, [str(w.message) for w in caught]
    assert "is not a weights-only PyTorch archive" in skipped[0][1]
    assert not any(a in skipped[0][1] for a in TORCH_ADVICE), skipped[0][1]
    assert main(["eval", str(run), "--limit", "8", "-k", "1", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    error_line(err, "eval")
    assert not any(a in err for a in TORCH_ADVICE), err


# ---------------------------------------------------------------------------------------------- item 17

def test_links_and_fifos_in_an_image_folder_are_logged_once(tmp_path, caplog):
    from PIL import Image

    from flowvae.data.sources.folder import load_image_folder

    folder, outside = tmp_path / "imgs", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    for i in range(4):
        Image.new("L", (8, 8), i * 40).save(folder / f"{i}.png")
    Image.new("L", (8, 8)).save(outside / "secret.png")
    (folder / "x-link.png").symlink_to(outside / "secret.png")
    os.mkfifo(folder / "y-fifo.png")
    (folder / "z-folder").symlink_to(outside)
    with caplog.at_level(logging.WARNING, logger="flowvae"):
        assert len(load_image_folder(folder)) == 4
        assert len(load_image_folder(folder)) == 4  # no hang on the FIFO, and no second line
    lines = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "skipped 3 entries" in lines[0] and "x-link.png (a symbolic link leading out of the folder)" in lines[0]


def test_a_fifo_config_yaml_is_named(tiny_runs, tmp_path, capsys):
    run = Path(shutil.copytree(tiny_runs["flowvae"], tmp_path / "run"))
    (run / "config.yaml").unlink()
    os.mkfifo(run / "config.yaml")
    with pytest.raises(CheckpointError, match=r"config.yaml: it is a FIFO, not a regular file"):
        load_run(run)
    assert main(["eval", str(run), "--limit", "8", "-k", "1", "--device", "cpu"]) == 1
    assert "it is a FIFO" in error_line(capsys.readouterr().err, "eval")
    (run / "config.yaml").unlink()
    with pytest.raises(CheckpointError, match="no config.yaml"):
        load_run(run)


def test_a_hub_cache_whose_blobs_folder_links_out_is_refused(tiny_runs, tmp_path, monkeypatch):
    hf = pytest.importorskip("huggingface_hub")
    import huggingface_hub.constants

    from flowvae.hub import from_pretrained

    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    assert hf is not None
    exported = tmp_path / "exported"
    load_run(tiny_runs["flowvae"]).save_pretrained(exported)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--user--name"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    for name in ("config.yaml", "model.safetensors"):
        data = (exported / name).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        (elsewhere / digest).write_bytes(data)
        (snap / name).symlink_to(Path("..") / ".." / "blobs" / digest)
    (repo / "blobs").symlink_to(elsewhere)  # the cache's blobs folder leads out of the cache
    with pytest.raises(CheckpointError, match="blobs folder .* is a symbolic link leading out of") as e:
        from_pretrained("user/name")
    assert "\n" not in str(e.value)
    # the same files in a real blobs folder load
    (repo / "blobs").unlink()
    shutil.copytree(elsewhere, repo / "blobs")
    assert from_pretrained("user/name").kind == "flowvae"
    # a snapshot folder that links out of the cache, to plain files, is refused too
    shutil.rmtree(snap)
    shutil.copytree(exported, elsewhere / commit)
    snap.symlink_to(elsewhere / commit)
    with pytest.raises(CheckpointError, match="its folder is a symbolic link leading out of the cache's"):
        from_pretrained("user/name")


def test_a_config_preset_still_parses():
    """The stricter loader reads what save_config writes, for every preset."""
    from flowvae.config import config_from_dict
    from flowvae.presets import PRESETS

    for name in PRESETS:
        cfg = get_preset(name)
        assert config_from_dict(parse_yaml(yaml.safe_dump(cfg.to_dict(), sort_keys=False))).to_dict() == cfg.to_dict()
        assert config_from_dict(parse_yaml(json.dumps(cfg.to_dict()))).to_dict() == cfg.to_dict()
