"""Fault trials: feed every known bad input to the ``flowvae`` command line (and the Python API) of a
checkout and classify what happens, for the closing report of issue 16.

Each trial runs as its own subprocess of the CLI (API trials: one ``python -c`` process per model
kind, running each trial in turn; a process that dies is re-run one trial at a time). An outcome is

* ``ok``: exit status 1 with exactly one line on standard error (log lines aside), or exit status 2
  (argparse usage error) ending in an ``error:`` line; no ``Traceback``; within the timeout. API:
  a :class:`flowvae.errors.FlowVAEError` with a one-line message;
* a failure: ``traceback``, ``accepted`` (exit 0 on bad input / the API call returned),
  ``multiline`` (several lines, or a non-FlowVAEError exception in the API), ``hang`` (timeout),
  ``crash`` (killed by a signal or any other exit status);
* ``n/a``: the trial does not apply to the kind (e.g. ``encode`` on a kind without it) or its
  setup (the kind's tiny run) could not be made; ``unsupported``: the CLI lacks the command or option
  (argparse: unrecognized arguments / invalid choice), so nothing was tried. Neither is counted as
  a failure; both are listed separately. ``--device cpu`` and ``-q`` are passed only to commands
  whose ``--help`` lists them.

The group ``issue 32`` (and ``API (issue 32)``) holds the hostile inputs of issue 32: deflate
bombs in a ``torch.save`` archive (``import-wolf``'s ``model.pt``, a checkpoint with a matching
checksum), nesting deep enough to exhaust Python's stack, unbounded counts (``eval -k``,
``sample -n``, ``model.sample``, ``meta`` images), ``data.on_bad=skip`` on a small folder, plain-pickle
weights, links and FIFOs in image folders, a FIFO or duplicate key in ``config.yaml`` and a Hub
cache whose ``blobs`` folder links out of it. Its trials are classified by :class:`Expect` too:
``memory`` (peak resident memory, measured per process with ``wait4``, above the bound: refused
only after inflating), ``misleading`` (torch's advice to load unsafely, its warning, or the wrong
cause named), ``silent`` (a skip without its log line) and ``refused`` (a legitimate input refused).
The trials that do not depend on the model kind run with the first kind only.

Only the CLI and the public API are used, so the script also runs against older checkouts: point
``--flowvae`` at that checkout's console script (``/old/.venv/bin/flowvae``); ``--python`` (default:
the interpreter in that script's shebang) runs the API trials. A checkout that is not installed
(a ``git worktree``) runs through ``--flowvae 'PYTHON -m flowvae.cli.main' --pythonpath WORKTREE/src``.
Each kind's tiny run is trained once (2 steps) and reused by every trial that needs one.

    OMP_NUM_THREADS=1 python benchmarks/fault_trials.py --kinds flowvae vae --out fault_trials.json
    python benchmarks/fault_trials.py --kinds flowvae --groups "issue 32" "API (issue 32)" --detail
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gzip
import json
import os
import re
import resource
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS = ["flowvae", "z_prior", "refined_glow", "glow", "ugvae", "vae", "btcvae", "multistage"]
FLOW_KINDS = {"flowvae", "z_prior", "refined_glow", "glow"}
GLOBAL_LOCAL = {"flowvae", "z_prior", "multistage"}  # switch / interpolate apply
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING) ")
TRAIN = ["train.steps=2", "train.batch_size=16", "train.init_batch_size=32", "train.eval_images=16",
         "train.eval_every=2", "train.checkpoint_every=2", "train.sample_temperatures=[1.0]", "train.warmup_steps=0"]
FLOW = ["model.steps=[0,[1,1],1]", "model.hidden=[4,8,8]", "model.encoder_widths=[8]", "model.d_z=4",
        "model.prior_steps=1", "model.prior_hidden=8", "data.test_limit=64"]


@dataclass
class Recipe:
    """How to train the tiny run of a kind through the CLI (a fuller and a minimal variant)."""

    preset: str
    overrides: list[str]
    minimal: list[str]
    data: str | None = None  # folder under the shared data folder (data.root)
    stage1: str | None = None  # kind whose run is model.stage1_run
    mnist_preset: str | None = None  # preset of the MNIST data trials (None: they do not apply)
    mnist_overrides: list[str] = field(default_factory=list)


RECIPES = {
    **{k: Recipe("digits", [*FLOW, f"model.kind={k}"], ["data.test_limit=64", f"model.kind={k}"],
                 mnist_preset="mnist", mnist_overrides=[f"model.kind={k}", "model.steps=[0,[1,1],1]",
                                                        "model.hidden=[4,8,8]", "model.encoder_widths=[8,8]"])
       for k in sorted(FLOW_KINDS)},
    "ugvae": Recipe("digits", ["model.kind=ugvae", "model.d_local=3", "model.d_global=2", "model.n_components=3",
                               "model.hidden=[16]", "model.encoder=mlp", "model.decoder=mlp", "model.group_by=label",
                               "model.groups_per_batch=4", "data.test_limit=64"],
                    ["model.kind=ugvae", "data.test_limit=64"], mnist_preset="mnist-ugvae",
                    mnist_overrides=["model.hidden=[16]", "model.encoder=mlp", "model.decoder=mlp"]),
    "vae": Recipe("digits-vae", ["model.d_z=3", "model.conv_channels=[4]", "model.hidden=16", "data.test_limit=64"],
                  ["data.test_limit=64"], mnist_preset="mnist-vae", mnist_overrides=["model.hidden=16"]),
    "btcvae": Recipe("dsprites-btcvae", ["model.n_factors=3", "model.conv_channels=[4,4,4,4]", "model.hidden=16",
                                         "data.train_limit=256", "data.test_limit=64"],
                     ["data.train_limit=256", "data.test_limit=64"], data="dsprites"),
    "multistage": Recipe("dsprites-multistage", ["model.steps=[0,[1,1],1]", "model.hidden=[4,8,8]",
                                                 "model.dequantization=uniform", "data.train_limit=256",
                                                 "data.test_limit=64"],
                         ["data.train_limit=256", "data.test_limit=64"], data="dsprites", stage1="btcvae"),
}

API_32 = "API (issue 32)"
GROUPS = ["train overrides", "data", "options", "fid --inception", "config.yaml", "checkpoints", "API", "issue 32",
          API_32]

OVERRIDES = ["train.eval_every=0", "train.checkpoint_every=0", "train.eval_k=0", "train.lr=-1", "train.betas=[0.9]",
             "model.d_z=-2", "model.factor_out=0", "data.crop_pad=-1", "train.sample_temperatures=[nan]",
             "train.batch_size=0", "train.batch_size=-4", "train.steps=-3", "data.on_bad=maybe",
             "model.hidden=[8,200000,64]"]


@dataclass
class Outcome:
    # ok | traceback | accepted | multiline | hang | crash | n/a | unsupported; issue 32's trials also
    # memory | misleading | silent | refused (see Expect)
    status: str
    rc: int | None = None
    seconds: float = 0.0
    line: str = ""
    peak_mb: float | None = None

    @property
    def failed(self) -> bool:
        return self.status not in ("ok", "n/a", "unsupported")


class Runner:
    def __init__(self, args: argparse.Namespace, work: Path):
        self.prefix = shlex.split(args.flowvae)
        self.python = args.python or _interpreter_of(self.prefix) or sys.executable
        self.timeout = args.timeout
        self.mem = int(args.mem_limit_gb * 2**30)
        self.work = work
        self.shared = Path(args.shared_data).resolve()
        self.env = {**os.environ, "FLOWVAE_SHARED_DATA": str(self.shared), "OMP_NUM_THREADS": "1",
                    "FLOWVAE_TUNE_MALLOC": "0", "PYTHONUNBUFFERED": "1"}
        if args.pythonpath:
            self.env["PYTHONPATH"] = os.pathsep.join([str(Path(args.pythonpath).resolve()),
                                                      *filter(None, [os.environ.get("PYTHONPATH")])])
        self.env.pop("FLOWVAE_INCEPTION", None)
        self._flags: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def _limits(self) -> None:  # in the child, before exec
        if self.mem > 0:
            try:
                resource.setrlimit(resource.RLIMIT_AS, (self.mem, self.mem))
            except (ValueError, OSError):
                pass

    def exec(self, cmd: list[str], timeout: float | None = None) -> tuple[int | None, str, str, float, bool]:
        """``(rc, stdout, stderr, seconds, timed_out)``; never raises."""
        return self.exec_measured(cmd, timeout)[:5]  # type: ignore[return-value]

    def exec_measured(self, cmd: list[str], timeout: float | None = None
                      ) -> tuple[int | None, str, str, float, bool, float | None]:
        """``(rc, stdout, stderr, seconds, timed_out, peak resident MB)``; never raises. The peak is the
        process's own (``wait4``), so trials running side by side do not blur it."""
        t0 = time.time()
        with tempfile.TemporaryFile(dir=self.work) as out_f, tempfile.TemporaryFile(dir=self.work) as err_f:
            try:
                p = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, stdin=subprocess.DEVNULL, cwd=self.work,
                                     env=self.env, preexec_fn=self._limits, start_new_session=True)
            except OSError as e:
                return None, "", f"cannot start {cmd[0]}: {e}", 0.0, False, None
            hung = threading.Event()

            def kill() -> None:
                hung.set()
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass

            timer = threading.Timer(timeout or self.timeout, kill)
            timer.start()
            try:
                _, status, usage = os.wait4(p.pid, 0)
            finally:
                timer.cancel()
            p.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
            out_f.seek(0)
            err_f.seek(0)
            out = out_f.read().decode("utf-8", "replace")
            err = err_f.read().decode("utf-8", "replace")
        rc = None if hung.is_set() else p.returncode
        return rc, out, err, time.time() - t0, hung.is_set(), usage.ru_maxrss / 1024

    def flags(self, command: str) -> list[str]:
        """``--device cpu -q`` as far as ``command`` of this CLI knows them (from its ``--help``), so that
        an older CLI is not refused for the harness's own flags."""
        with self._lock:
            if command not in self._flags:
                _, out, _, _, _ = self.exec([*self.prefix, command, "--help"], timeout=120)
                self._flags[command] = ([*(["--device", "cpu"] if "--device" in out else []),
                                         *(["-q"] if re.search(r"(^|\s)-q\b", out) else [])])
            return self._flags[command]

    def cli(self, argv: list[str], expect: Expect | None = None) -> Outcome:
        rc, _, err, secs, hung, peak = self.exec_measured([*self.prefix, *argv, *self.flags(argv[0])])
        out = classify_cli(rc, err, secs, hung) if expect is None else classify_expect(rc, err, secs, hung, peak, expect)
        out.peak_mb = peak
        return out


