"""Sharing models (flowvae.hub): save_pretrained / from_pretrained round trips for every kind, the
model card's numbers and escaping, the refusals of hostile folders and caches, and the Hub calls of
push_to_hub and from_pretrained("user/name") against fakes and a pre-populated Hugging Face cache.

Nothing here reaches the network: HF_HUB_OFFLINE is set for every test, and socket connections
other than Unix sockets raise (the fakes of HfApi and hf_hub_download never open one)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import socket
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load as safetensors_load
from safetensors.torch import load_file, save_file

import flowvae
from flowvae.api import load_run
from flowvae.cli.main import main
from flowvae.config import load_config
from flowvae.errors import CheckpointError, ConfigError
from flowvae.hub import HubError, from_pretrained, push_to_hub, save_pretrained
from flowvae.models import MODEL_KINDS, create_model

hf = pytest.importorskip("huggingface_hub")
import huggingface_hub.constants  # noqa: E402 - a lazy submodule

pytestmark = pytest.mark.usefixtures("single_thread")

FILES = {"config.yaml", "model.safetensors", "README.md", "samples.png", "data.json"}
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE and an empty cache in tmp_path for every test; internet sockets refuse to connect."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_TOKEN", "hf_fake_token_for_tests")  # never this machine's own token
    real_connect = socket.socket.connect

    def connect(self, address):  # noqa: ANN001
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise OSError("tests/unit/hub/test_hub.py: no network in these tests")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture(scope="module")
def exported(tiny_runs, tmp_path_factory) -> Path:
    """The tiny flowvae run saved with save_pretrained (copy it before changing it)."""
    out = tmp_path_factory.mktemp("exported") / "flowvae"
    load_run(tiny_runs["flowvae"]).save_pretrained(out)
    return out


@pytest.fixture
def folder(exported, tmp_path) -> Path:
    return Path(shutil.copytree(exported, tmp_path / "model"))


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


def _bpd(model, seed: int = 0) -> torch.Tensor:
    c, s = model.cfg.in_channels, model.cfg.image_size
    x = torch.randint(0, 256, (4, c, s, s), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    with torch.no_grad():
        return model.bits_per_dim(x, k=1, generator=torch.Generator().manual_seed(seed))["elbo_bpd"]


def _front_matter(card: str) -> dict[str, Any]:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def _one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text, text
    return text


def test_these_tests_cannot_reach_the_network():
    with pytest.raises(OSError, match="no network in these tests"):
        socket.create_connection(("127.0.0.1", 9), timeout=1)


# ------------------------------------------------------------------------------------ round trips

@pytest.mark.parametrize("kind", sorted(MODEL_KINDS))
def test_round_trip_through_a_folder(kind, tiny_runs, tmp_path):
    model = load_run(tiny_runs[kind])
    files = model.save_pretrained(tmp_path / "out")
    assert {p.name for p in files} == FILES and files[-1].name == "README.md"
    assert set(os.listdir(tmp_path / "out")) == FILES
    loaded = from_pretrained(tmp_path / "out")
    assert loaded.kind == kind and not loaded.training
    _same_state(model, loaded)
    assert torch.equal(_bpd(model), _bpd(loaded))
    # the run's config, less the paths of this machine (data.root, model.stage1_run)
    expected = model.config.to_dict()
    expected["data"]["root"], expected["model"] = None, model.cfg.without_local().to_dict()
    assert loaded.config.to_dict() == expected
    # config.yaml, not config.json: the exported folder is itself a run folder
    _same_state(model, load_run(tmp_path / "out"))
    card = (tmp_path / "out" / "README.md").read_text()
    assert _front_matter(card)["library_name"] == "flowvae" and f"`{kind}`" in card


def test_model_built_in_python_has_a_card_without_metrics(tiny_runs, tmp_path):
    mcfg = load_config(tiny_runs["flowvae"] / "config.yaml").model
    model = create_model(mcfg)
    files = save_pretrained(model, tmp_path / "out")
    assert {p.name for p in files} == FILES - {"samples.png", "data.json"}
    card = (tmp_path / "out" / "README.md").read_text()
    front = _front_matter(card)
    assert "datasets" not in front and front["license"] == "mit"
    assert "saved from Python (no run folder, so no metrics)" in card
    assert "## Results" not in card and "## Training" not in card and "bits/dim, negative" not in card
    assert f"| parameters | {sum(p.numel() for p in model.parameters()):,} |" in card
    loaded = from_pretrained(str(tmp_path / "out"))
    _same_state(model, loaded)
    assert loaded.cfg.to_dict() == mcfg.to_dict()


def test_a_given_config_names_its_data_set_but_no_hub_data_set(tiny_runs, tmp_path):
    cfg = load_config(tiny_runs["flowvae"] / "config.yaml")
    cfg.data = cfg.data.replace(dataset="mnist")
    save_pretrained(create_model(cfg), tmp_path / "out", config=cfg, license="apache-2.0", repo_id="me/digits")
    card = (tmp_path / "out" / "README.md").read_text()
    # a config names a reader, not the data it read: no Hub data set without a verified data record
    assert "datasets" not in _front_matter(card) and "trained on mnist (as its config names it)" in card
    assert _front_matter(card)["license"] == "apache-2.0"
    assert 'model = flowvae.from_pretrained("me/digits")' in card
    with pytest.raises(ConfigError, match="not a Hub license id"):
        save_pretrained(create_model(cfg), tmp_path / "other", license="mit\ndatasets: [x]")


# ------------------------------------------------------------------------------------ the card

def test_card_carries_the_runs_numbers(tiny_runs, tmp_path):
    # without the eval.json another test's `flowvae eval` may have left: the card would prefer it
    run = Path(shutil.copytree(tiny_runs["flowvae"], tmp_path / "run", symlinks=True,
                               ignore=shutil.ignore_patterns("eval.json")))
    model = load_run(run)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    env = json.loads((run / "environment.json").read_text())
    save_pretrained(model, tmp_path / "a")
    card = (tmp_path / "a" / "README.md").read_text()
    last = [r for r in metrics if r.get("test_elbo_bpd") is not None][-1]
    assert f"{last['test_elbo_bpd']:.4f}" in card and f"step {last['step']:,} of training" in card
    wall = [r["time_s"] for r in metrics if r.get("time_s") is not None][-1]
    assert f"| wall time (since training started, set-up included) | {wall:,.1f} s" in card
    assert f"{env['cpu_count']} CPUs" in card and f"device {env['device']}" in card
    assert f"| parameters | {sum(p.numel() for p in model.parameters()):,} |" in card
    assert re.search(r"!\[samples at temperature 1\.00 \(\d+ of 64 saturated the inverse flow\)\]\(samples\.png\)", card)
    assert "Decoupling Global and Local Representations via Invertible Generative Flows" in card
    assert (tmp_path / "a" / "samples.png").read_bytes() == (run / "samples" / "samples_t1.00.png").read_bytes()

    # eval.json (flowvae eval) wins over the training metrics; probe.json adds a table
    (run / "eval.json").write_text(json.dumps({"elbo_bpd": 5.12345, "iw_bpd": 5.06789, "kl": 0.25, "k": 5, "n": 64,
                                               "dataset": "digits/test"}))
    (run / "probe.json").write_text(json.dumps({"dataset": "digits/test", "protocol": "standard", "results": {
        "z": {"accuracy": 0.58333, "dim": 4}, "v": {"accuracy": 0.8166, "dim": 64}}}))
    save_pretrained(model, tmp_path / "b")
    card = (tmp_path / "b" / "README.md").read_text()
    assert "| test bits/dim, negative ELBO (digits/test, 64 images, `flowvae eval`) | 5.1235 |" in card
    assert "| test bits/dim, importance-weighted bound (K = 5) | 5.0679 |" in card
    assert "| z | 4 | 58.33% |" in card and "| v | 64 | 81.66% |" in card
    assert f"{last['test_elbo_bpd']:.4f}" not in card


def _cells(line: str) -> int:
    """Table cells of a Markdown row: pipes not escaped by a backslash, less one."""
    return len(re.findall(r"(?<!\\)\|", line)) - 1


def test_card_escapes_what_the_run_files_say(tiny_runs, tmp_path):
    run = Path(shutil.copytree(tiny_runs["flowvae"], tmp_path / "run", symlinks=True))
    evil = "<script>alert(1)</script> [click](javascript:alert(1)) ![i](http://evil/x.png) | `x` *y* $z$"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["name"] = evil
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = json.loads((run / "environment.json").read_text())
    env.update(cpu_model=evil, torch=evil, gpu=None, departures_from_paper=[evil] * 50)
    (run / "environment.json").write_text(json.dumps(env))
    (run / "eval.json").write_text(json.dumps({"elbo_bpd": 5.5, "iw_bpd": "<b>5</b>", "k": "<i>", "n": 3,
                                               "dataset": evil}))
    (run / "probe.json").write_text(json.dumps({"dataset": evil, "protocol": evil,
                                                "results": {evil: {"accuracy": "<b>1</b>", "dim": evil}}}))
    save_pretrained(load_run(run), tmp_path / "out")
    card = (tmp_path / "out" / "README.md").read_text()
    for bad in ("<script", "<b>", "<i>", "](javascript", "](http://evil", "![i]", "*y*", "$z$", " `x` "):
        # unescaped: not preceded by the backslash that makes the character plain text
        assert not re.search(r"(?<!\\)" + re.escape(bad).replace(r"\ ", " "), card), bad
    assert "&lt;script&gt;" in card  # shown as text, not dropped
    assert set(_front_matter(card)) == {"library_name", "license", "tags", "pipeline_tag"}
    for line in card.splitlines():  # no value adds or removes a table cell
        if line.startswith("| features"):
            assert _cells(line) == 3
        elif line.startswith("| ") and "```" not in line:
            assert _cells(line) in (2, 3), line
    assert "| 5.5000 |" in card and "importance-weighted" not in card  # text where a number belongs: left out
    line = next(x for x in card.splitlines() if x.startswith("**Departures from the paper:**"))
    assert line.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 20  # the recorded departures are bounded


def test_card_names_the_departures_from_the_paper(tiny_runs, tmp_path):
    """A model whose config departs from the paper (here variational dequantisation) says so in its
    card, from the run's record or, built in Python, from its config; a paper config says nothing."""
    from flowvae.config import apply_overrides  # noqa: PLC0415
    from flowvae.models import create_model  # noqa: PLC0415
    from flowvae.presets import get_preset  # noqa: PLC0415
    from flowvae.reporting.card import model_card  # noqa: PLC0415

    cfg = apply_overrides(get_preset("digits"), ["model.dequantization=variational"])
    card = model_card(create_model(cfg), cfg)
    assert "**Departures from the paper:** variational dequantisation (Flow++" in card
    paper = get_preset("digits")
    assert "Departures" not in model_card(create_model(paper), paper)


