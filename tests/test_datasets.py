"""The built-in datasets, fetched through the real plugin registry (so through entry points)."""

from __future__ import annotations

import gzip
import itertools
import math
import struct
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from ganbench import DataRequest, UserError
from ganbench.registry import get_registry

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MNIST_DIR = SHARED_DATA / "mnist"
MNIST_TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # published


def dataset(name):
    return get_registry().get("dataset", name)


def request(tmp_path, data_dir=None, split="train", seed=0, **params):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir(exist_ok=True)
    return DataRequest(data_dir=None if data_dir is None else str(data_dir), cache_dir=str(cache_dir),
                       split=split, seed=seed, params=params)


@pytest.fixture
def no_network(monkeypatch):
    """Make every torchvision download fail at once, as it does offline."""
    def refuse(self):
        raise URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(torchvision.datasets.MNIST, "download", refuse)  # FashionMNIST inherits it
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", refuse)


def write_idx(path, array):
    """Write ``array`` (uint8) as an IDX file, gzipped when ``path`` ends in .gz."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    content = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(content) if path.suffix == ".gz" else content)


def test_the_six_builtin_datasets_come_from_the_ganbench_entry_point():
    registry = get_registry()
    for name in ("mnist", "fashion-mnist", "cifar10", "ring8", "grid25", "image-folder"):
        assert registry.entry("dataset", name).plugin.name == "ganbench:ganbench.datasets"


def test_mnist_test_split_has_the_published_images_and_label_counts(tmp_path):
    data = dataset("mnist").load(request(tmp_path, SHARED_DATA, split="test"))
    assert data.samples.shape == (10_000, 1, 28, 28)
    assert data.samples.dtype == torch.float32 and data.labels.dtype == torch.int64
    assert data.samples.min() == -1.0 and data.samples.max() == 1.0
    assert torch.bincount(data.labels, minlength=10).tolist() == MNIST_TEST_LABEL_COUNTS
    assert (data.split, data.note) == ("test", "")


def test_mnist_train_request_falls_back_to_the_test_split_with_a_note(tmp_path):
    data = dataset("mnist").load(request(tmp_path, SHARED_DATA, split="train"))
    assert data.split == "test"
    assert len(data.samples) == 10_000
    assert "only the test split" in data.note and "10,000 images" in data.note
    assert str(MNIST_DIR) in data.note


def test_mnist_is_found_when_data_dir_is_the_idx_folder_itself(tmp_path):
    data = dataset("mnist").load(request(tmp_path, MNIST_DIR, split="test"))
    assert len(data.samples) == 10_000


def test_mnist_pixels_match_torchvisions_reader_in_the_cache_layout(tmp_path):
    raw = tmp_path / "cache" / "MNIST" / "raw"  # where torchvision downloads to
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(gzip.decompress((MNIST_DIR / f"{name}.gz").read_bytes()))
    data = dataset("mnist").load(request(tmp_path, None, split="test"))
    expected_images = torchvision.datasets.mnist.read_image_file(str(raw / "t10k-images-idx3-ubyte"))
    expected_labels = torchvision.datasets.mnist.read_label_file(str(raw / "t10k-labels-idx1-ubyte"))
    assert torch.equal(((data.samples + 1) * 127.5).round().to(torch.uint8), expected_images.unsqueeze(1))
    assert torch.equal(data.labels, expected_labels)


def test_fashion_mnist_reads_idx_files_in_the_torchvision_layout(tmp_path):
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    images[1] = 255
    images[2, 3, 5] = 51  # 51 / 127.5 - 1 = -0.6
    labels = np.array([9, 0, 3, 3], dtype=np.uint8)
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    write_idx(raw / "t10k-images-idx3-ubyte.gz", images)
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", labels)
    data = dataset("fashion-mnist").load(request(tmp_path, tmp_path / "data", split="test"))
    assert data.samples.shape == (4, 1, 28, 28)
    assert torch.all(data.samples[0] == -1) and torch.all(data.samples[1] == 1)
    assert data.samples[2, 0, 3, 5].item() == pytest.approx(-0.6)
    assert data.labels.tolist() == [9, 0, 3, 3]


def test_mnist_files_are_not_taken_for_fashion_mnist(tmp_path):
    with pytest.raises(UserError, match="holds MNIST's test files, not Fashion-MNIST's"):
        dataset("fashion-mnist").load(request(tmp_path, MNIST_DIR, split="test"))


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10"])
def test_missing_data_without_network_is_a_one_line_error_naming_data_dir(tmp_path, no_network, name):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError) as caught:
        dataset(name).load(request(tmp_path, empty, split="train"))
    message = str(caught.value)
    assert "\n" not in message
    assert "--data-dir" in message and "GANBENCH_DATA_DIR" in message
    assert str(empty) in message and "could not be downloaded" in message


@pytest.mark.parametrize("name", ["mnist", "cifar10", "ring8", "grid25", "image-folder"])
def test_an_unknown_split_is_an_error_listing_the_valid_ones(tmp_path, name):
    with pytest.raises(UserError, match="valid splits: train, test"):
        dataset(name).load(request(tmp_path, SHARED_DATA, split="validation"))


def _truncated_plain(content):
    return "t10k-images-idx3-ubyte", content[: len(content) // 2]


def _truncated_gzip(content):
    compressed = gzip.compress(content, compresslevel=1)
    return "t10k-images-idx3-ubyte.gz", compressed[: len(compressed) // 2]


def _header_only(content):
    return "t10k-images-idx3-ubyte", content[:10]


def _not_idx(content):
    return "t10k-images-idx3-ubyte", b"<html>404 Not Found</html>"


@pytest.mark.parametrize("damage, words", [(_truncated_plain, "truncated"), (_truncated_gzip, "gzip"),
                                           (_header_only, "truncated"), (_not_idx, "not an IDX file")])
def test_a_damaged_idx_file_is_a_user_error_naming_it(tmp_path, damage, words):
    content = gzip.decompress((MNIST_DIR / "t10k-images-idx3-ubyte.gz").read_bytes())
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    name, damaged = damage(content)
    (folder / name).write_bytes(damaged)
    labels_name = "t10k-labels-idx1-ubyte.gz"
    (folder / labels_name).write_bytes((MNIST_DIR / labels_name).read_bytes())
    with pytest.raises(UserError, match=words) as caught:
        dataset("mnist").load(request(tmp_path, tmp_path / "data", split="test"))
    assert str(folder / name) in str(caught.value)


def test_idx_images_without_their_labels_file_is_a_user_error(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes((MNIST_DIR / "t10k-images-idx3-ubyte.gz").read_bytes())
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte"):
        dataset("mnist").load(request(tmp_path, tmp_path, split="test"))


def test_ring8_has_eight_distinct_means_on_the_unit_circle():
    modes = dataset("ring8").modes
    assert modes.dtype == torch.float64 and modes.shape == (8, 2)
    assert torch.allclose(modes.norm(dim=1), torch.ones(8, dtype=torch.float64), atol=1e-12)
    distances = torch.cdist(modes, modes) + torch.eye(8, dtype=torch.float64) * 10
    assert distances.min().item() == pytest.approx(2 * math.sin(math.pi / 8))  # neighbours 45 degrees apart
    angles = torch.atan2(modes[:, 1], modes[:, 0]).remainder(2 * math.pi).sort().values
    assert torch.allclose(angles, torch.arange(8, dtype=torch.float64) * math.pi / 4, atol=1e-12)


def test_grid25_means_are_exactly_the_lattice_points():
    modes = dataset("grid25").modes
    assert modes.dtype == torch.float64
    lattice = set(itertools.product([-4.0, -2.0, 0.0, 2.0, 4.0], repeat=2))
    assert sorted(map(tuple, modes.tolist())) == sorted(lattice)


@pytest.mark.parametrize("name, num_modes, std", [("ring8", 8, 0.01), ("grid25", 25, 0.05)])
def test_mixture_samples_have_the_stated_std_and_equally_weighted_modes(tmp_path, name, num_modes, std):
    mixture = dataset(name)
    assert mixture.std == std and mixture.data_shape({}) == (2,)
    data = mixture.load(request(tmp_path, split="train", seed=3, num_points=50_000))
    assert data.samples.shape == (50_000, 2) and data.samples.dtype == torch.float32
    samples = data.samples.double()
    nearest = torch.cdist(samples, mixture.modes).argmin(dim=1)
    assert torch.equal(nearest, data.labels)  # modes are far apart relative to std
    counts = torch.bincount(data.labels, minlength=num_modes)
    assert counts.min() > 0.85 * 50_000 / num_modes and counts.max() < 1.15 * 50_000 / num_modes
    for mode in range(num_modes):
        offsets = samples[data.labels == mode] - mixture.modes[mode]
        assert offsets.std(dim=0).tolist() == pytest.approx([std, std], rel=0.1)
        assert offsets.mean(dim=0).abs().max() < 4 * std / math.sqrt(len(offsets))


@pytest.mark.parametrize("name", ["ring8", "grid25"])
def test_mixture_samples_are_determined_by_seed_and_split(tmp_path, name):
    mixture = dataset(name)

    def load(seed, split="train"):
        return mixture.load(request(tmp_path, split=split, seed=seed, num_points=1000)).samples

    assert torch.equal(load(1), load(1))
    assert not torch.equal(load(1), load(2))
    assert not torch.equal(load(1), load(1, "test"))
    assert len(mixture.load(request(tmp_path, split="train")).samples) == mixture.defaults["num_points"]


def test_a_bad_num_points_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="num_points"):
        dataset("ring8").load(request(tmp_path, num_points=0))


def test_data_shape_does_not_need_the_data():
    assert dataset("mnist").data_shape({}) == (1, 28, 28)
    assert dataset("fashion-mnist").data_shape({}) == (1, 28, 28)
    assert dataset("cifar10").data_shape({}) == (3, 32, 32)
    folder = dataset("image-folder")
    assert folder.data_shape({}) == (3, 64, 64)
    params = {"image_folder": "/nowhere", "resolution": 32, "image_channels": 1}
    assert folder.data_shape(params) == (1, 32, 32)
    with pytest.raises(UserError, match="image_channels"):
        folder.data_shape({"image_channels": 2})


def _make_images(folder):
    (folder / "nested" / "deeper").mkdir(parents=True)
    Image.new("RGB", (40, 30), (255, 0, 0)).save(folder / "red.png")
    Image.new("L", (20, 50), 255).save(folder / "nested" / "white.PNG")
    Image.new("RGBA", (16, 16), (0, 0, 255, 128)).save(folder / "nested" / "deeper" / "blue.png")
    # a wide image whose middle half is white: only the middle survives a center crop
    striped = np.zeros((20, 40), dtype=np.uint8)
    striped[:, 8:32] = 255
    Image.fromarray(striped).save(folder / "striped.bmp")
    (folder / "notes.txt").write_text("not an image")
    (folder / "._red.png").write_bytes(b"macOS metadata, not an image")


def test_image_folder_resizes_crops_and_scales_every_image(tmp_path):
    _make_images(tmp_path / "images")
    params = {"image_folder": str(tmp_path / "images"), "resolution": 16, "image_channels": 3}
    data = dataset("image-folder").load(request(tmp_path, split="train", **params))
    assert data.samples.shape == (4, 3, 16, 16) and data.samples.dtype == torch.float32
    assert data.samples.min() >= -1 and data.samples.max() <= 1
    assert data.labels is None and data.split == "train"
    blue, white, red, striped = data.samples  # sorted by path: nested/deeper/, nested/, red, striped
    step = 1 / 127.5 + 1e-6
    assert torch.allclose(red[0], torch.ones(16, 16), atol=step)
    assert torch.allclose(red[1:], -torch.ones(2, 16, 16), atol=step)
    assert torch.allclose(white, torch.ones(3, 16, 16), atol=step)
    assert torch.allclose(blue[2], torch.ones(16, 16), atol=step)
    assert striped.mean() > 0.9  # the whole image's mean would be 0.2


def test_image_folder_can_load_grayscale_and_defaults_to_the_data_dir(tmp_path):
    _make_images(tmp_path / "images")
    data = dataset("image-folder").load(
        request(tmp_path, tmp_path / "images", split="test", resolution=8, image_channels=1))
    assert data.samples.shape == (4, 1, 8, 8)
    assert data.split == "train" and "no separate test split" in data.note


def test_an_empty_image_folder_is_an_error_naming_the_setting(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(UserError, match="contains no images.*--set image_folder=PATH"):
        dataset("image-folder").load(request(tmp_path, image_folder=str(tmp_path / "empty")))
    with pytest.raises(UserError, match="does not exist.*--set image_folder=PATH"):
        dataset("image-folder").load(request(tmp_path, image_folder=str(tmp_path / "missing")))
    with pytest.raises(UserError, match="--set image_folder=PATH"):
        dataset("image-folder").load(request(tmp_path))


def test_an_unreadable_image_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "broken.jpg").write_bytes(b"not really a jpeg")
    with pytest.raises(UserError, match="broken.jpg"):
        dataset("image-folder").load(request(tmp_path, image_folder=str(tmp_path / "images")))
