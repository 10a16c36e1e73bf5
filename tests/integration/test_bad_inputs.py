"""Every bad input ends in one clear line, never a traceback (issue 16).

Command line: exit status 1 and exactly one line ``flowvae CMD: error: MESSAGE`` on standard error
naming what was wrong; nothing written for a refused ``train``. Python API: a
:class:`~flowvae.errors.FlowVAEError` subclass (``ConfigError``, ``DataError``,
``CheckpointError``) with such a message, never a raw torch / numpy / KeyError / zlib error.

The inputs, by group: config overrides of ``train`` (every preset kind); broken ``config.yaml`` in a
run folder; damaged MNIST files; out-of-range command options and unusable ``--inception`` files;
checkpoints with a valid SHA-256 sidecar but wrong contents; the model API's inputs (numpy arrays,
integer tensors, wrong shapes and channel counts, ``k=0``, ``n=-1``, CUDA without a GPU).
The trained runs are the session's tiny runs (tests/conftest.py).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from flowvae.api import load_run
from flowvae.cli.main import main
from flowvae.data import shared_data_dir
from flowvae.errors import CheckpointError, ConfigError, DataError, FlowVAEError
from flowvae.runs.checkpoints import list_checkpoints, validate_training_state

pytestmark = pytest.mark.usefixtures("single_thread")

CPU = ["--device", "cpu", "-q"]
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (WARNING|INFO) ")  # the command line's log format
MNIST = shared_data_dir() / "mnist"
needs_mnist = pytest.mark.skipif(not (MNIST / "t10k-labels-idx1-ubyte.gz").is_file(),
                                 reason=f"MNIST files not found in {MNIST} (the shared data folder is absent)")


def fails(argv: list[str], capsys: pytest.CaptureFixture[str], code: int = 1) -> str:
    """Run the command line in-process; assert exit status ``code``, no traceback and exactly one line
    on standard error; return that line."""
    capsys.readouterr()
    try:
        got = main(argv)
    except SystemExit as e:  # argparse usage errors
        got = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not LOG_LINE.match(line)]  # warnings may precede
    assert "Traceback" not in err and len(lines) == 1, err
    assert got == code, f"exit status {got}, expected {code}: {err}"
    if code == 1:
        assert lines[0].startswith(f"flowvae {argv[0]}: error: "), lines[0]
    return lines[0]


def copy_run(src: Path, dest: Path, weights: bool = True) -> Path:
    shutil.copytree(src, dest)
    if not weights:
        (dest / "model.safetensors").unlink()
    return dest


# ------------------------------------------------------------------------------------ train overrides

OVERRIDES = ["train.eval_every=0", "train.checkpoint_every=0", "train.eval_k=0", "train.lr=-1", "train.betas=[0.9]",
             "model.d_z=-2", "model.factor_out=0", "data.crop_pad=-1", "train.sample_temperatures=[nan]",
             "train.sample_temperatures=[.nan]", "train.batch_size=0", "train.batch_size=-4", "train.steps=-3",
             "train.warmup_steps=-1", "train.init_batch_size=-1", "data.on_bad=maybe", "model.hidden=[8,200000,64]"]
PRESET_KINDS = ["digits", "digits-vae", "mnist-ugvae", "dsprites-btcvae", "dsprites-multistage"]


@pytest.mark.parametrize("override", OVERRIDES)
@pytest.mark.parametrize("preset", PRESET_KINDS)
def test_bad_train_override_is_refused_before_anything_is_written(preset, override, tmp_path, capsys):
    run = tmp_path / "run"
    line = fails(["train", preset, "--run", str(run), "--set", "train.steps=2", override, *CPU], capsys)
    assert override.split("=")[0] in line  # names the field
    assert not run.exists()


def test_negative_steps_option_is_refused(tmp_path, capsys):
    line = fails(["train", "digits", "--run", str(tmp_path / "r"), "--steps", "-3", *CPU], capsys)
    assert "--steps must be an integer >= 0" in line


def test_an_oversized_architecture_is_refused_before_its_big_tensors_are_allocated(monkeypatch, tmp_path, capsys):
    """Every field has its own range; together they still admit models of tens of billions of weights
    (model.hidden=[8,8192,8192] model.steps=[0,[64,64],64]), refused by the construction budget."""
    import flowvae.models.base as base
    from flowvae.presets import get_preset

    allocated: list[int] = []
    real_empty = torch.empty

    def empty(*args: Any, **kwargs: Any) -> torch.Tensor:
        t = real_empty(*args, **kwargs)
        allocated.append(t.numel())
        return t

    monkeypatch.setattr(base, "MAX_MODEL_ELEMENTS", 50_000)
    with pytest.raises(ConfigError, match="needs more than 50,000 weights"):
        base.create_model(get_preset("digits"))
    monkeypatch.setattr(torch, "empty", empty)
    with pytest.raises(ConfigError, match="needs more than 50,000 weights"):
        base.create_model(get_preset("digits"))
    assert sum(allocated) <= 50_000  # the tensor that would pass the budget was never allocated
    monkeypatch.setattr(torch, "empty", real_empty)
    line = fails(["train", "digits", "--run", str(tmp_path / "r"), "--steps", "1", *CPU], capsys)
    assert "lower model.hidden" in line and not (tmp_path / "r" / "checkpoints").exists()
    monkeypatch.setattr(base, "MAX_MODEL_ELEMENTS", 2**29)
    assert base.create_model(get_preset("digits")) is not None


# ------------------------------------------------------------------------------------ config.yaml in a run folder

def _non_utf8(path: Path) -> None:
    path.write_bytes(b"name: caf\xe9\nmodel: {kind: flowvae}\n\xff\xfe")


def _yaml_list(path: Path) -> None:
    path.write_text("- model\n- data\n")


def _section_list(path: Path) -> None:
    cfg = yaml.safe_load(path.read_text())
    cfg["train"] = [1, 2]
    path.write_text(yaml.safe_dump(cfg))


def _section_text(path: Path) -> None:
    cfg = yaml.safe_load(path.read_text())
    cfg["model"] = "big"
    path.write_text(yaml.safe_dump(cfg))


CONFIGS = {"not UTF-8": (_non_utf8, "not UTF-8"), "a YAML list": (_yaml_list, "must hold a mapping"),
           "train is a list": (_section_list, "section 'train' must be a mapping"),
           "model is text": (_section_text, "section 'model' must be a mapping")}


def _run_command(command: str, run: Path, out: Path) -> list[str]:
    return {"eval": ["eval", str(run), "--limit", "8", "-k", "1", *CPU],
            "check": ["check", str(run), "--limit", "8", *CPU],
            "sample": ["sample", str(run), "-n", "2", "-t", "1", "--out", str(out), *CPU],
            "train --resume": ["train", "digits", "--run", str(run), "--resume", "--steps", "3", *CPU]}[command]


@pytest.mark.parametrize("command", ["load_run", "eval", "check", "sample", "train --resume"])
@pytest.mark.parametrize("broken", list(CONFIGS))
@pytest.mark.parametrize("kind", ["flowvae", "vae"])
def test_broken_config_yaml_in_a_run_folder(kind, broken, command, tiny_runs, tmp_path, capsys):
    run = copy_run(tiny_runs[kind], tmp_path / "run")
    corrupt, expected = CONFIGS[broken]
    corrupt(run / "config.yaml")
    if command == "load_run":
        with pytest.raises(ConfigError, match=expected):
            load_run(run)
    else:
        assert expected in fails(_run_command(command, run, tmp_path / "out"), capsys)


# ------------------------------------------------------------------------------------ damaged MNIST files

def _mnist_copy(dest: Path) -> Path:
    dest.mkdir()
    for f in MNIST.glob("*.gz"):
        os.symlink(f.resolve(), dest / f.name)  # the large files unchanged; damaged ones are replaced below
    return dest


def _replace(path: Path, data: bytes) -> None:
    path.unlink()
    path.write_bytes(data)


def _corrupt_stream(root: Path) -> None:
    """Bytes inside the deflate stream flipped: zlib.error, which gzip does not turn into an OSError."""
    p = root / "t10k-labels-idx1-ubyte.gz"
    b = bytearray(p.read_bytes())
    for i in range(100, 200):
        b[i] ^= 0xFF
    _replace(p, bytes(b))


def _truncated_idx(root: Path) -> None:
    p = root / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(p.read_bytes())
    p.unlink()
    (root / "t10k-images-idx3-ubyte").write_bytes(raw[: len(raw) // 2])


def _truncated_gzip(root: Path) -> None:
    p = root / "t10k-labels-idx1-ubyte.gz"
    _replace(p, p.read_bytes()[:2000])


def _wrong_magic(root: Path) -> None:
    p = root / "t10k-images-idx3-ubyte.gz"
    raw = bytearray(gzip.decompress(p.read_bytes()))
    raw[3] = 0x01  # 0x00000801: the magic number of a labels file
    _replace(p, gzip.compress(bytes(raw), compresslevel=1))


DAMAGE = {"corrupt gzip stream": (_corrupt_stream, "damaged"), "truncated IDX": (_truncated_idx, "truncated"),
          "truncated gzip": (_truncated_gzip, "damaged"), "wrong magic number": (_wrong_magic, "magic number")}


@needs_mnist
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_mnist_file_is_a_data_error(damage, tmp_path):
    from flowvae.data.sources.mnist import load_mnist

    root = _mnist_copy(tmp_path / "mnist")
    corrupt, expected = DAMAGE[damage]
    corrupt(root)
    with pytest.raises(DataError, match=expected):
        load_mnist(root, "test")


@needs_mnist
def test_corrupt_gzip_stream_at_the_command_line(tmp_path, capsys):
    root = _mnist_copy(tmp_path / "mnist")
    _corrupt_stream(root)
    line = fails(["train", "mnist", "--run", str(tmp_path / "run"), "--data", str(root), "--steps", "1",
                  "--set", "data.train_limit=32", *CPU], capsys)
    assert "t10k-labels-idx1-ubyte.gz" in line and "damaged" in line


# ------------------------------------------------------------------------------------ command options

OPTIONS = {
    "eval -k 0": (["eval", "RUN", "-k", "0"], "-k/--k must be an integer >= 1, got 0"),
    "eval --limit -5": (["eval", "RUN", "--limit", "-5"], "--limit must be an integer >= 1, got -5"),
    "sample -n -3": (["sample", "RUN", "-n", "-3"], "-n/--num must be an integer >= 1, got -3"),
    "sample -t nan": (["sample", "RUN", "-t", "nan"], "-t/--temperature must be a finite number >= 0, got nan"),
    "switch --pairs 10000": (["switch", "RUN", "--pairs", "10000", "--out", "OUT/s.png"], "pairs=10000 needs"),
    "interpolate --index 0 99999": (["interpolate", "RUN", "--index", "0", "99999", "--out", "OUT/i.png"],
                                    "index 99999 is outside the test set"),
    "probe --C -1": (["probe", "RUN", "--C", "-1"], "--C must be a finite number > 0, got -1"),
}


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("kind", ["flowvae", "vae", "ugvae", "multistage"])
def test_out_of_range_option(kind, option, tiny_runs, tmp_path, capsys):
    argv, expected = OPTIONS[option]
    line = fails([str(tiny_runs[kind]) if a == "RUN" else a.replace("OUT", str(tmp_path)) for a in argv] + CPU, capsys)
    if argv[0] in ("switch", "interpolate") and not tiny_runs.capabilities(kind).global_local:
        assert "does not apply" in line
    else:
        assert expected in line


def _fifo(tmp: Path) -> Path:
    os.mkfifo(tmp / "net.pt")
    return tmp / "net.pt"


def _huge(tmp: Path) -> Path:
    from flowvae.evaluation.fid import MAX_INCEPTION_BYTES

    with open(tmp / "net.pt", "wb") as f:
        f.truncate(MAX_INCEPTION_BYTES + 1)  # sparse: no disk used
    return tmp / "net.pt"


def _not_a_network(tmp: Path) -> Path:
    return Path("/etc/passwd") if Path("/etc/passwd").is_file() else _text(tmp)


def _text(tmp: Path) -> Path:
    (tmp / "net.pt").write_text("root:x:0:0:root:/root:/bin/bash\n")
    return tmp / "net.pt"


INCEPTION = {"/etc/passwd": (_not_a_network, "is not a TorchScript network"), "a FIFO": (_fifo, "not a regular file"),
             "a folder": (lambda tmp: tmp, "is a folder"), "a huge file": (_huge, "bytes, more than the"),
             "a missing file": (lambda tmp: tmp / "missing.pt", "cannot be read")}


@pytest.mark.parametrize("inception", list(INCEPTION))
def test_unusable_inception_file(inception, tiny_runs, tmp_path, capsys):
    """Refused in one line, without hanging on a FIFO or hashing a huge file, and never replaced by the
    network found elsewhere."""
    make, expected = INCEPTION[inception]
    path = make(tmp_path)
    line = fails(["fid", str(tiny_runs["flowvae"]), "-n", "2", "--inception", str(path), *CPU], capsys)
    assert expected in line and str(path) in line
    if inception != "a missing file":
        from flowvae.evaluation.fid import InceptionFeatures

        with pytest.raises(FlowVAEError, match=expected):
            InceptionFeatures(path)


def test_inception_file_of_another_network(tmp_path):
    from flowvae.evaluation.fid import InceptionFeatures

    torch.jit.save(torch.jit.script(torch.nn.Linear(3, 5)), str(tmp_path / "linear.pt"))
    net = InceptionFeatures(tmp_path / "linear.pt")
    with pytest.raises(FlowVAEError, match="does not run as the Inception-v3 feature network"):
        net(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))


# ------------------------------------------------------------------------------------ checkpoints

def _write_checkpoint(run: Path, obj: Any) -> None:
    """Replace the run's newest checkpoint by ``obj`` with a matching SHA-256 sidecar."""
    path = list_checkpoints(run / "checkpoints")[-1]
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    path.write_bytes(data)
    path.with_suffix(".pt.sha256").write_text(hashlib.sha256(data).hexdigest())