# ------------------------------------------------------------------------------------ refusals

def _pickle_bomb(marker: Path) -> bytes:
    class Bomb:
        def __reduce__(self):
            return (Path.touch, (marker,))

    return pickle.dumps({"state_dict": Bomb()})


def _symlinked_weights(folder: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.safetensors"
    shutil.move(folder / "model.safetensors", outside)
    (folder / "model.safetensors").symlink_to(outside)


def _symlinked_config(folder: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.yaml"
    shutil.move(folder / "config.yaml", outside)
    (folder / "config.yaml").symlink_to(outside)


def _pickled_bin(folder: Path, tmp_path: Path) -> None:
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(_pickle_bomb(tmp_path / "PWNED"))


def _unknown_field(folder: Path, tmp_path: Path) -> None:
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    cfg["model"]["trust_remote_code"] = True
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))


def _rewrite(folder: Path, change, metadata: dict[str, str] | None = None) -> None:
    state = load_file(folder / "model.safetensors")
    save_file(change(state), folder / "model.safetensors", metadata=metadata or {"format": "flowvae", "kind": "flowvae"})


def _wrong_shape(folder: Path, tmp_path: Path) -> None:
    def change(state):
        name = next(k for k, v in state.items() if v.is_floating_point() and v.dim() == 4)
        return {**state, name: torch.zeros(*state[name].shape[:-1], state[name].shape[-1] + 1)}

    _rewrite(folder, change)


