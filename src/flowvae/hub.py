"""Sharing trained models as the field does: a folder, or a Hugging Face Hub model repository.

A shared model is a folder of three files (four with a sample grid):

* ``config.yaml``: the run's whole config, exactly as ``flowvae train`` writes it into a run folder
  (:func:`~flowvae.config.save_config`). YAML rather than ``config.json`` because it is the file
  :func:`~flowvae.config.load_config` and :func:`~flowvae.runs.load_run` read in every run folder:
  an exported folder is itself a minimal run folder, so ``flowvae sample DIR``, ``flowvae check
  DIR`` and ``load_run(DIR)`` work on it unchanged, and it diffs line by line against the run's own.
* ``model.safetensors``: the state dict, with flowvae's metadata ``format=flowvae``, ``kind=KIND``
  (and ``flowvae_version``), as the trainer writes it.
* ``README.md``: a model card (:mod:`flowvae.reporting.card`). YAML front matter (``library_name:
  flowvae``, ``license``, ``tags``, ``pipeline_tag`` and ``datasets`` where the data set has a Hub
  id), then the model kind, its config, parameter count, test bits/dim, probe accuracies, the sample
  grid, hardware and wall time, how to load it, and the paper's citation. Every value taken from the
  run's files is escaped for Markdown and HTML, so a hostile run folder cannot inject links, images
  or markup.
* ``samples.png``: a copy of the run's cleanest sample grid, if any: the fewest saturated samples
  (see :func:`flowvae.reporting.card.sample_grid`).

:func:`save_pretrained` writes such a folder, :func:`push_to_hub` uploads one, and
:func:`from_pretrained` loads one from a folder or from the Hub. Loading goes through the checks of
:func:`~flowvae.runs.load_run` (no symbolic links, a bounded config whose unknown fields are refused,
flowvae's metadata for the same kind, every tensor matching the architecture in name and shape) and
never runs code from the files: no pickle, no remote code. From the Hub, only ``config.yaml`` and
``model.safetensors`` are downloaded, and the weight file only when its size fits the model its
config describes.

``huggingface_hub`` (``pip install flowvae[hub]``) is imported only by :func:`push_to_hub` and by
:func:`from_pretrained` of a repository id; saving and loading folders do not need it.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from . import safe_io
from .config import Config, DataConfig
from .errors import CheckpointError, ConfigError, FlowVAEError
from .models.base import GenerativeModel
from .reporting.card import (
    CARD_FILE,
    MAX_CARD_BYTES,
    REPO_ID,
    SAMPLE_FILE,
    check_license,
    check_repo_id,
    data_record,
    model_card,
    sample_grid,
)
from .reporting.card import HUB_DATASETS as HUB_DATASETS  # where it was before the card moved
from .reporting.format import one_line
from .runs import RunFolder
from .runs.data import DATA_RECORD_FILE
from .runs.folder import fit_state, read_config_and_model, read_weights, refuse_link
from .version import __version__

__all__ = ["CARD_FILE", "CONFIG_FILE", "HubError", "SAMPLE_FILE", "WEIGHTS_FILE", "from_pretrained",
           "model_card", "push_to_hub", "save_pretrained"]

log = logging.getLogger("flowvae")

CONFIG_FILE = RunFolder.CONFIG
WEIGHTS_FILE = RunFolder.WEIGHTS
#: the files :func:`from_pretrained` reads (and downloads); nothing else of a repository is fetched
LOAD_FILES = (CONFIG_FILE, WEIGHTS_FILE)
_OURS = frozenset({CONFIG_FILE, WEIGHTS_FILE, CARD_FILE, SAMPLE_FILE, DATA_RECORD_FILE})
# A git clone of a Hub repository holds these besides the files above.
_GIT = frozenset({".git", ".gitattributes"})
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,199}$")


class HubError(CheckpointError):
    """The Hugging Face Hub cannot be used: ``huggingface_hub`` is not installed, the repository or
    revision does not exist or is not reachable, it is not a flowvae model, or an upload failed."""


# ----------------------------------------------------------------------------------------------
# checks


def _hub() -> Any:
    """The ``huggingface_hub`` module, imported now (so that ``import flowvae`` never pays for it)."""
    try:
        import huggingface_hub
        import huggingface_hub.constants  # noqa: F401 - a lazy submodule, read for HF_HUB_OFFLINE
    except ImportError:
        raise HubError("the Hugging Face Hub needs the huggingface_hub package: pip install flowvae[hub]") from None
    return huggingface_hub


def _revision(revision: Any) -> str | None:
    if revision is None:
        return None
    if not isinstance(revision, str) or not _REVISION.match(revision) or ".." in revision:
        raise ConfigError(f"revision {revision!r} is not a branch, tag or commit name; give e.g. main or a commit hash")
    return revision


# ----------------------------------------------------------------------------------------------
# saving


def _stored_config(model: GenerativeModel, config: Config | None) -> tuple[Config, bool]:
    """The config to store and whether its data section describes real training data.

    The model section and ``data.n_bits`` are always the model's own, so the stored config builds
    exactly these weights even when ``model.config`` was edited after loading. Paths on this
    machine (``data.root``, ``model.stage1_run``: :meth:`~flowvae.settings.Settings.without_local`)
    are left out: publishing a model must not publish its author's file-system layout.
    """
    cfg = config if config is not None else getattr(model, "config", None)
    if cfg is not None and not isinstance(cfg, Config):
        raise ConfigError(f"config must be a flowvae Config, got {type(cfg).__name__}")
    known = cfg is not None
    if cfg is None:  # built in Python: the data section is the default one, not the data it saw
        cfg = Config(name=model.kind, model=model.cfg, data=DataConfig(n_bits=model.n_bits))
    data = cfg.data if cfg.data.n_bits == model.n_bits else cfg.data.replace(n_bits=model.n_bits)
    return Config(name=cfg.name, model=model.cfg.without_local(), data=data.without_local(), train=cfg.train), known


def _leftover(name: str) -> bool:
    """Whether ``name`` is the temporary file of an atomic write of ours that was interrupted."""
    return name.endswith(".tmp") and any(name.startswith(f".{ours}.") for ours in _OURS)


def _prepare_out(out: Path) -> None:
    """Refuse an output folder that holds anything but a previous export, so that exporting into
    ``~`` or a project folder never overwrites someone's README.md."""
    if os.path.lexists(out) and not out.is_dir():
        raise CheckpointError(f"{out} exists and is not a folder; give a new or empty folder to export into")
    if not out.is_dir():
        return
    others = sorted(name for name in os.listdir(out) if name not in _OURS | _GIT and not _leftover(name))
    if others:
        listed = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise CheckpointError(f"refusing to export into {out}: it holds {listed}, so it is not a flowvae export; "
                              f"give a new or empty folder")
    card = out / CARD_FILE
    if os.path.lexists(card):
        try:
            head = safe_io.read_text(card, MAX_CARD_BYTES)[:4096]
        except (OSError, UnicodeDecodeError, CheckpointError):
            head = ""
        if "library_name: flowvae" not in head:
            raise CheckpointError(f"refusing to overwrite {card}: it is not a flowvae model card; give a new or "
                                  f"empty folder")