def _state(run: Path) -> dict[str, Any]:
    return torch.load(list_checkpoints(run / "checkpoints")[-1], weights_only=True)


def _without(key: str):
    return lambda st: {k: v for k, v in st.items() if k != key}


def _wrong_shape(st: dict[str, Any]) -> dict[str, Any]:
    model = dict(st["model"])
    model[next(iter(model))] = torch.zeros(3, 3, 3)
    return {**st, "model": model}


WEIGHTS = {"no 'model'": (_without("model"), "no model weights"),
           "'model' is a list": (lambda st: {**st, "model": [1, 2]}, "not a mapping of parameter names to tensors"),
           "'model' holds numbers": (lambda st: {**st, "model": {k: 1 for k in st["model"]}},
                                     "not a mapping of parameter names to tensors"),
           "a tensor of the wrong shape": (_wrong_shape, "size mismatch for"),
           # skipped like a corrupted file (then no valid checkpoint is left), or refused outright
           "not a dict": (lambda st: [torch.zeros(2)], "not a dict|nor a valid checkpoint")}


@pytest.mark.parametrize("command", ["load_run", "eval", "check"])
@pytest.mark.parametrize("contents", list(WEIGHTS))
@pytest.mark.parametrize("kind", ["flowvae", "ugvae"])
def test_checkpoint_with_a_valid_checksum_but_wrong_contents(kind, contents, command, tiny_runs, tmp_path, capsys):
    run = copy_run(tiny_runs[kind], tmp_path / "run", weights=False)  # no model.safetensors: the checkpoint is read
    change, expected = WEIGHTS[contents]
    _write_checkpoint(run, change(_state(run)))
    if command == "load_run":
        with pytest.raises(CheckpointError, match=expected):
            load_run(run)
    else:
        assert re.search(expected, fails(_run_command(command, run, tmp_path / "out"), capsys))


