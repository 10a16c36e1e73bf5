"""Training from any dataset: streamed through DataLoader workers, the same batches and the same
weights as from memory, resumable bitwise; torchvision-style datasets as they are."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from flowvae import load_run
from flowvae.data import load_dataset
from flowvae.data.augment import augment_batch
from flowvae.data.streaming import GroupedOrder, ShuffledOrder, collate_images, to_uint8_chw
from flowvae.errors import ConfigError, DataError
from flowvae.training import train
from helpers.small import assert_same_weights, full_and_resumed, metrics_rows
from helpers.small import resume_config as _cfg

pytestmark = pytest.mark.usefixtures("single_thread")


class PILDigits(torch.utils.data.Dataset):
    """A torchvision-style dataset: ``(PIL image, int label)`` items and a ``targets`` list."""

    def __init__(self, split: str):
        d = load_dataset("digits", split)
        self.images, self.targets = d.images, d.labels.tolist()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return Image.fromarray(self.images[i, 0].numpy(), mode="L"), self.targets[i]


SETS = ("train.steps=12", "train.eval_every=6", "train.checkpoint_every=1000")


def test_a_streamed_torchvision_style_dataset_trains_like_the_in_memory_data(tmp_path):
    memory = tmp_path / "memory"
    train(_cfg(*SETS, "data.test_limit=null"), memory, progress=False)  # the whole test split, as the dataset
    streamed = tmp_path / "streamed"
    train(_cfg(*SETS, "data.test_limit=null", "data.in_memory=false", "data.num_workers=2"), streamed, progress=False,
          train_data=PILDigits("train"), test_data=PILDigits("test"))
    assert_same_weights(memory, streamed)  # the same batches in the same order, read by worker processes
    assert metrics_rows(memory) == metrics_rows(streamed)


def test_a_streamed_run_resumes_bitwise(tmp_path, monkeypatch):
    sets = (*SETS, "data.in_memory=false", "data.num_workers=1")
    full, cut = full_and_resumed(_cfg(*sets), tmp_path, monkeypatch, 7)
    assert_same_weights(full, cut)
    assert metrics_rows(full) == metrics_rows(cut)


def test_class_grouped_batches_from_a_dataset_s_targets(tmp_path):
    sets = ("model.kind=ugvae", "model.d_local=3", "model.d_global=2", "model.n_components=3", "model.hidden=[16]",
            "model.encoder=mlp", "model.decoder=mlp", "model.group_by=label", "model.groups_per_batch=4",
            "train.steps=4", "train.eval_every=4", "data.in_memory=false", "data.num_workers=0")
    last = train(_cfg(*sets), tmp_path / "ugvae", progress=False, train_data=PILDigits("train"),
                 test_data=PILDigits("test"))
    assert last["step"] == 4
    load_run(tmp_path / "ugvae")


def test_datasets_that_do_not_fit_are_refused_in_one_line(tmp_path):
    class Floats(PILDigits):
        def __getitem__(self, i):
            return self.images[i].float() / 255, 0

    with pytest.raises(DataError, match="drop a ToTensor"):
        train(_cfg("train.steps=1"), tmp_path / "f", progress=False, train_data=Floats("train"), test_data=Floats("test"))
    with pytest.raises(ConfigError, match="both train_data and test_data"):
        train(_cfg("train.steps=1"), tmp_path / "g", progress=False, train_data=PILDigits("train"))
    with pytest.raises(DataError, match="model expects 1x16x16"):
        train(_cfg("train.steps=1", "model.image_size=16"), tmp_path / "h", progress=False,
              train_data=PILDigits("train"), test_data=PILDigits("test"))
    assert not (tmp_path / "f").exists()  # a failed start leaves no folder behind


def test_items_in_every_accepted_form():
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    rgb = np.stack([grey, grey + 1, grey + 2], -1)
    want_grey, want_rgb = torch.from_numpy(grey)[None], torch.from_numpy(rgb).permute(2, 0, 1)
    assert torch.equal(to_uint8_chw(grey), want_grey)
    assert torch.equal(to_uint8_chw((rgb, 3)), want_rgb)
    assert torch.equal(to_uint8_chw(Image.fromarray(rgb)), want_rgb)
    assert torch.equal(to_uint8_chw(Image.fromarray(rgb).convert("RGBA")), want_rgb)
    assert torch.equal(to_uint8_chw(want_rgb), want_rgb)
    with pytest.raises(DataError, match="different shapes"):
        collate_images([grey, rgb])
    with pytest.raises(DataError, match="got str"):
        to_uint8_chw("image.png")


def test_augmenting_rows_of_a_batch_equals_those_rows_of_the_augmented_batch():
    x = torch.randint(0, 256, (8, 3, 6, 6), dtype=torch.uint8)
    whole = augment_batch(x, True, 2, torch.Generator().manual_seed(5))
    parts = [augment_batch(x[lo:lo + 4], True, 2, torch.Generator().manual_seed(5), rows=(lo, lo + 4, 8))
             for lo in (0, 4)]
    assert torch.equal(torch.cat(parts), whole)


def test_orders_resume_and_copy_exactly():
    o = ShuffledOrder(50, 16, seed=3)
    for _ in range(4):  # crosses an epoch (3 batches of 16 per epoch)
        o.next()
    c = o.copy()
    r = ShuffledOrder(50, 16, seed=3)
    r.load_state_dict(o.state_dict())
    a, b, d = o.next()[0], c.next()[0], r.next()[0]
    assert torch.equal(a, b) and torch.equal(a, d)
    labels = torch.arange(40) % 5
    g = GroupedOrder(labels, 8, 4, seed=1)
    g.next()
    idx, groups = g.copy().next()
    assert torch.equal(idx, g.next()[0]) and groups.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert all(len(set(labels[idx[groups == k]].tolist())) == 1 for k in range(4))  # one class per group


def test_image_files_read_lazily_equal_the_folder_loaded_into_memory(tmp_path):
    import zipfile

    from flowvae.data import shared_data_dir
    from flowvae.data.images import folder_labels, list_image_files
    from flowvae.data.streaming import ImageFiles, StreamingSource

    archive = shared_data_dir() / "cifar10-jpeg" / "cifar10-jpeg-images.zip"
    if not archive.is_file():
        pytest.skip(f"{archive} not found (the shared data folder is absent)")
    with zipfile.ZipFile(archive) as z:
        names = sorted(n for n in z.namelist() if n.endswith(".jpg"))[::500]  # train/CLASS/N.jpg, test/...
        for n in names:
            out = tmp_path / "jpegs" / n
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(z.read(n))
    memory = load_dataset("folder", "train", root=tmp_path / "jpegs")
    root = tmp_path / "jpegs" / "train"
    files = list_image_files(root)
    labels, classes = folder_labels(files, root)
    lazy = ImageFiles.from_folder(root, 3, None)
    assert [lazy.path(i) for i in range(len(lazy))] == files  # the in-memory loader's order
    assert torch.equal(lazy.labels, torch.from_numpy(labels)) and lazy.classes == classes == memory.classes
    assert len(lazy) == len(memory)
    order = ShuffledOrder(len(lazy), 16, seed=0)
    source = StreamingSource(lazy, num_workers=1)
    source.start(order, 4, 12)  # the rows a second of two ranks would read
    for _ in range(5):
        idx, _ = order.next()
        assert torch.equal(source.fetch(idx[4:12]), memory.images[idx[4:12]])
    source.close()
    assert lazy[3][1] == int(memory.labels[3])


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory):
    """120 real CIFAR-10 JPEGs in train/CLASS/ and test/CLASS/ folders, and the same as a zip."""
    import zipfile

    from flowvae.data import shared_data_dir

    archive = shared_data_dir() / "cifar10-jpeg" / "cifar10-jpeg-images.zip"
    if not archive.is_file():
        pytest.skip(f"{archive} not found (the shared data folder is absent)")
    root = tmp_path_factory.mktemp("jpegs")
    with zipfile.ZipFile(archive) as z, zipfile.ZipFile(root / "images.zip", "w") as out:
        for n in sorted(n for n in z.namelist() if n.endswith(".jpg"))[::500]:
            (root / "folder" / n).parent.mkdir(parents=True, exist_ok=True)
            (root / "folder" / n).write_bytes(z.read(n))
            out.writestr(n, z.read(n))
    return root


@pytest.mark.parametrize("where", ["folder", "images.zip"])
def test_a_folder_or_zip_streamed_from_disk_trains_like_it_loaded_into_memory(jpeg_folder, where, tmp_path, caplog):
    import logging

    from flowvae.config import apply_overrides
    from flowvae.presets import get_preset

    def cfg(*extra):
        return apply_overrides(get_preset("digits"), [
            "data.dataset=folder", f"data.root={jpeg_folder / where}", "model.in_channels=3", "model.image_size=32",
            "model.steps=[0,[1,1],1]", "model.hidden=[4,8,8]", "model.encoder_widths=[8]", "model.d_z=4",
            "model.prior_steps=1", "model.prior_hidden=8", "train.batch_size=8", "train.init_batch_size=16",
            "train.steps=4", "train.eval_every=4", "train.eval_images=8", "train.sample_temperatures=[1.0]", *extra])

    train(cfg(), tmp_path / "memory", progress=False)
    caplog.set_level(logging.INFO, logger="flowvae")
    train(cfg("data.in_memory=false", "data.num_workers=1"), tmp_path / "disk", progress=False)
    assert "read from disk as training needs them" in caplog.text
    assert "streamed by 1 DataLoader workers" in caplog.text
    assert_same_weights(tmp_path / "memory", tmp_path / "disk")


@pytest.mark.parametrize("compressed", [False, True])
def test_imagenet64_memory_mapped_equals_loaded(tmp_path, monkeypatch, compressed):
    """npz batches in the official layout (``data`` uint8 [n, 12288] R,G,B planes; ``labels`` 1..1000):
    mapped in place when stored, through a one-time raw cache when compressed."""
    from flowvae.data.sources.imagenet64 import load_imagenet64, open_imagenet64
    from flowvae.data.streaming import MappedRows

    monkeypatch.setenv("FLOWVAE_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    save = np.savez_compressed if compressed else np.savez
    for k in (1, 2):
        save(tmp_path / f"train_data_batch_{k}.npz", data=rng.integers(0, 256, (10, 12288), dtype=np.uint8),
             labels=np.arange(10) % 4 + 1)
    memory = load_imagenet64(tmp_path, "train", limit=12)
    mapped = open_imagenet64(tmp_path, "train", limit=12)
    assert isinstance(mapped, MappedRows) and len(mapped) == len(memory) == 12
    for i in range(12):
        x, y = mapped[i]
        assert torch.equal(x, memory.images[i]) and y == int(memory.labels[i])
    if compressed:
        assert len(list((tmp_path / "cache").rglob("*.u8"))) == 2
        open_imagenet64(tmp_path, "train")  # the cache is reused, not rewritten
        assert len(list((tmp_path / "cache").rglob("*.u8"))) == 2


def test_lsun_lmdb_read_on_access_equals_loaded(tmp_path):
    """An lmdb in the LSUN layout (keys: ids, values: encoded images of any size)."""
    import io

    lmdb = pytest.importorskip("lmdb")
    from flowvae.data.sources.lsun import LmdbImages, load_lsun, open_lsun

    env = lmdb.open(str(tmp_path / "bedroom_train_lmdb"), map_size=1 << 24)
    rng = np.random.default_rng(1)
    with env.begin(write=True) as txn:
        for k in range(9):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (10 + k, 12, 3), dtype=np.uint8)).save(buf, "WEBP", quality=90)
            txn.put(f"{k:04x}".encode(), buf.getvalue())
    env.close()
    memory = load_lsun(tmp_path, "train", size=8, limit=5)
    lazy = open_lsun(tmp_path, "train", size=8, limit=5)
    assert isinstance(lazy, LmdbImages) and len(lazy) == 5 and lazy.name == memory.name
    assert torch.equal(collate_images([lazy[i] for i in range(5)]), memory.images)


@pytest.mark.parametrize("layout", ["one array", "one file per image"])
def test_celebahq_npy_read_on_access_equals_loaded(tmp_path, layout):
    from flowvae.data.sources.celebahq import NpyImages, load_celebahq, open_celebahq

    faces = np.random.default_rng(2).integers(0, 256, (12, 3, 10, 10), dtype=np.uint8)
    if layout == "one array":
        np.save(tmp_path / "faces.npy", faces)
    else:
        for i, face in enumerate(faces):
            np.save(tmp_path / f"imgHQ{i:05d}.npy", face.transpose(1, 2, 0))  # HWC, as the deltas tool writes
    for split, size in (("train", 8), ("test", None)):
        memory = load_celebahq(tmp_path, split, size=size, limit=6)
        lazy = open_celebahq(tmp_path, split, size=size, limit=6)
        assert isinstance(lazy, NpyImages) and len(lazy) == len(memory)
        assert torch.equal(collate_images([lazy[i] for i in range(len(lazy))]), memory.images)


def test_an_unreadable_file_met_by_a_worker_is_one_clear_line(tmp_path):
    from flowvae.data.streaming import ImageFiles, StreamingSource

    for i in range(4):
        Image.fromarray(np.full((4, 4), i * 40, np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "2.png").write_bytes(b"not a png")
    files = ImageFiles.from_folder(tmp_path, 1, None)
    order = ShuffledOrder(4, 4, seed=0)
    source = StreamingSource(files, num_workers=1)
    source.start(order, 0, 4)
    with pytest.raises(DataError) as e:
        source.fetch(order.next()[0])
    source.close()
    assert str(e.value).startswith("cannot decode ") and "2.png" in str(e.value) and "\n" not in str(e.value)