def save_pretrained(model: GenerativeModel, out: str | Path, *, run: str | Path | None = None,
                    config: Config | None = None, repo_id: str | None = None, license: str = "mit") -> list[Path]:
    """Write ``model`` to the folder ``out`` in the form :func:`from_pretrained` loads (module docstring).

    Stored: ``config.yaml`` (without local paths), ``model.safetensors`` (metadata
    ``format=flowvae``, ``kind``, ``flowvae_version``), the run's data record ``data.json`` (what
    it was trained on) when it has one, ``samples.png`` when the run has a sample grid (the one
    with the fewest saturated samples), and the model card ``README.md`` (written last). Each file
    is written atomically. The card's metrics come from the run folder: ``run``, else
    ``model.run_dir`` (set by :func:`~flowvae.runs.load_run`); a model built in Python
    (``create_model(cfg)``) has neither, and its card carries no metrics. A model from
    :func:`from_pretrained` has its config (so the card names its data set) but no run folder.

    Args:
        model: the model to save.
        out: the folder to write; created if needed. It must be new, empty or a previous export.
        run: the run folder whose metrics, probe results, sample grid and hardware go on the card.
        config: the whole config to store [default: ``model.config``; for a model built in Python, its
            model section with the default data and train sections].
        repo_id: the Hub repository id the card's loading example names [default: ``USER/NAME``].
        license: the license id in the card's front matter (a Hub license id) [default: ``mit``].

    Returns:
        The paths written, the card last.

    Raises:
        CheckpointError: ``out`` is a file or holds other files (a README.md that is not a flowvae
            card included), or a file cannot be written.
        ConfigError: a bad ``repo_id``, ``license`` or ``config``.

    Example:
        >>> model = flowvae.load_run("runs/demo")                 # doctest: +SKIP
        >>> model.save_pretrained("export/demo")                 # doctest: +SKIP
        [PosixPath('export/demo/model.safetensors'), ..., PosixPath('export/demo/README.md')]
    """
    if not isinstance(model, GenerativeModel):
        raise ConfigError(f"save_pretrained needs a flowvae model, got {type(model).__name__}")
    repo_id = None if repo_id is None else check_repo_id(repo_id)
    license = check_license(license)
    cfg, known = _stored_config(model, config)
    run_dir = Path(run) if run is not None else getattr(model, "run_dir", None)
    out = Path(out)
    _prepare_out(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"cannot create {out}: {e.strerror or e}") from None
    # The export is itself a minimal run folder, written as training writes one.
    folder = RunFolder(out)
    written = [folder.write_weights(model), folder.write_config(cfg)]
    record = data_record(Path(run_dir) if run_dir is not None else None)
    if record is not None:  # commands on the export check it, as on the run (flowvae.runs.data)
        written.append(folder.write_data_record(record))
    grid = sample_grid(Path(run_dir) if run_dir is not None else None)
    if grid is not None:
        safe_io.atomic_write(out / SAMPLE_FILE, grid[0], root=out)
        written.append(out / SAMPLE_FILE)
    card = model_card(model, cfg, run=run_dir, repo_id=repo_id, license=license, dataset_known=known,
                      sample=grid[1] if grid else None)
    safe_io.atomic_write(out / CARD_FILE, card.encode("utf-8"), root=out)
    return [*written, out / CARD_FILE]