def _opt_str(st: dict[str, Any]) -> dict[str, Any]:
    return {**st, "optimizer": "adam"}


def _no_groups(st: dict[str, Any]) -> dict[str, Any]:
    return {**st, "optimizer": {"state": {}, "param_groups": []}}


def _moment_shape(st: dict[str, Any]) -> dict[str, Any]:
    opt = st["optimizer"]
    moments = dict(opt["state"])
    first = next(iter(moments))
    moments[first] = {**moments[first], "exp_avg": torch.zeros(7)}
    return {**st, "optimizer": {**opt, "state": moments}}


def _rng_short(st: dict[str, Any]) -> dict[str, Any]:
    return {**st, "rng": {**st["rng"], "noise": torch.zeros(3, dtype=torch.uint8)}}


RESUME = {"no 'optimizer'": (_without("optimizer"), "'optimizer'"),
          "no 'scheduler'": (_without("scheduler"), "'scheduler'"),
          "no 'batches'": (_without("batches"), "'batches'"),
          "no 'rng'": (_without("rng"), "'rng'"),
          "no 'step'": (_without("step"), "'step'"),
          "'step' is text": (lambda st: {**st, "step": "abc"}, "'step' entry is 'abc'"),
          "'optimizer' is text": (_opt_str, "'optimizer'"),
          "'batches' is text": (lambda st: {**st, "batches": "x"}, "'batches'"),
          "'scheduler' is a list": (lambda st: {**st, "scheduler": [1]}, "'scheduler'"),
          "'model' is a list": (lambda st: {**st, "model": [1, 2]}, "not a mapping of parameter names"),
          "no parameter groups": (_no_groups, "parameters per group"),
          "short rng state": (_rng_short, "rng['noise']"),
          "moments of the wrong shape": (_moment_shape, "'exp_avg' of parameter")}