def _too_large(folder: Path, tmp_path: Path) -> None:
    _rewrite(folder, lambda state: {**state, "junk": torch.zeros(2**21)})


def _foreign_metadata(folder: Path, tmp_path: Path) -> None:
    _rewrite(folder, lambda state: state, metadata={"format": "pt"})


REFUSALS = {"a symlinked weight file": (_symlinked_weights, CheckpointError, "model.safetensors: it is a symbolic link"),
            "a symlinked config": (_symlinked_config, CheckpointError, "config.yaml: it is a symbolic link"),
            "only a pickled .bin": (_pickled_bin, CheckpointError,
                                    r"has no model\.safetensors \(only pytorch_model\.bin: pickled weights, never loaded"),
            "a config with an unknown field": (_unknown_field, ConfigError, "unknown config field model.trust_remote_code"),
            "a tensor of the wrong shape": (_wrong_shape, CheckpointError, "does not fit the architecture .*size mismatch"),
            "weights larger than the model": (_too_large, CheckpointError, r"bytes, more than the [\d,]+ that the weights"),
            "weights not written by flowvae": (_foreign_metadata, CheckpointError, "was not written by flowvae")}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_from_pretrained_refuses_a_hostile_folder_in_one_line(case, folder, tmp_path):
    plant, error, message = REFUSALS[case]
    plant(folder, tmp_path)
    with pytest.raises(error) as e:
        from_pretrained(folder)
    assert re.search(message, _one_line(e)), str(e.value)
    assert not (tmp_path / "PWNED").exists()  # the pickle was never opened