# ----------------------------------------------------------------------------------------------
# loading


def _weight_bound(model: GenerativeModel) -> int:
    """The most bytes the weight file of ``model`` can take: its tensors plus a safetensors header
    (8 bytes, then JSON of about a hundred bytes and the name per tensor, and the metadata)."""
    state = model.state_dict()
    data = sum(t.numel() * t.element_size() for t in state.values())
    return data + 65536 + sum(len(name) + 256 for name in state)


def _load(config: Path, weights: Callable[[int], Path], device: torch.device, where: str) -> GenerativeModel:
    """The model of the ``config`` file and the weight file ``weights(bound)`` returns, validated by
    :func:`~flowvae.runs.load_run`'s checks, in eval mode on ``device``."""
    cfg, model = read_config_and_model(config)
    bound = _weight_bound(model)
    path = weights(bound)
    refuse_link(path)
    state = read_weights(path, cfg.model.kind, max_bytes=bound)
    fit_state(model, state, path, config)
    model.config = cfg
    log.debug("loaded a %r model from %s", cfg.model.kind, where)
    return model.to(device).eval()


def _load_folder(folder: Path, device: torch.device) -> GenerativeModel:
    if not os.path.lexists(folder / CONFIG_FILE):
        raise CheckpointError(f"{folder} is not a flowvae model folder (no {CONFIG_FILE}); write one with "
                              f"model.save_pretrained or flowvae export")
    if not os.path.lexists(folder / WEIGHTS_FILE):
        pickled = sorted(p.name for p in folder.iterdir() if p.name.lower().endswith(_PICKLE_SUFFIXES))
        found = f" (only {', '.join(pickled)}: pickled weights, never loaded since unpickling can run code)" if pickled else ""
        raise CheckpointError(f"{folder} has no {WEIGHTS_FILE}{found}; flowvae loads safetensors weights only")
    return _load(folder / CONFIG_FILE, lambda _: folder / WEIGHTS_FILE, device, str(folder))