def _live(run: Path) -> dict[str, Any]:
    """The objects the trainer restores, as it builds them (model, fused AdamW, data order, generators)."""
    model = load_run(run)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, fused=True)

    class Order:
        def state_dict(self) -> dict[str, int]:
            return {"step": 0} if model.label_groups is not None else {"epoch": 0, "pos": 0}

    return {"optimizer": opt, "batches": Order(),
            "generators": {"noise": torch.Generator(), "aug": torch.Generator(), "torch": None}}


@pytest.mark.parametrize("contents", list(RESUME))
@pytest.mark.parametrize("kind", ["flowvae", "ugvae"])
def test_validate_training_state_names_the_bad_entry(kind, contents, tiny_runs):
    run = tiny_runs[kind]
    state = _state(run)
    validate_training_state(Path("ckpt.pt"), state, **_live(run))  # the real checkpoint passes
    change, expected = RESUME[contents]
    with pytest.raises(CheckpointError, match=f"ckpt.pt cannot be resumed: .*{_re(expected)}"
                       if contents != "'model' is a list" else _re(expected)):
        validate_training_state(Path("ckpt.pt"), change(state), **_live(run))


def _re(text: str) -> str:
    return re.escape(text)


# Through the trainer (optimizer moments of the wrong shape would corrupt memory in fused AdamW).
@pytest.mark.parametrize("contents", list(RESUME))
def test_train_resume_from_a_checkpoint_with_wrong_contents(contents, tiny_runs, tmp_path, capsys):
    run = copy_run(tiny_runs["flowvae"], tmp_path / "run")
    change, expected = RESUME[contents]
    _write_checkpoint(run, change(_state(run)))
    assert expected in fails(_run_command("train --resume", run, tmp_path / "out"), capsys)