def _interpreter_of(prefix: list[str]) -> str | None:
    """The interpreter of a console script (its shebang), or of ``python -m ...`` prefixes."""
    if not prefix:
        return None
    exe = shutil.which(prefix[0]) or prefix[0]
    if re.search(r"python[\d.]*$", Path(exe).name):
        return exe
    try:
        with open(exe, "rb") as f:
            first = f.readline().decode("utf-8", "replace").strip()
    except OSError:
        return None
    if first.startswith("#!") and "python" in first:
        return shlex.split(first[2:])[0]
    return None


def classify_cli(rc: int | None, err: str, secs: float, hung: bool) -> Outcome:
    lines = [line for line in err.strip().splitlines() if line.strip() and not LOG_LINE.match(line)]
    last = lines[-1][:300] if lines else ""
    if hung:
        return Outcome("hang", None, secs, f"no exit within {secs:.0f} s")
    if "Traceback" in err:
        tb = [line for line in err.strip().splitlines() if line.strip()]
        return Outcome("traceback", rc, secs, tb[-1][:300] if tb else "")
    if rc == 0:
        return Outcome("accepted", rc, secs, "exit status 0 on a bad input")
    if rc == 1:
        return Outcome("ok" if len(lines) == 1 else "multiline", rc, secs, last if len(lines) == 1
                       else f"{len(lines)} lines: " + " | ".join(lines)[:300])
    if rc == 2:
        if re.search(r"error: (unrecognized arguments|argument \S+: invalid choice)", last):
            return Outcome("unsupported", rc, secs, last)  # this CLI lacks the command or option: nothing tried
        return Outcome("ok" if "error:" in last else "multiline", rc, secs, last)
    return Outcome("crash", rc, secs, f"exit status {rc}: {last}")


@dataclass(frozen=True)
class Expect:
    """What a trial of issue 32 must show besides :func:`classify_cli`'s one line.

    Attributes:
        success: the input is legitimate and must be used: exit 0 is ``ok``, exit 1 ``refused``.
        require: a regular expression standard error must match (a log line), else ``silent``.
        forbid: texts standard error must not hold (torch's advice to load unsafely, its warning, a
            message that names the wrong cause), else ``misleading``.
        max_mb: the peak resident memory allowed, else ``memory`` (a hostile file must be refused
            before it is inflated or allocated, not after).
    """

    success: bool = False
    require: str | None = None
    forbid: tuple[str, ...] = ()
    max_mb: float | None = None