def _hub_error(e: BaseException, repo_id: str, revision: str | None, file: str | None = None) -> BaseException:
    """A one-line :class:`HubError` for an error of ``huggingface_hub`` or the network, else ``e``
    itself (a bug keeps its traceback). Matched by class name, which is stable across releases
    while the modules defining the classes moved."""
    names = {c.__name__ for c in type(e).__mro__}
    what = f"{file} of {repo_id}" if file else repo_id
    at = f" at revision {revision!r}" if revision else ""
    status = getattr(getattr(e, "response", None), "status_code", None)
    if "RevisionNotFoundError" in names:
        return HubError(f"{repo_id} has no revision {revision!r} on the Hub; give an existing branch, tag or commit")
    if "GatedRepoError" in names:
        return HubError(f"{repo_id} is gated: accept its conditions on huggingface.co, then log in (hf auth login)")
    if "RepositoryNotFoundError" in names:
        return HubError(f"no model repository {repo_id} on the Hub (nor a folder of that name here), or it is "
                        f"private: check the id, or log in (hf auth login, or set HF_TOKEN)")
    if "LocalEntryNotFoundError" in names or ("OfflineModeIsEnabled" in names and file):
        return HubError(f"{what}{at} is not in the local Hugging Face cache and the Hub cannot be reached (offline, "
                        f"or HF_HUB_OFFLINE is set); connect and try again")
    if "OfflineModeIsEnabled" in names or isinstance(e, ConnectionError):
        return HubError(f"the Hub cannot be reached for {repo_id} (offline, or HF_HUB_OFFLINE is set): "
                        f"{one_line(e)}")
    if "EntryNotFoundError" in names:
        return HubError(f"{repo_id}{at} has no {file}; it is not a flowvae model repository")
    if status in (401, 403):
        return HubError(f"the Hub refused access to {repo_id} (HTTP {status}): log in with a token that may write "
                        f"there (hf auth login, or set HF_TOKEN)")
    if type(e).__module__.split(".")[0] in ("huggingface_hub", "httpx", "requests", "urllib3") or isinstance(e, OSError):
        return HubError(f"the Hub request for {what} failed: {one_line(e)}")
    return e


def _inside(path: str | Path, folder: str) -> bool:
    """Whether the real path of ``path`` lies inside the real folder ``folder``."""
    return os.path.realpath(path).startswith(folder.rstrip(os.sep) + os.sep)


def _cached_file(path: Path) -> Path:
    """The real file behind ``path`` in the Hugging Face cache (``REPO/snapshots/COMMIT/NAME``, a
    symbolic link to ``../../blobs/HASH``, or a plain file where links are not available).

    Everything planted in the cache that leads out of the repository's folder ``REPO`` is refused
    in one line before it is read: a link other than to ``blobs/``, a ``blobs`` folder that is itself
    a link out of ``REPO``, a snapshot folder that is, and anything but a regular file at the end.
    """
    repo = path.parent.parent.parent
    snapshot = path.parent.parent.name == "snapshots"
    real_repo = os.path.realpath(repo)
    redo = f"delete {repo} to download the model again"
    if not path.is_symlink():
        if snapshot and not _inside(path, real_repo):
            raise CheckpointError(f"refusing {path}: its folder is a symbolic link leading out of the cache's {repo}; "
                                  f"{redo}")
        return path
    blobs = repo / "blobs"
    if snapshot and not _inside(blobs, real_repo):
        raise CheckpointError(f"refusing {path}: the cache's blobs folder {blobs} is a symbolic link leading out of "
                              f"{repo}; {redo}")
    real = Path(os.path.realpath(path))
    if not snapshot or real.parent != Path(os.path.realpath(blobs)):
        raise CheckpointError(f"refusing {path}: it is a symbolic link that leads outside the cache's blobs folder")
    if not stat.S_ISREG(os.lstat(real).st_mode):
        raise CheckpointError(f"refusing {path}: it does not lead to a regular file")
    return real