# ------------------------------------------------------------------------------------ the model API

class _Models(dict):
    """The tiny runs' models by kind, loaded on first use."""

    def __init__(self, runs: Any):
        super().__init__()
        self.runs = runs

    def __missing__(self, kind: str) -> Any:
        self[kind] = load_run(self.runs[kind])
        return self[kind]


@pytest.fixture(scope="module")
def models(tiny_runs) -> _Models:
    return _Models(tiny_runs)


def _images(m: Any, n: int = 2, channels: int | None = None, size: int | None = None,
            dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    c, s = channels or m.cfg.in_channels, size or m.cfg.image_size
    return torch.randint(0, 256, (n, c, s, s), generator=torch.Generator().manual_seed(0)).to(dtype)


ALL_KINDS = ["flowvae", "z_prior", "refined_glow", "glow", "ugvae", "vae", "btcvae", "multistage"]
IMAGE_CASES = {
    "numpy array": (lambda m: _images(m).numpy(), "must be a torch.Tensor"),
    "int64 tensor": (lambda m: _images(m, dtype=torch.int64), "must be uint8"),
    "float tensor": (lambda m: _images(m, dtype=torch.float32), "must be uint8"),
    "wrong channel count": (lambda m: _images(m, channels=m.cfg.in_channels + 1), "do not fit this model"),
    "wrong size": (lambda m: _images(m, size=m.cfg.image_size + 2), "do not fit this model"),
    "one image without batch axis": (lambda m: _images(m)[0], "do not fit this model"),
    "empty batch": (lambda m: _images(m, n=0), "empty batch"),
}
METHODS = {"bits_per_dim": lambda m, x: m.bits_per_dim(x), "loss": lambda m, x: m.loss(x),
           "representations": lambda m, x: m.representations(x), "features": lambda m, x: m.features(x),
           "encode": lambda m, x: m.encode(x)}  # every kind but the UG-VAE (encode_group)


@pytest.mark.parametrize("case", list(IMAGE_CASES))
@pytest.mark.parametrize("kind, method", [(k, m) for k in ALL_KINDS for m in METHODS if (k, m) != ("ugvae", "encode")])
def test_bad_images_are_data_errors(kind, method, case, models):
    m = models[kind]
    make, expected = IMAGE_CASES[case]
    with pytest.raises(DataError, match=expected):
        METHODS[method](m, make(m))


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_bad_counts_and_temperatures(kind, models):
    m = models[kind]
    x = _images(m)
    for k in (0, -1, 1.5):
        with pytest.raises(ConfigError, match="k must be a positive integer"):
            m.bits_per_dim(x, k=k)
    for n in (-1, 0, 2.5, True):
        with pytest.raises(ConfigError, match="n must be a positive integer"):
            m.sample(n)
    for t in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ConfigError, match="temperature must be a finite number >= 0"):
            m.sample(2, t)
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        m.features(x, batch_size=0)