def classify_expect(rc: int | None, err: str, secs: float, hung: bool, peak: float | None, e: Expect) -> Outcome:
    lines = [line for line in err.strip().splitlines() if line.strip() and not LOG_LINE.match(line)]
    last = lines[-1][:300] if lines else ""
    if not e.success:
        o = classify_cli(rc, err, secs, hung)
    elif hung:
        o = Outcome("hang", None, secs, f"no exit within {secs:.0f} s")
    elif "Traceback" in err:
        o = classify_cli(rc, err, secs, hung)
    elif rc != 0:
        o = Outcome("refused" if rc == 1 else "crash", rc, secs, f"a legitimate input refused: {last}")
    else:
        o = Outcome("ok", rc, secs, "exit 0 (used)")
    if e.max_mb is not None and peak is not None and peak > e.max_mb:
        return Outcome("memory", o.rc, secs, f"peak {peak:,.0f} MB, more than {e.max_mb:,.0f} ({o.status}: {o.line})"[:300])
    if o.status != "ok":
        return o
    said = next((f for f in e.forbid if f in err), None)
    if said is not None:
        return Outcome("misleading", rc, secs, f"says {said!r}: {o.line}"[:300])
    if e.require and not re.search(e.require, err):
        return Outcome("silent", rc, secs, f"no line matching {e.require!r} ({o.line})"[:300])
    return o


# ---------------------------------------------------------------------------------------------- setup

def train_run(r: Runner, kind: str, runs: dict[str, Path | None], log: list[str]) -> Path | None:
    recipe = RECIPES[kind]
    if recipe.stage1 and runs.get(recipe.stage1) is None:
        log.append(f"{kind}: no {recipe.stage1} run for its stage 1")
        return None
    extra = [f"data.root={r.shared / recipe.data}"] if recipe.data else []
    if recipe.data and not (r.shared / recipe.data).is_dir():
        log.append(f"{kind}: shared data {r.shared / recipe.data} not found")
        return None
    stage1 = [f"model.stage1_run={runs[recipe.stage1]}"] if recipe.stage1 else []
    for variant in (recipe.overrides, recipe.minimal):
        run = r.work / "runs" / kind
        shutil.rmtree(run, ignore_errors=True)
        argv = ["train", recipe.preset, "--run", str(run), *r.flags("train"), "--set", *TRAIN, *extra, *variant, *stage1]
        rc, _, err, secs, _ = r.exec([*r.prefix, *argv], timeout=max(r.timeout, 600))
        if rc == 0 and (run / "config.yaml").is_file():
            log.append(f"{kind}: tiny run trained in {secs:.1f} s")
            return run
        log.append(f"{kind}: training failed (exit {rc}): {err.strip().splitlines()[-1][:200] if err.strip() else ''}")
    return None


def copy_run(run: Path, dest: Path, weights: bool = True) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(run, dest, symlinks=True)
    if not weights and (dest / "model.safetensors").exists():
        (dest / "model.safetensors").unlink()
    return dest


def _newest_checkpoint(run: Path) -> Path | None:
    found = sorted((run / "checkpoints").glob("ckpt-*.pt"))
    return found[-1] if found else None


def bad_checkpoint(r: Runner, run: Path, dest: Path, variant: str) -> Path | None:
    """A copy of ``run`` without model.safetensors whose newest checkpoint is replaced by ``variant``
    contents, with a matching SHA-256 sidecar (written by the checkout's own interpreter and torch)."""
    copy_run(run, dest, weights=False)
    ckpt = _newest_checkpoint(dest)
    if ckpt is None:
        return None
    code = textwrap.dedent(f"""
        import hashlib, io, sys, torch
        path = sys.argv[1]
        st = torch.load(path, map_location="cpu", weights_only=True)
        v = {variant!r}
        if v == "not a dict":
            st = [torch.zeros(2)]
        elif v == "no model":
            st.pop("model")
        elif v == "wrong shape":
            m = dict(st["model"]); m[next(iter(m))] = torch.zeros(3, 3, 3); st["model"] = m
        elif v.startswith("no "):
            st.pop(v[3:])
        elif v == "step is text":
            st["step"] = "abc"
        buf = io.BytesIO(); torch.save(st, buf); data = buf.getvalue()
        open(path, "wb").write(data)
        open(path[:-3] + ".pt.sha256", "w").write(hashlib.sha256(data).hexdigest())
    """)
    rc, _, _, _, _ = r.exec([r.python, "-c", code, str(ckpt)], timeout=120)
    return dest if rc == 0 else None


def broken_config(run: Path, dest: Path, variant: str) -> Path:
    copy_run(run, dest)
    cfg = dest / "config.yaml"
    if variant == "not UTF-8":
        cfg.write_bytes(b"name: caf\xe9\nmodel: {kind: flowvae}\n\xff\xfe")
    elif variant == "a YAML list":
        cfg.write_text("- model\n- data\n")
    else:  # a section that is a list
        text = cfg.read_text()
        cfg.write_text(re.sub(r"(?m)^train:\n(?:[ -].*\n)*", "train:\n- 1\n- 2\n", text) if "train:" in text
                       else text + "train:\n- 1\n- 2\n")
    return dest