def _load_hub(repo_id: str, revision: str | None, device: torch.device, cache_dir: str | Path | None,
              token: str | bool | None) -> GenerativeModel:
    from .config import MAX_CONFIG_BYTES

    hub = _hub()
    sizes: dict[str, int] = {}
    if not getattr(hub.constants, "HF_HUB_OFFLINE", False):
        # Sizes first, so that neither file is downloaded when it cannot be what flowvae wrote.
        try:
            infos = hub.HfApi(token=token).get_paths_info(repo_id, list(LOAD_FILES), revision=revision)
        except Exception as e:  # noqa: BLE001 - mapped to one line, or re-raised as it is
            raise _hub_error(e, repo_id, revision) from None
        sizes = {i.path: int(i.size) for i in infos if getattr(i, "size", None) is not None}
        for name in LOAD_FILES:
            if name not in sizes:
                raise HubError(f"{repo_id} has no {name}; it is not a flowvae model repository (flowvae loads "
                               f"{' and '.join(LOAD_FILES)} only, never pickled weights)")
        if sizes[CONFIG_FILE] > MAX_CONFIG_BYTES:
            raise HubError(f"{CONFIG_FILE} of {repo_id} is {sizes[CONFIG_FILE]:,} bytes, more than the "
                           f"{MAX_CONFIG_BYTES:,} of a flowvae config; not downloaded")

    def download(name: str, rev: str | None) -> Path:
        try:
            return Path(hub.hf_hub_download(repo_id, name, revision=rev, cache_dir=cache_dir, token=token,
                                            library_name="flowvae", library_version=__version__))
        except Exception as e:  # noqa: BLE001 - mapped to one line, or re-raised as it is
            raise _hub_error(e, repo_id, rev, name) from None

    snapshot = download(CONFIG_FILE, revision)
    # The weights come from the commit the config came from, even if the branch moves meanwhile.
    commit = snapshot.parent.name if snapshot.parent.parent.name == "snapshots" else revision

    def weights(bound: int) -> Path:
        if sizes.get(WEIGHTS_FILE, 0) > bound:
            raise HubError(f"{WEIGHTS_FILE} of {repo_id} is {sizes[WEIGHTS_FILE]:,} bytes, more than the {bound:,} "
                           f"that the weights of its config's model take; not downloaded")
        return _cached_file(download(WEIGHTS_FILE, commit))

    at = f"{repo_id}@{commit[:12]}" if commit else repo_id
    try:
        return _load(_cached_file(snapshot), weights, device, at)
    except HubError:
        raise
    except FlowVAEError as e:  # the message names a blob of the cache; say which repository it is
        raise type(e)(f"{at}: {e}") from None


def from_pretrained(repo_id_or_dir: str | Path, revision: str | None = None, device: str | torch.device = "cpu", *,
                    cache_dir: str | Path | None = None, token: str | bool | None = None) -> GenerativeModel:
    """Load a model written by :func:`save_pretrained`, from a folder or a Hub model repository.

    A path to an existing folder is loaded from there; anything else must be a repository id
    ``USER/NAME``, whose ``config.yaml`` and ``model.safetensors`` (nothing else) are downloaded
    into the Hugging Face cache, or taken from it when ``HF_HUB_OFFLINE=1``. Online, their sizes
    are asked first: a config over 1 MiB, or a weight file larger than the model its config
    describes, is refused before it is downloaded.

    Both go through the checks of :func:`~flowvae.runs.load_run`: no symbolic links (in the cache,
    only the cache's own links to its blobs), a config that parses without unknown fields, an
    architecture within the size limit, weights with flowvae's metadata for the same kind, every
    tensor present with its shape. No code from the files is ever run (safetensors only, no pickle,
    no remote code).

    Args:
        repo_id_or_dir: a folder, or a Hub repository id ``USER/NAME``.
        revision: a branch, tag or commit of the repository [default: ``main``].
        device: where to put the model (``cpu``, ``cuda``, ``auto``).
        cache_dir: the Hugging Face cache [default: ``HF_HUB_CACHE``, ``~/.cache/huggingface/hub``].
        token: a Hub token for a private repository [default: the logged-in one, or ``HF_TOKEN``].

    Returns:
        The model in eval mode, with its config as ``model.config``.

    Raises:
        CheckpointError: a folder without ``config.yaml`` or ``model.safetensors`` (a pickled
            ``.bin`` is named and never opened), a symbolic link, weights that are not flowvae's for
            this kind, too large, or do not fit the architecture (the first mismatched tensors named).
        ConfigError: a config that does not parse or has an unknown field; a bad repository id or
            revision; a device that is not available.
        HubError: ``huggingface_hub`` missing (``pip install flowvae[hub]``), a repository, revision
            or file that does not exist, no network, or a file too large to be flowvae's.

    Example:
        >>> model = flowvae.from_pretrained("me/flowvae-digits")     # doctest: +SKIP
        >>> images = model.sample(16)                                # doctest: +SKIP
    """
    from .devices import resolve_device

    device = resolve_device(str(device))  # "cuda" without a GPU: one line, before any reading or download
    if isinstance(repo_id_or_dir, (str, os.PathLike)) and os.path.isdir(repo_id_or_dir):
        if revision is not None:
            raise ConfigError(f"revision={revision!r} applies to Hub repositories, not to the folder {repo_id_or_dir}")
        return _load_folder(Path(repo_id_or_dir), device)
    if isinstance(repo_id_or_dir, Path) or (isinstance(repo_id_or_dir, str) and not REPO_ID.match(repo_id_or_dir)):
        raise CheckpointError(f"{repo_id_or_dir} is neither a folder nor a Hub repository id USER/NAME; give the "
                              f"folder written by save_pretrained or flowvae export, or a repository id")
    return _load_hub(check_repo_id(repo_id_or_dir), _revision(revision), device, cache_dir, token)