def _codes(m: Any) -> tuple:
    """Valid arguments of ``m.decode`` for two images."""
    x = _images(m)
    if m.kind == "ugvae":
        return torch.zeros(2, m.cfg.d_local), torch.zeros(m.cfg.d_global)
    codes = m.encode(x)
    return codes if isinstance(codes, tuple) else (codes,)


def _decode_cases(m: Any) -> dict[str, tuple[tuple, str]]:
    args = _codes(m)
    first = args[0] if args[0] is not None else args[1]
    cases = {"numpy codes": ((first.numpy(), *args[1:]) if args[0] is not None else (None, first.numpy()),
                             "must be a torch.Tensor"),
             "integer codes": ((first.long(), *args[1:]) if args[0] is not None else (None, first.long()),
                               "must be floating point"),
             "uint8 codes": ((first.to(torch.uint8), *args[1:]) if args[0] is not None
                             else (None, first.to(torch.uint8)), "must be floating point"),
             "NaN codes": ((first * float("nan"), *args[1:]) if args[0] is not None
                           else (None, first * float("nan")), "NaN or infinite")}
    wide = torch.zeros(2, first.shape[1] + 5)
    cases["codes of the wrong width"] = (((wide, *args[1:]) if args[0] is not None else (None, wide)), "got shape [2,")
    if m.kind in ("flowvae", "z_prior", "multistage"):
        z, v = args
        cases["v of the wrong width"] = ((z, torch.zeros(2, 7)), "local codes v must be a tensor")
        cases["z and v of different batch sizes"] = ((z[:1], v), "1 rows for a batch of 2")
        cases["z missing"] = ((None, v), "got z=None")
    if m.kind in ("refined_glow", "glow"):
        cases["a z for a kind without one"] = ((torch.zeros(2, 4), args[1]), "has no global code z")
    if m.kind == "ugvae":
        cases["beta of the wrong shape"] = ((args[0], torch.zeros(3, 3)), "beta must be a float tensor")
    return cases