def damaged_mnist(shared: Path, dest: Path, variant: str) -> Path | None:
    src = shared / "mnist"
    if not (src / "t10k-labels-idx1-ubyte.gz").is_file():
        return None
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for f in src.glob("*.gz"):
        os.symlink(f.resolve(), dest / f.name)
    if variant == "corrupt gzip stream":
        p = dest / "t10k-labels-idx1-ubyte.gz"
        b = bytearray(p.read_bytes())
        for i in range(100, 200):
            b[i] ^= 0xFF
        p.unlink()
        p.write_bytes(bytes(b))
    elif variant == "truncated IDX":
        p = dest / "t10k-images-idx3-ubyte.gz"
        raw = gzip.decompress(p.read_bytes())
        p.unlink()
        (dest / "t10k-images-idx3-ubyte").write_bytes(raw[: len(raw) // 2])
    else:  # wrong magic number
        p = dest / "t10k-images-idx3-ubyte.gz"
        raw = bytearray(gzip.decompress(p.read_bytes()))
        raw[3] = 0x01
        p.unlink()
        p.write_bytes(gzip.compress(bytes(raw), compresslevel=1))
    return dest


def inception_input(work: Path, variant: str) -> Path:
    d = work / "inception" / variant.replace(" ", "_").replace("/", "_")
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    if variant == "/etc/passwd" and Path("/etc/passwd").is_file():
        return Path("/etc/passwd")
    if variant == "a FIFO":
        os.mkfifo(d / "net.pt")
    elif variant == "a folder":
        return d
    elif variant == "a huge file":
        with open(d / "net.pt", "wb") as f:
            f.truncate(2**31 + 1)  # sparse
    else:
        (d / "net.pt").write_text("root:x:0:0:root:/root:/bin/bash\n")
    return d / "net.pt"


# ---------------------------------------------------------------------------------------------- issue 32's inputs

BOMB_BYTES = 4 * 2**30 - 256  # what a deflated zip entry may state without zip64: 4 GiB
TORCH_ADVICE = ("weights_only", "will likely succeed", "UserWarning")  # never shown for a file from elsewhere
HOSTILE_MB = 1500.0  # peak resident memory of a refusal: the CLI and torch take about 400 MB


def deflate_zeros(n: int) -> bytes:
    """A raw deflate stream that inflates to ``n`` zero bytes and takes about ``n / 1032``: one dynamic
    Huffman block of a literal 0 and matches of 258 at distance 1, one bit each for length and
    distance, so its body is zero bytes, built at once (zlib would take 16 s for 4 GiB)."""
    out, state = bytearray(), [0, 0]  # accumulator, bits in it

    def put(value: int, width: int) -> None:  # fields LSB first
        state[0] |= value << state[1]
        state[1] += width
        while state[1] >= 8:
            out.append(state[0] & 0xFF)
            state[0] >>= 8
            state[1] -= 8

    def code(text: str) -> None:  # Huffman codes MSB first
        for c in text:
            put(int(c), 1)

    for value, width in ((1, 1), (2, 2), (29, 5), (0, 5), (14, 4)):  # final dynamic block; 286, 1, 18 codes
        put(value, width)
    for sym in (16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1):
        put({18: 1, 2: 2, 1: 2}.get(sym, 0), 3)  # code-length codes: 18 -> 0, 1 -> 10, 2 -> 11
    code("11")  # literal 0: length 2
    code("0"); put(127, 7); code("0"); put(106, 7)  # noqa: E702 - 255 unused literals
    code("11")  # end of block: length 2
    code("0"); put(17, 7)  # noqa: E702 - 28 unused length codes
    code("10"); code("10")  # noqa: E702 - length 258 and distance 1: length 1 each
    code("10")  # the literal 0; then "0" "0" per match of 258
    matches, rest = divmod(n - 1, 258)
    zero_bits = 2 * matches
    first = min(zero_bits, (-state[1]) % 8)
    put(0, first)
    zero_bits -= first
    if state[1] == 0:
        out += bytes(zero_bits // 8)
        zero_bits %= 8
    put(0, zero_bits)
    for _ in range(rest):
        code("10")
    code("11")
    if state[1]:
        put(0, 8 - state[1])
    return bytes(out)


def torch_archive_with_bomb(r: Runner, obj_code: str, path: Path) -> bool:
    """``torch.save(eval(obj_code))`` by the checkout's interpreter into ``path``, its ``data/0`` entry
    then replaced by a deflate stream stating (and truly inflating to) :data:`BOMB_BYTES`; about 4 MB."""
    code = f"import sys, torch; torch.save({obj_code}, sys.argv[1])"
    rc, _, _, _, _ = r.exec([r.python, "-c", code, str(path)], timeout=120)
    if rc != 0:
        return False
    import zipfile

    with zipfile.ZipFile(path) as zf:
        entries = [(i.filename, zf.read(i), i.CRC) for i in zf.infolist()]
    stream = deflate_zeros(BOMB_BYTES)
    out, central = bytearray(), bytearray()
    for name, data, crc in entries:
        bomb = name.endswith("/data/0")
        method, payload, usize = (8, stream, BOMB_BYTES) if bomb else (0, data, len(data))
        raw, offset = name.encode(), len(out)
        fields = (20, 0, method, 0, 0x21, 0 if bomb else crc, len(payload), usize, len(raw))
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, *fields, 0) + raw + payload
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, *fields, 0, 0, 0, 0, 0, offset) + raw
    start = len(out)
    out += central + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central), start, 0)
    path.write_bytes(bytes(out))
    return True