# ----------------------------------------------------------------------------------------------
# uploading


def push_to_hub(model_or_run: GenerativeModel | str | Path, repo_id: str, *, private: bool | None = None,
                revision: str | None = None, token: str | bool | None = None, commit_message: str | None = None,
                license: str = "mit") -> dict[str, Any]:
    """Upload a model (or the model of a run folder) to the Hub model repository ``repo_id``.

    The files are those of :func:`save_pretrained` (card included, with ``repo_id`` in its loading
    example), written to a temporary folder and uploaded in one commit; no other file is uploaded
    and none in the repository is deleted. The repository is created if it does not exist
    (``private`` applies then only), and so is the branch ``revision``. ``config.yaml`` goes up
    without local paths (``data.root``, ``model.stage1_run``), the run's data record beside it.

    Args:
        model_or_run: a model, or a run folder (loaded with :func:`~flowvae.runs.load_run`, its
            metrics put on the card).
        repo_id: ``USER/NAME`` or ``ORGANISATION/NAME``.
        private: create the repository private [default: the Hub's default, public].
        revision: the branch to commit to, created from ``main`` if missing [default: ``main``].
        token: a Hub token with write access [default: the logged-in one, or ``HF_TOKEN``].
        commit_message: [default: ``Upload KIND model with flowvae VERSION``].
        license: the license id of the card [default: ``mit``].

    Returns:
        ``{"repo_id", "revision", "files", "commit_url"}``.

    Raises:
        HubError: ``huggingface_hub`` missing (``pip install flowvae[hub]``), not logged in or no
            write access, no network.
        CheckpointError, ConfigError: a run folder that cannot be loaded; a bad id or revision.

    Example:
        >>> flowvae.push_to_hub("runs/demo", "me/flowvae-digits", private=True)   # doctest: +SKIP
        {'repo_id': 'me/flowvae-digits', 'revision': 'main', 'files': ['config.yaml', ...], ...}
    """
    from .runs import load_run

    repo_id, revision, license = check_repo_id(repo_id), _revision(revision), check_license(license)
    hub = _hub()  # a missing package fails before any work
    if getattr(hub.constants, "HF_HUB_OFFLINE", False):
        raise HubError(f"cannot push to {repo_id} while HF_HUB_OFFLINE is set; unset it (flowvae export writes the "
                       f"same files to a folder without the network)")
    if isinstance(model_or_run, (str, os.PathLike)):
        model = load_run(model_or_run)
    elif isinstance(model_or_run, GenerativeModel):
        model = model_or_run
    else:
        raise ConfigError(f"push_to_hub needs a flowvae model or a run folder, got {type(model_or_run).__name__}")
    with tempfile.TemporaryDirectory(prefix="flowvae-push-") as tmp:
        names = [p.name for p in save_pretrained(model, Path(tmp) / "model", repo_id=repo_id, license=license)]
        api = hub.HfApi(token=token)
        try:
            api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
            if revision not in (None, "main"):
                api.create_branch(repo_id, repo_type="model", branch=revision, exist_ok=True)
            info = api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=str(Path(tmp) / "model"),
                                     allow_patterns=names, revision=revision,
                                     commit_message=commit_message or f"Upload {model.kind} model with flowvae {__version__}")
        except Exception as e:  # noqa: BLE001 - mapped to one line, or re-raised as it is
            raise _hub_error(e, repo_id, revision) from None
    return {"repo_id": repo_id, "revision": revision or "main", "files": names,
            "commit_url": str(getattr(info, "commit_url", info))}