DECODE_CASES = ["numpy codes", "integer codes", "uint8 codes", "NaN codes", "codes of the wrong width",
                "v of the wrong width", "z and v of different batch sizes", "z missing", "a z for a kind without one",
                "beta of the wrong shape"]


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_decode_with_bad_codes(kind, models):
    m = models[kind]
    m.decode(*_codes(m))  # the valid codes decode
    cases = _decode_cases(m)
    assert set(cases) <= set(DECODE_CASES)
    for args, expected in cases.values():
        with pytest.raises(DataError, match=_re(expected)):
            m.decode(*args)


@pytest.mark.parametrize("kind", ["flowvae", "z_prior", "multistage"])
def test_switch_and_interpolate_with_bad_images(kind, models):
    m = models[kind]
    x = _images(m)
    with pytest.raises(DataError, match="got 2 and 1 images"):
        m.switch(x, x[:1])
    with pytest.raises(DataError, match="must be a torch.Tensor"):
        m.interpolate(x[0].numpy(), x[1].numpy())
    with pytest.raises(DataError, match="got a batch of 2"):
        m.interpolate(x, x)
    with pytest.raises(ConfigError, match="alphas must be a non-empty list of finite numbers"):
        m.interpolate(x[0], x[1], alphas=[float("nan")])
    with pytest.raises(ConfigError, match="betas must be a non-empty list"):
        m.interpolate(x[0], x[1], betas=[])


@pytest.mark.parametrize("kind", ["flowvae", "vae"])
def test_load_run_on_cuda_without_a_gpu(kind, tiny_runs, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA GPU is available"):
        load_run(tiny_runs[kind], device="cuda")
    with pytest.raises(ConfigError, match="no CUDA GPU is available"):
        load_run(tiny_runs[kind], device=torch.device("cuda", 0))
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        load_run(tiny_runs[kind], device="tpu")


def test_linear_probe_with_features_of_wrong_shapes():
    from flowvae.evaluation.probe import linear_probe

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 4)), np.arange(30) % 3
    with pytest.raises(DataError, match="training features have 4 dimensions but test features 5"):
        linear_probe(x, y, rng.normal(size=(30, 5)), y, C=0.01)
    with pytest.raises(DataError, match="NaN or infinite"):
        linear_probe(np.full((30, 4), np.nan), y, x, y, C=0.01)
    with pytest.raises(DataError, match="same length"):
        linear_probe(x, y[:10], x, y, C=0.01)
    with pytest.raises(DataError, match="non-empty array of numbers"):
        linear_probe(np.zeros((0, 4)), y[:0], x, y, C=0.01)
    with pytest.raises(DataError, match="labels must be vectors of class numbers"):
        linear_probe(x, y[:, None], x, y, C=0.01)
    with pytest.raises(ConfigError, match="C must be a finite number > 0"):
        linear_probe(x, y, x, y, C=-1.0)
    with pytest.raises(ConfigError, match="protocol must be"):
        linear_probe(x, y, x, y, C=0.01, protocol="mine")


def test_disentanglement_metrics_with_codes_of_wrong_shapes():
    from flowvae.evaluation.disentanglement import mig

    factors = np.stack([np.arange(40) % 4, np.arange(40) % 5], 1)
    with pytest.raises(DataError, match="2-D array"):
        mig(np.zeros(40), factors)
    with pytest.raises(DataError, match="codes have 30 rows but factors have 40"):
        mig(np.random.default_rng(0).normal(size=(30, 3)), factors)