def grey_png(value: int, side: int = 8) -> bytes:
    """A ``side x side`` 8-bit grey PNG of one value, without PIL."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes([(value + i) % 256] * side) for i in range(side))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def image_folder(dest: Path, n: int = 40, unreadable: tuple[int, ...] = (), links: bool = False) -> Path:
    """``n`` 8x8 grey PNGs, those numbered in ``unreadable`` garbage; with ``links``, also a link to a
    PNG outside the folder, a FIFO named like a PNG and a link to a folder (issue 32)."""
    shutil.rmtree(dest, ignore_errors=True)
    (dest / "imgs").mkdir(parents=True)
    for i in range(n):
        (dest / "imgs" / f"img{i:02d}.png").write_bytes(b"not an image" if i in unreadable else grey_png(7 * i))
    if links:
        (dest / "outside").mkdir()
        (dest / "outside" / "secret.png").write_bytes(grey_png(1))
        os.symlink(dest / "outside" / "secret.png", dest / "imgs" / "x-link.png")
        os.mkfifo(dest / "imgs" / "y-fifo.png")
        os.symlink(dest / "outside", dest / "imgs" / "z-folder")
    return dest / "imgs"


def wolf_folder(dest: Path, config: str) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    (dest / "config.json").write_text(config)
    return dest


def checkpoint_replaced(run: Path, dest: Path, data: bytes | None = None, r: Runner | None = None) -> Path | None:
    """A copy of ``run`` without model.safetensors whose newest checkpoint holds ``data`` (or, with
    ``r``, the deflate bomb) with a matching SHA-256 sidecar."""
    import hashlib

    copy_run(run, dest, weights=False)
    ckpt = _newest_checkpoint(dest)
    if ckpt is None:
        return None
    if data is None:
        assert r is not None
        if not torch_archive_with_bomb(r, "{'format_version': 1, 'model': {'w': torch.zeros(4)}}", ckpt):
            return None
        data = ckpt.read_bytes()
    ckpt.write_bytes(data)
    ckpt.with_suffix(".pt.sha256").write_text(hashlib.sha256(data).hexdigest())
    return dest


def issue32_trials(r: Runner, kind: str, run: Path | None, first: bool) -> list[tuple[str, str, Any]]:
    """Issue 32's hostile inputs (items 11-17): ``(group, name, thunk)``. Trials that do not depend on
    the kind run with the first kind only (``first``)."""
    import pickle

    tmp = r.work / "issue32" / kind
    out: list[tuple[str, str, Any]] = []
    group = "issue 32"
    # TRAIN without its batch sizes: the folder trials train with the ones chosen for the folder
    data_flags = [o for o in TRAIN if "batch_size" not in o] + ["train.steps=1", "train.eval_images=4"]

    def add(name: str, thunk: Any, needs_run: bool = True) -> None:
        out.append((group, name, (lambda: Outcome("n/a", line="no tiny run of this kind"))
                    if needs_run and run is None else thunk))

    def d(name: str) -> Path:
        return tmp / re.sub(r"\W+", "_", name)

    if first:
        def wolf_bomb() -> Outcome:
            src = wolf_folder(d("wolf bomb"), "{}")
            if not torch_archive_with_bomb(r, "{'core': {'w': torch.zeros(4)}}", src / "model.pt"):
                return Outcome("n/a", line="torch.save failed in the checkout's interpreter")
            return r.cli(["import-wolf", str(src), "--run", str(d("wolf bomb run"))], Expect(max_mb=HOSTILE_MB))
        add("11 import-wolf: model.pt deflate bomb (4 GiB)", wolf_bomb, needs_run=False)

        def wolf_deep() -> Outcome:
            src = wolf_folder(d("wolf deep"), "[" * 200_000)
            return r.cli(["import-wolf", str(src), "--run", str(d("wolf deep run"))])
        add("12 import-wolf: config.json [ x200000", wolf_deep, needs_run=False)

        def yaml_deep() -> Outcome:
            (tmp / "deep.yaml").parent.mkdir(parents=True, exist_ok=True)
            (tmp / "deep.yaml").write_text("[" * 100_000)
            return r.cli(["train", str(tmp / "deep.yaml"), "--run", str(d("deep yaml run"))])
        add("12 train FILE: YAML [ x100000", yaml_deep, needs_run=False)

        depth = 60_000  # one argument may take 128 KiB
        add("12 train --set train.betas=[[[...]]]", lambda: r.cli(
            ["train", "digits", "--run", str(d("betas run")), "--set", "train.betas=" + "[" * depth + "0.9" + "]" * depth]),
            needs_run=False)

        for where, bad in (("", (3, 17)), (", the first among them", (0, 17))):
            add(f"15 train --data small folder, 2 of 40 unreadable{where}, on_bad=skip", lambda bad=bad: r.cli(
                ["train", "--data", str(image_folder(d(f"skip{bad}"), unreadable=bad)), "--run", str(d(f"skip{bad} run")),
                 "--set", *data_flags, "data.on_bad=skip"], Expect(success=True)), needs_run=False)

        def wolf_pickle() -> Outcome:
            src = wolf_folder(d("wolf pickle"), "{}")
            (src / "model.pt").write_bytes(pickle.dumps({"core": {"w": [1.0, 2.0]}}, protocol=4))
            return r.cli(["import-wolf", str(src), "--run", str(d("wolf pickle run"))], Expect(forbid=TORCH_ADVICE))
        add("16 import-wolf: plain-pickle model.pt", wolf_pickle, needs_run=False)

        add("17 train --data folder with links and a FIFO", lambda: r.cli(
            ["train", "--data", str(image_folder(d("links"), links=True)), "--run", str(d("links run")),
             "--set", *data_flags], Expect(success=True, require=r"skipped \d+ entr")), needs_run=False)

    R = str(run)
    eval_args = ["--limit", "8", "-k", "1"]

    def ckpt_bomb() -> Outcome:
        dest = checkpoint_replaced(run, d("ckpt bomb"), r=r)  # type: ignore[arg-type]
        if dest is None:
            return Outcome("n/a", line="could not write the checkpoint variant")
        return r.cli(["eval", str(dest), *eval_args], Expect(max_mb=HOSTILE_MB))
    add("11 eval: checkpoint deflate bomb (4 GiB)", ckpt_bomb)

    def cfg_variant(name: str, edit: Any) -> Path:
        dest = copy_run(run, d(name))  # type: ignore[arg-type]
        edit(dest / "config.yaml")
        return dest

    add("12 eval: config.yaml [ x100000", lambda: r.cli(
        ["eval", str(cfg_variant("cfg deep", lambda p: p.write_text("model:\n  steps: " + "[" * 100_000))),
         *eval_args]))
    add("13 eval -k 100000000", lambda: r.cli(["eval", R, "-k", "100000000"], Expect(max_mb=HOSTILE_MB)))
    add("13 sample -n 10**12", lambda: r.cli(["sample", R, "-n", str(10**12), "--out", str(d("samples"))],
                                             Expect(max_mb=HOSTILE_MB)))

    def ckpt_pickle() -> Outcome:
        data = pickle.dumps({"format_version": 1, "model": {}}, protocol=5)
        dest = checkpoint_replaced(run, d("ckpt pickle"), data)  # type: ignore[arg-type]
        if dest is None:
            return Outcome("n/a", line="could not write the checkpoint variant")
        return r.cli(["eval", str(dest), *eval_args], Expect(forbid=TORCH_ADVICE))
    add("16 eval: plain-pickle checkpoint", ckpt_pickle)

    def fifo(p: Path) -> None:
        p.unlink()
        os.mkfifo(p)

    add("17 eval: config.yaml is a FIFO", lambda: r.cli(
        ["eval", str(cfg_variant("cfg fifo", fifo)), *eval_args], Expect(forbid=("no config.yaml",))))

    def duplicate(p: Path) -> None:
        text = p.read_text()
        p.write_text(text.replace("\ntrain:\n", "\ntrain:\n  lr: 0.5\n", 1) if "\ntrain:\n" in text
                     else text + "train:\n  lr: 0.5\n  lr: 0.25\n")

    add("17 eval: a key twice in config.yaml", lambda: r.cli(
        ["eval", str(cfg_variant("cfg duplicate", duplicate)), *eval_args]))
    return out


# ---------------------------------------------------------------------------------------------- trials

def cli_trials(r: Runner, kind: str, run: Path | None) -> list[tuple[str, str, Any]]:
    """``(group, name, thunk)``; a thunk returns an Outcome."""
    recipe = RECIPES[kind]
    out: list[tuple[str, str, Any]] = []
    base = [*TRAIN, *([f"data.root={r.shared / recipe.data}"] if recipe.data else []), *recipe.minimal]
    tmp = r.work / "trials" / kind

    def new_run(name: str) -> str:
        d = tmp / "new" / re.sub(r"\W+", "_", name)
        shutil.rmtree(d, ignore_errors=True)
        return str(d)

    for ov in OVERRIDES:
        out.append(("train overrides", ov, lambda ov=ov: r.cli(
            ["train", recipe.preset, "--run", new_run(ov), "--set", *base, ov])))
    out.append(("train overrides", "--steps -3", lambda: r.cli(
        ["train", recipe.preset, "--run", new_run("steps"), "--steps", "-3"])))

    for variant in ("corrupt gzip stream", "truncated IDX", "wrong magic number"):
        def data_trial(variant: str = variant) -> Outcome:
            if recipe.mnist_preset is None:
                return Outcome("n/a", line="no MNIST preset for this kind")
            root = damaged_mnist(r.shared, tmp / "mnist" / variant.replace(" ", "_"), variant)
            if root is None:
                return Outcome("n/a", line="shared MNIST files not found")
            return r.cli(["train", recipe.mnist_preset, "--run", new_run(variant), "--data", str(root),
                          "--set", *TRAIN, "data.train_limit=64", "data.test_limit=32",
                          *recipe.mnist_overrides])
        out.append(("data", variant, data_trial))

    def needs_run(fn: Any) -> Any:
        return (lambda: Outcome("n/a", line="no tiny run of this kind")) if run is None else fn

    R = str(run)
    options = {"eval -k 0": ["eval", R, "-k", "0"], "eval --limit -5": ["eval", R, "--limit", "-5"],
               "sample -n -3": ["sample", R, "-n", "-3", "--out", str(tmp / "s1")],
               "sample -t nan": ["sample", R, "-t", "nan", "--out", str(tmp / "s2")],
               "switch --pairs 10000": ["switch", R, "--pairs", "10000", "--out", str(tmp / "sw.png")],
               "interpolate --index 0 99999": ["interpolate", R, "--index", "0", "99999", "--out", str(tmp / "i.png")],
               "probe --C -1": ["probe", R, "--C", "-1"]}
    for name, argv in options.items():
        out.append(("options", name, needs_run(lambda argv=argv: r.cli(argv))))
    for variant in ("/etc/passwd", "a FIFO", "a folder", "a huge file"):
        out.append(("fid --inception", variant, needs_run(lambda variant=variant: r.cli(
            ["fid", R, "-n", "2", "--inception", str(inception_input(tmp, variant))]))))

    commands = {"eval": lambda d: ["eval", str(d), "--limit", "8", "-k", "1"],
                "check": lambda d: ["check", str(d), "--limit", "8"],
                "sample": lambda d: ["sample", str(d), "-n", "2", "-t", "1", "--out", str(d / "out")],
                "train --resume": lambda d: ["train", recipe.preset, "--run", str(d), "--resume", "--steps", "3"]}
    for variant in ("not UTF-8", "a YAML list", "train: a list"):
        for cmd, make in commands.items():
            def cfg_trial(variant: str = variant, make: Any = make, cmd: str = cmd) -> Outcome:
                d = broken_config(run, tmp / "cfg" / re.sub(r"\W+", "_", f"{variant}-{cmd}"), variant)  # type: ignore[arg-type]
                return r.cli(make(d))
            out.append(("config.yaml", f"{variant}: {cmd}", needs_run(cfg_trial)))

    ckpt_cases = [(v, c) for v in ("no model", "wrong shape", "not a dict") for c in ("eval", "check", "train --resume")]
    ckpt_cases += [(v, "train --resume") for v in ("no optimizer", "no rng", "step is text")]
    for variant, cmd in ckpt_cases:
        def ckpt_trial(variant: str = variant, cmd: str = cmd) -> Outcome:
            d = bad_checkpoint(r, run, tmp / "ckpt" / re.sub(r"\W+", "_", f"{variant}-{cmd}"), variant)  # type: ignore[arg-type]
            if d is None:
                return Outcome("n/a", line="could not write the checkpoint variant")
            return r.cli(commands[cmd](d))
        out.append(("checkpoints", f"{variant}: {cmd}", needs_run(ckpt_trial)))
    return out


API_TRIALS = ["bits_per_dim(k=0)", "sample(-1)", "numpy images", "int64 images", "wrong channel count",
              "encode wrong shape", "decode wrong shape", "decode numpy codes", "features wrong shape",
              "representations numpy", "load_run(device='cuda') without CUDA",
              "load_run: config not UTF-8", "load_run: config a YAML list", "load_run: config train: a list",
              "load_run: ckpt no model", "load_run: ckpt wrong shape", "load_run: ckpt not a dict"]
# Issue 32 (item 13, and item 17's Hub cache), in a group of their own.
API_TRIALS_32 = ["sample(10**12)", "bits_per_dim(k=10**8)", "bits_per_dim(meta images)",
                 "from_pretrained: blobs folder links out of the cache"]

# Runs inside the checkout's interpreter: argv = [run, tmp, out.json, trial, trial, ...]
API_CODE = r'''
import json, sys, traceback
run, tmp, out_path, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
results = {}
def save():
    with open(out_path, "w") as f:
        json.dump(results, f)
try:
    import torch
    torch.set_num_threads(1)
    try:
        from flowvae.errors import FlowVAEError
    except Exception:
        FlowVAEError = ()
    from flowvae import load_run
    model = load_run(run)
except Exception as e:
    for n in names:
        results[n] = ["harness", f"cannot load the run: {type(e).__name__}: {e}"[:300]]
    save(); sys.exit(0)
m = model
c, s = m.cfg.in_channels, m.cfg.image_size
x = torch.randint(0, 256, (2, c, s, s), dtype=torch.uint8)
wrong = torch.zeros(2, c, s + 2, s + 2, dtype=torch.uint8)
def decode_args(numpy=False):
    if not hasattr(m, "decode"):
        return None
    if hasattr(m, "encode"):
        codes = m.encode(x)
        codes = list(codes) if isinstance(codes, tuple) else [codes]
    else:  # e.g. the UG-VAE: decode(z, beta)
        codes = [torch.zeros(2, 3), torch.zeros(2)]
    i = 0 if codes[0] is not None else len(codes) - 1
    if numpy:
        codes[i] = codes[i].numpy()
    else:
        codes[i] = torch.zeros(codes[i].shape[0], codes[i].shape[-1] + 5)
    return codes
def folder(name):
    import shutil, pathlib
    d = pathlib.Path(tmp) / name
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(run, d)
    return d
def cfg_variant(v):
    d = folder("cfg_" + str(abs(hash(v))))
    p = d / "config.yaml"
    if v == "not UTF-8":
        p.write_bytes(b"name: caf\xe9\n\xff\xfe")
    elif v == "a YAML list":
        p.write_text("- model\n- data\n")
    else:
        import yaml
        d2 = yaml.safe_load(p.read_text()); d2["train"] = [1, 2]; p.write_text(yaml.safe_dump(d2))
    return load_run(d)
def ckpt_variant(v):
    import hashlib, io
    d = folder("ckpt_" + v.replace(" ", "_"))
    (d / "model.safetensors").unlink()
    path = sorted((d / "checkpoints").glob("ckpt-*.pt"))[-1]
    st = torch.load(path, map_location="cpu", weights_only=True)
    if v == "no model":
        st.pop("model")
    elif v == "wrong shape":
        w = dict(st["model"]); w[next(iter(w))] = torch.zeros(3, 3, 3); st["model"] = w
    else:
        st = [torch.zeros(2)]
    buf = io.BytesIO(); torch.save(st, buf); data = buf.getvalue()
    path.write_bytes(data); path.with_suffix(".pt.sha256").write_text(hashlib.sha256(data).hexdigest())
    return load_run(d)
def na(why):
    raise LookupError("n/a: " + why)
def cuda():
    if torch.cuda.is_available():
        na("CUDA is available here")
    return load_run(run, device="cuda")
def has(name):
    return hasattr(m, name) or na("no " + name)
def hub_blobs_out():
    import hashlib, os, pathlib, shutil
    try:
        import huggingface_hub.constants
        from flowvae import from_pretrained
    except ImportError as e:
        na(f"{e}")
    base = pathlib.Path(tmp) / "hub"
    shutil.rmtree(base, ignore_errors=True)
    m.save_pretrained(base / "exported")
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo, elsewhere = base / "cache" / "models--user--name", base / "elsewhere"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    elsewhere.mkdir()
    for name in ("config.yaml", "model.safetensors"):
        data = (base / "exported" / name).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        (elsewhere / digest).write_bytes(data)
        (snap / name).symlink_to(pathlib.Path("..") / ".." / "blobs" / digest)
    (repo / "blobs").symlink_to(elsewhere)
    os.environ["HF_HUB_OFFLINE"] = "1"
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    return from_pretrained("user/name", cache_dir=base / "cache")
TRIALS = {
    "bits_per_dim(k=0)": lambda: m.bits_per_dim(x, k=0),
    "sample(-1)": lambda: m.sample(-1),
    "numpy images": lambda: m.bits_per_dim(x.numpy()),
    "int64 images": lambda: m.bits_per_dim(x.long()),
    "wrong channel count": lambda: m.bits_per_dim(torch.zeros(2, c + 1, s, s, dtype=torch.uint8)),
    "encode wrong shape": lambda: has("encode") and m.encode(wrong),
    "decode wrong shape": lambda: has("decode") and m.decode(*decode_args()),
    "decode numpy codes": lambda: has("decode") and m.decode(*decode_args(numpy=True)),
    "features wrong shape": lambda: m.features(wrong),
    "representations numpy": lambda: m.representations(x.numpy()),
    "load_run(device='cuda') without CUDA": cuda,
    "load_run: config not UTF-8": lambda: cfg_variant("not UTF-8"),
    "load_run: config a YAML list": lambda: cfg_variant("a YAML list"),
    "load_run: config train: a list": lambda: cfg_variant("train: a list"),
    "load_run: ckpt no model": lambda: ckpt_variant("no model"),
    "load_run: ckpt wrong shape": lambda: ckpt_variant("wrong shape"),
    "load_run: ckpt not a dict": lambda: ckpt_variant("not a dict"),
    "sample(10**12)": lambda: m.sample(10**12),
    "bits_per_dim(k=10**8)": lambda: m.bits_per_dim(x[:1], k=10**8),
    "bits_per_dim(meta images)": lambda: m.bits_per_dim(x.to("meta")),
    "from_pretrained: blobs folder links out of the cache": hub_blobs_out,
}
for n in names:
    results[n] = ["running", ""]
    save()
    try:
        TRIALS[n]()
        results[n] = ["accepted", "returned without an error"]
    except LookupError as e:
        if str(e).startswith("n/a"):
            results[n] = ["n/a", str(e)[5:]]
        else:
            results[n] = ["multiline", f"{type(e).__name__}: {e}"[:300]]
    except Exception as e:
        msg = str(e)
        if FlowVAEError and isinstance(e, FlowVAEError):
            results[n] = ["ok" if "\n" not in msg.strip() else "multiline", f"{type(e).__name__}: {msg}"[:300]]
        else:
            results[n] = ["traceback", f"{type(e).__name__}: {msg.splitlines()[0] if msg else ''}"[:300]]
    save()
'''


def api_trials(r: Runner, kind: str, run: Path | None, trials: list[str] = API_TRIALS) -> dict[str, Outcome]:
    if run is None:
        return {n: Outcome("n/a", line="no tiny run of this kind") for n in trials}
    tmp = r.work / ("api" if trials is API_TRIALS else "api32") / kind
    tmp.mkdir(parents=True, exist_ok=True)
    results: dict[str, Outcome] = {}
    pending = list(trials)
    batch = True
    while pending:
        names = pending if batch else pending[:1]
        out = tmp / "results.json"
        out.unlink(missing_ok=True)
        t0 = time.time()
        rc, _, err, secs, hung = r.exec([r.python, "-c", API_CODE, str(run), str(tmp), str(out), *names],
                                        timeout=r.timeout * (2 if batch else 1))
        try:
            got = json.loads(out.read_text())
        except (OSError, ValueError):
            got = {}
        for n in names:
            status, line = got.get(n, [None, ""])
            if status in (None, "running"):
                continue
            results[n] = Outcome("traceback" if status == "harness" else status, rc, 0.0, line)
        done = [n for n in names if n in results]
        stuck = [n for n in names if got.get(n, [None])[0] == "running"]
        if stuck and (hung or rc != 0) and not batch:
            n = stuck[0]
            results[n] = Outcome("hang" if hung else "crash", rc, time.time() - t0,
                                 f"the process {'hung' if hung else f'died (exit {rc})'}: "
                                 f"{(err.strip().splitlines() or [''])[-1][:200]}")
            done.append(n)
        if not done and not batch:  # nothing recorded, nothing running: the process did not start
            for n in names:
                results[n] = Outcome("crash", rc, secs, (err.strip().splitlines() or [""])[-1][:300])
            done = list(names)
        pending = [n for n in pending if n not in results]
        batch = False  # after a dead batch, one trial per process
    return results


# ---------------------------------------------------------------------------------------------- report

def summarise(outcomes: dict[str, dict[str, dict[str, Outcome]]], kinds: list[str]) -> str:
    groups = list(dict.fromkeys(g for k in kinds for g in outcomes.get(k, {})))
    head = ["kind", *groups, "failures"]
    rows = []
    for k in kinds:
        cells = [k]
        fails = 0
        for g in groups:
            res = outcomes.get(k, {}).get(g, {})
            applicable = [o for o in res.values() if o.status not in ("n/a", "unsupported")]
            bad = sum(o.failed for o in applicable)
            fails += bad
            cells.append(f"{len(applicable) - bad}/{len(applicable)}" + (f" ({len(res) - len(applicable)} not tried)"
                                                                          if len(res) > len(applicable) else ""))
        cells.append(str(fails))
        rows.append(cells)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    lines = ["ok/applicable trials per group (a cell counts trials that ended in one line, exit 1 or 2):",
             fmt(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, rows)]
    failing = [(k, g, n, o) for k in kinds for g, res in outcomes.get(k, {}).items() for n, o in res.items()
               if o.failed]
    if failing:
        lines += ["", "failures:"]
        lines += [f"  {k:12s} {g} / {n}: {o.status} (exit {o.rc}) {o.line}" for k, g, n, o in failing]
    unsupported = [(k, g, n, o) for k in kinds for g, res in outcomes.get(k, {}).items() for n, o in res.items()
                   if o.status == "unsupported"]
    if unsupported:
        lines += ["", "not tried (this CLI lacks the command or option; not counted):"]
        lines += [f"  {k:12s} {g} / {n}: {o.line}" for k, g, n, o in unsupported]
    na = sorted({(g, n, o.line) for k in kinds for g, res in outcomes.get(k, {}).items() for n, o in res.items()
                 if o.status == "n/a"})
    if na:
        lines += ["", f"not applicable: {len(na)} trial kinds, e.g. " + "; ".join(f"{n} ({why})" for _, n, why in na[:6])]
    return "\n".join(lines)


def detail(outcomes: dict[str, dict[str, dict[str, Outcome]]], kinds: list[str]) -> str:
    """Every trial as a row: kind, group, trial, outcome, exit status, peak memory, seconds, line."""
    rows = [["kind", "group", "trial", "outcome", "exit", "peak MB", "s", "what it said"]]
    for k in kinds:
        for g, res in outcomes.get(k, {}).items():
            for n, o in res.items():
                rows.append([k, g, n, o.status, "-" if o.rc is None else str(o.rc),
                             "-" if o.peak_mb is None else f"{o.peak_mb:,.0f}", f"{o.seconds:.1f}",
                             o.line.replace("|", "/")[:160]])
    return "\n".join("| " + " | ".join(r) + " |" + ("\n|" + "---|" * len(r) if i == 0 else "")
                     for i, r in enumerate(rows))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flowvae", default="flowvae", help="command prefix of the CLI under test [default: flowvae on PATH]")
    p.add_argument("--python", default=None, help="interpreter of the API trials [default: the CLI script's shebang]")
    p.add_argument("--kinds", nargs="+", default=KINDS, choices=KINDS, help="model kinds [default: all]")
    p.add_argument("--out", default=None, help="write every outcome to this JSON file")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds before a trial counts as a hang [default: 60]")
    p.add_argument("--jobs", type=int, default=max(1, min(4, (os.cpu_count() or 2))),
                   help="trials run in parallel [default: min(4, CPUs)]")
    # Not lower: flowvae.safe_io.read_bytes reserves its whole bound (16 GiB for a checkpoint) as one buffer.
    p.add_argument("--mem-limit-gb", type=float, default=40.0,
                   help="address-space limit of each trial, so a huge allocation fails fast (0: none) [default: 40]")
    p.add_argument("--shared-data", default=os.environ.get("FLOWVAE_SHARED_DATA", "../shared/data"),
                   help="the shared data folder (MNIST, dSprites) [default: $FLOWVAE_SHARED_DATA or ../shared/data]")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--groups", nargs="+", default=None, metavar="GROUP", choices=GROUPS,
                   help=f"run only these trial groups (quote names with spaces): {', '.join(GROUPS)} [default: all]")
    p.add_argument("--pythonpath", default=None, metavar="DIR",
                   help="put DIR first on every child's PYTHONPATH: with --flowvae 'PYTHON -m flowvae.cli.main', "
                        "the CLI of another checkout's src/ (e.g. a git worktree) without installing it")
    p.add_argument("--detail", action="store_true", help="also print every trial's outcome, peak memory and line")
    args = p.parse_args(argv)
    kinds = [k for k in KINDS if k in args.kinds]
    need = set(kinds) | {RECIPES[k].stage1 for k in kinds if RECIPES[k].stage1}
    work = Path(tempfile.mkdtemp(prefix="fault_trials_"))
    r = Runner(args, work)
    t0 = time.time()
    log: list[str] = []
    outcomes: dict[str, dict[str, dict[str, Outcome]]] = {}
    try:
        runs: dict[str, Path | None] = {}
        for k in [k for k in KINDS if k in need]:  # btcvae before multistage
            try:
                runs[k] = train_run(r, k, runs, log)
            except Exception as e:  # noqa: BLE001 - the harness must survive anything
                log.append(f"{k}: setup error {type(e).__name__}: {e}")
                runs[k] = None
            print(log[-1], file=sys.stderr, flush=True)
        jobs: list[tuple[str, str, str, Any]] = []
        groups = set(args.groups or GROUPS)
        for k in kinds:
            for g, n, thunk in [*cli_trials(r, k, runs.get(k)), *issue32_trials(r, k, runs.get(k), k == kinds[0])]:
                if g in groups:
                    jobs.append((k, g, n, thunk))
            if "API" in groups:
                jobs.append((k, "API", "*", lambda k=k: api_trials(r, k, runs.get(k))))
            if API_32 in groups:
                jobs.append((k, API_32, "*", lambda k=k: api_trials(r, k, runs.get(k), API_TRIALS_32)))

        def run_job(job: tuple[str, str, str, Any]) -> tuple[str, str, str, Any]:
            k, g, n, thunk = job
            try:
                return k, g, n, thunk()
            except Exception as e:  # noqa: BLE001
                return k, g, n, Outcome("crash", None, 0.0, f"harness error {type(e).__name__}: {e}"[:300])

        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for i, (k, g, n, res) in enumerate(pool.map(run_job, jobs), 1):
                if g in ("API", API_32):
                    if isinstance(res, Outcome):
                        res = {t: res for t in (API_TRIALS if g == "API" else API_TRIALS_32)}
                    outcomes.setdefault(k, {})[g] = res
                else:
                    outcomes.setdefault(k, {}).setdefault(g, {})[n] = res
                if i % 10 == 0 or i == len(jobs):
                    print(f"{i}/{len(jobs)} trials done ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    table = summarise(outcomes, kinds)
    print(table)
    if args.detail:
        print("\n" + detail(outcomes, kinds))
    print(f"\n{sum(len(v) for g in outcomes.values() for v in g.values())} trials in {time.time() - t0:.0f} s "
          f"against {args.flowvae}")
    if args.out:
        Path(args.out).write_text(json.dumps({
            "flowvae": args.flowvae, "python": r.python, "kinds": kinds, "seconds": round(time.time() - t0, 1),
            "setup": log, "table": table,
            "outcomes": {k: {g: {n: vars(o) for n, o in res.items()} for g, res in gs.items()}
                         for k, gs in outcomes.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