def test_neither_folder_nor_repo_id(tmp_path):
    with pytest.raises(CheckpointError, match="neither a folder nor a Hub repository id") as e:
        from_pretrained(tmp_path / "no" / "such" / "folder")
    _one_line(e)
    with pytest.raises(CheckpointError, match="no config.yaml"):
        from_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="applies to Hub repositories"):
        from_pretrained(tmp_path, revision="main")


def test_save_pretrained_never_writes_into_someone_elses_folder(exported, tmp_path):
    model = from_pretrained(exported)
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="holds notes.txt, so it is not a flowvae export") as e:
        save_pretrained(model, tmp_path / "project")
    _one_line(e)
    assert os.listdir(tmp_path / "project") == ["notes.txt"]
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "README.md").write_text("# my project\n")
    with pytest.raises(CheckpointError, match="not a flowvae model card"):
        save_pretrained(model, tmp_path / "repo")
    assert (tmp_path / "repo" / "README.md").read_text() == "# my project\n"
    again = Path(shutil.copytree(exported, tmp_path / "again"))
    save_pretrained(model, again)  # a previous export is overwritten
    _same_state(model, from_pretrained(again))


# ------------------------------------------------------------------------------------ the Hub, faked

class FakeApi:
    """HfApi's create_repo / create_branch / upload_folder / get_paths_info, recorded; uploads land
    in ``FakeApi.remote`` as {name: bytes}."""

    calls: list[tuple[str, dict[str, Any]]] = []
    remote: dict[str, bytes] = {}
    sizes: dict[str, int] | None = None
    fail: BaseException | None = None

    def __init__(self, token: Any = None):
        self.calls.append(("HfApi", {"token": token}))

    def _call(self, name: str, **kw: Any) -> None:
        self.calls.append((name, kw))
        if self.fail is not None:
            raise self.fail

    def create_repo(self, repo_id: str, **kw: Any) -> str:
        self._call("create_repo", repo_id=repo_id, **kw)
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self, repo_id: str, **kw: Any) -> None:
        self._call("create_branch", repo_id=repo_id, **kw)

    def upload_folder(self, **kw: Any) -> Any:
        self._call("upload_folder", **kw)
        for p in Path(kw["folder_path"]).rglob("*"):
            if p.is_file() and any(fnmatch(p.name, pat) for pat in kw["allow_patterns"]):
                type(self).remote[p.name] = p.read_bytes()
        return SimpleNamespace(commit_url=f"https://huggingface.co/{kw['repo_id']}/commit/{COMMIT}")

    def get_paths_info(self, repo_id: str, paths: list[str], **kw: Any) -> list[Any]:
        self._call("get_paths_info", repo_id=repo_id, paths=paths, **kw)
        sizes = self.sizes if self.sizes is not None else {k: len(v) for k, v in self.remote.items()}
        return [SimpleNamespace(path=p, size=sizes[p]) for p in paths if p in sizes]


@pytest.fixture
def fake_api(monkeypatch) -> type[FakeApi]:
    monkeypatch.setattr(FakeApi, "calls", [])
    monkeypatch.setattr(FakeApi, "remote", {})
    monkeypatch.setattr(FakeApi, "sizes", None)
    monkeypatch.setattr(FakeApi, "fail", None)
    monkeypatch.setattr(hf, "HfApi", FakeApi)
    # Pushing needs the Hub "online"; the fake is all it reaches, and sockets still refuse.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return FakeApi


def test_push_uploads_exactly_the_model_files_to_the_repo(fake_api, tiny_runs, capsys):
    run = tiny_runs["flowvae"]
    assert main(["push", str(run), "--repo-id", "user/name", "--private", "--revision", "dev", "--json", "-q"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res["files"]) == FILES and len(res["files"]) == len(FILES)
    assert res["repo_id"] == "user/name" and res["revision"] == "dev"
    assert res["commit_url"] == f"https://huggingface.co/user/name/commit/{COMMIT}"
    names = [c[0] for c in fake_api.calls]
    assert names == ["HfApi", "create_repo", "create_branch", "upload_folder"]
    calls = dict(fake_api.calls)
    assert calls["create_repo"] == {"repo_id": "user/name", "repo_type": "model", "private": True, "exist_ok": True}
    assert calls["create_branch"] == {"repo_id": "user/name", "repo_type": "model", "branch": "dev", "exist_ok": True}
    up = calls["upload_folder"]
    assert up["repo_id"] == "user/name" and up["revision"] == "dev" and up["repo_type"] == "model"
    assert sorted(up["allow_patterns"]) == sorted(FILES) == sorted(res["files"])
    assert set(fake_api.remote) == FILES
    card = fake_api.remote["README.md"].decode()
    assert 'model = flowvae.from_pretrained("user/name")' in card
    sent, trained = safetensors_load(fake_api.remote["model.safetensors"]), load_file(run / "model.safetensors")
    assert sent.keys() == trained.keys() and all(torch.equal(sent[k], trained[k]) for k in sent)
    # a model object pushes the same way, to main without a branch
    fake_api.calls.clear()
    info = load_run(run).push_to_hub("user/name")
    assert [c[0] for c in fake_api.calls] == ["HfApi", "create_repo", "upload_folder"]
    assert info["revision"] == "main" and dict(fake_api.calls)["create_repo"]["private"] is None


def test_push_errors_are_one_line(fake_api, tiny_runs, capsys):
    fake_api.fail = hf.errors.HfHubHTTPError("401 Client Error: Unauthorized for url: https://huggingface.co/api/repos/create\n"
                                             "Invalid credentials", response=SimpleNamespace(headers={}, request=None,
                                                                                             status_code=401))
    assert main(["push", str(tiny_runs["flowvae"]), "--repo-id", "user/name"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "flowvae push: error: the Hub refused access to user/name (HTTP 401)" in err
    assert main(["push", str(tiny_runs["flowvae"]), "--repo-id", "not a repo"]) == 1
    assert "is not a Hub repository id" in capsys.readouterr().err
    huggingface_hub.constants.HF_HUB_OFFLINE = True  # restored by the fixture's monkeypatch
    with pytest.raises(HubError, match="while HF_HUB_OFFLINE is set"):
        push_to_hub(tiny_runs["flowvae"], "user/name")


def _populate_cache(cache: Path, repo_id: str, files: dict[str, bytes], commit: str = COMMIT) -> Path:
    """The Hugging Face cache layout: blobs by hash, snapshots/COMMIT/NAME -> ../../blobs/HASH, refs/main."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    for name, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / digest).write_bytes(data)
        (snap / name).symlink_to(Path("..") / ".." / "blobs" / digest)
    return snap


def _exported_files(exported: Path) -> dict[str, bytes]:
    return {name: (exported / name).read_bytes() for name in FILES}


def test_from_pretrained_resolves_a_repo_id_through_the_hub_cache(exported, tmp_path):
    snap = _populate_cache(tmp_path / "hf-cache", "user/name", _exported_files(exported))
    original = from_pretrained(exported)
    model = flowvae.from_pretrained("user/name")  # HF_HUB_OFFLINE: hf_hub_download answers from the cache
    _same_state(original, model)
    assert torch.equal(_bpd(original), _bpd(model))
    _same_state(original, from_pretrained("user/name", revision=COMMIT, cache_dir=tmp_path / "hf-cache"))
    with pytest.raises(HubError, match="not in the local Hugging Face cache") as e:
        from_pretrained("user/other")
    _one_line(e)
    # a link planted in the cache that leads out of its blobs folder is refused
    outside = tmp_path / "outside.yaml"
    outside.write_bytes((exported / "config.yaml").read_bytes())
    (snap / "config.yaml").unlink()
    (snap / "config.yaml").symlink_to(outside)
    with pytest.raises(CheckpointError, match="leads outside the cache's blobs folder"):
        from_pretrained("user/name")


def test_from_pretrained_validates_what_the_hub_serves(exported, tmp_path):
    files = _exported_files(exported)
    state = load_file(exported / "model.safetensors")
    name = next(k for k, v in state.items() if v.dim() == 4)
    state[name] = torch.zeros(1, 1, 1, 1)
    bad = tmp_path / "bad.safetensors"
    save_file(state, bad, metadata={"format": "flowvae", "kind": "flowvae"})
    _populate_cache(tmp_path / "hf-cache", "user/bad", {**files, "model.safetensors": bad.read_bytes()})
    with pytest.raises(CheckpointError, match=f"^user/bad@{COMMIT[:12]}: .*size mismatch for {re.escape(name)}") as e:
        from_pretrained("user/bad")
    _one_line(e)
    cfg = yaml.safe_load(files["config.yaml"])
    cfg["model"]["d_z"] = "<script>"
    _populate_cache(tmp_path / "hf-cache", "user/badcfg", {**files, "config.yaml": yaml.safe_dump(cfg).encode()})
    with pytest.raises(ConfigError, match="user/badcfg@.*model.d_z"):
        from_pretrained("user/badcfg")


@pytest.fixture
def fake_download(fake_api, monkeypatch, exported, tmp_path) -> list[tuple[str, str | None]]:
    """hf_hub_download serving the exported files from snapshots/COMMIT/ (plain files, as on Windows)."""
    got: list[tuple[str, str | None]] = []
    fake_api.remote.update(_exported_files(exported))

    def download(repo_id: str, filename: str, *, revision: str | None = None, **kw: Any) -> str:
        got.append((filename, revision))
        path = tmp_path / "served" / "snapshots" / COMMIT / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(fake_api.remote[filename])
        return str(path)

    monkeypatch.setattr(hf, "hf_hub_download", download)
    return got


def test_online_from_pretrained_downloads_only_what_fits(fake_download, fake_api, exported):
    model = from_pretrained("user/name", revision="dev")
    _same_state(from_pretrained(exported), model)
    assert fake_download == [("config.yaml", "dev"), ("model.safetensors", COMMIT)]  # the weights of the same commit
    assert dict(fake_api.calls)["get_paths_info"]["paths"] == ["config.yaml", "model.safetensors"]

    fake_download.clear()
    fake_api.sizes = {"config.yaml": 2000, "model.safetensors": 50 * 2**30}
    with pytest.raises(HubError, match=r"model.safetensors of user/name is 53,687,091,200 bytes, more than the"):
        from_pretrained("user/name")
    assert fake_download == [("config.yaml", None)]  # the weights were never downloaded

    fake_download.clear()
    fake_api.sizes = {"config.yaml": 2000, "pytorch_model.bin": 10**6}
    with pytest.raises(HubError, match="has no model.safetensors; it is not a flowvae model repository") as e:
        from_pretrained("user/name")
    assert fake_download == [] and "pickled" in _one_line(e)

    fake_api.sizes = None
    fake_api.fail = hf.errors.RepositoryNotFoundError(
        "404 Client Error. Repository Not Found", response=SimpleNamespace(headers={}, request=None, status_code=404))
    with pytest.raises(HubError, match="no model repository user/name on the Hub"):
        from_pretrained("user/name")


# ------------------------------------------------------------------------------------ no huggingface_hub

def test_without_huggingface_hub(monkeypatch, exported, tmp_path, tiny_runs, capsys):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # makes `import huggingface_hub` raise ImportError
    monkeypatch.setitem(sys.modules, "huggingface_hub.constants", None)
    for call in (lambda: from_pretrained("user/name"), lambda: push_to_hub(exported, "user/name")):
        with pytest.raises(HubError, match=r"needs the huggingface_hub package: pip install flowvae\[hub\]$"):
            call()
    model = from_pretrained(exported)  # folders need no huggingface_hub
    save_pretrained(model, tmp_path / "out")
    assert main(["push", str(tiny_runs["flowvae"]), "--repo-id", "user/name"]) == 1
    assert capsys.readouterr().err.strip().endswith("pip install flowvae[hub]")


def test_import_flowvae_does_not_import_huggingface_hub(exported):
    code = ("import sys, flowvae; f = flowvae.from_pretrained; m = f(sys.argv[1]); "
            "assert callable(flowvae.push_to_hub); print('huggingface_hub' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(exported)], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------------ flowvae export

def test_cli_export(tiny_runs, tmp_path, capsys):
    run = tiny_runs["vae"]
    assert main(["export", str(run), "--out", str(tmp_path / "out"), "--repo-id", "me/vae", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["out"] == str(tmp_path / "out") and set(res["files"]) == FILES
    assert 'from_pretrained("me/vae")' in (tmp_path / "out" / "README.md").read_text()
    _same_state(load_run(run), from_pretrained(tmp_path / "out"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("x")
    assert main(["export", str(run), "--out", str(tmp_path / "mine")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("flowvae export: error: refusing to export into")
