"""Built-in datasets: MNIST, Fashion-MNIST, CIFAR-10, the 2D mixtures ring8 and grid25, a
folder of the user's own images, and Stacked MNIST (in :mod:`stacked_mnist`).

Image datasets look for files on disk first (``--data-dir``, then ganbench's cache) and
only then download with torchvision, so an offline machine works as soon as the files are
in place. torch, torchvision and PIL are imported inside methods: ``ganbench plugins``
imports this module and should stay quick.
"""

from __future__ import annotations

import hashlib
import math
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from ganbench import DataRequest, Dataset, LoadedData, UserError, hookimpl
from ganbench.api import GaussianMixture

if TYPE_CHECKING:
    import torch

SPLITS = ("train", "test")
DOWNLOAD_TIMEOUT_SECONDS = 60.0
"""Socket timeout while torchvision downloads, so a dead connection fails instead of hanging."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
PUBLISHED_LABEL_COUNTS = {
    # MNIST and Fashion-MNIST use the same file names; their label counts tell them apart.
    "MNIST": {"train": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
              "test": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]},
    "Fashion-MNIST": {"train": [6000] * 10, "test": [1000] * 10},
}


@hookimpl
def register_datasets(register):
    register(MnistDataset())
    register(FashionMnistDataset())
    register(Cifar10Dataset())
    register(Ring8Dataset())
    register(Grid25Dataset())
    register(ImageFolderDataset())
    from .stacked_mnist import StackedMnistDataset  # here: that module builds on this one

    register(StackedMnistDataset())


def _check_split(name: str, split: str) -> None:
    if split not in SPLITS:
        raise UserError(f"dataset {name} has no split {split!r}; valid splits: {', '.join(SPLITS)}.")


def _other_split(split: str) -> str:
    return "test" if split == "train" else "train"


def _int_param(params: Mapping[str, Any], key: str, default: int, minimum: int = 1) -> int:
    value = params.get(key, default)
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_number or not math.isfinite(value) or value != int(value) or value < minimum:
        raise UserError(f"{key} must be a whole number of at least {minimum}, got {value!r}; "
                        f"set it with --set {key}={default}.")
    return int(value)


def _unit_range(images: "torch.Tensor") -> "torch.Tensor":
    """uint8 pixels in [0, 255] -> float32 in [-1, 1] (0 -> -1 and 255 -> 1 exactly)."""
    import torch

    return images.to(torch.float32).div_(127.5).sub_(1.0)


class TorchvisionDataset(Dataset):
    """An image dataset torchvision can download, also read from files the user already has.

    Subclasses say which folders to search (:meth:`candidate_folders`), whether a folder
    holds a split (:meth:`has_split`), how to read it (:meth:`read_split`) and how to
    download it (:meth:`download`).
    """

    title: ClassVar[str] = ""
    """The dataset's usual spelling, for messages (``MNIST``)."""
    expected_files: ClassVar[str] = ""
    """What the user should put where, for the message shown when nothing is found."""
    num_classes: ClassVar[int | None] = 10

    def candidate_folders(self, request: DataRequest) -> list[Path]:
        raise NotImplementedError

    def has_split(self, folder: Path, split: str) -> bool:
        raise NotImplementedError

    def read_split(self, folder: Path, split: str) -> tuple["torch.Tensor", "torch.Tensor"]:
        """Return ``(uint8 images [n, c, h, w], int64 labels [n])``."""
        raise NotImplementedError

    def download(self, cache_dir: Path, split: str) -> tuple["torch.Tensor", "torch.Tensor"]:
        """Download into ``cache_dir`` with torchvision; return what :meth:`read_split` returns."""
        raise NotImplementedError

    def load(self, request: DataRequest) -> LoadedData:
        _check_split(self.name, request.split)
        folders = self.candidate_folders(request)
        for split in (request.split, _other_split(request.split)):
            folder = next((f for f in folders if self.has_split(f, split)), None)
            if folder is None:
                continue
            images, labels = self.read_split(folder, split)
            note = ""
            if split != request.split:
                note = (f"only the {split} split of {self.name} is in {folder}; using it "
                        f"({len(images):,} images)")
            return LoadedData(_unit_range(images), labels, split, note)
        images, labels = self._download_or_explain(request)
        return LoadedData(_unit_range(images), labels, request.split)

    def _download_or_explain(self, request: DataRequest) -> tuple["torch.Tensor", "torch.Tensor"]:
        cache_dir = Path(request.cache_dir).expanduser()
        previous_timeout = socket.getdefaulttimeout()
        if previous_timeout is None:
            socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_SECONDS)
        try:
            return self.download(cache_dir, request.split)
        except Exception as error:  # no network, proxy, full disk...: all end the same way
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            reason = lines[-1][:160] if lines else type(error).__name__
            searched = (f"{request.data_dir} or the cache {cache_dir}" if request.data_dir
                        else f"the cache {cache_dir} (no --data-dir given)")
            raise UserError(f"{self.title} is not in {searched} and could not be downloaded "
                            f"(no network? {reason}); put {self.expected_files} and pass "
                            f"--data-dir DIR or set GANBENCH_DATA_DIR=DIR.") from error
        finally:
            socket.setdefaulttimeout(previous_timeout)


class IdxDataset(TorchvisionDataset):
    """MNIST-format data: IDX files, read here; torchvision only downloads them."""

    folder_name: ClassVar[str] = ""
    """Sub-folder of ``--data-dir`` holding the IDX files (``mnist``)."""
    torchvision_class: ClassVar[str] = ""
    """Name of the torchvision dataset class; it downloads into ``<cache>/<class>/raw``."""
    source: ClassVar[str] = "torchvision download, or IDX files in --data-dir"

    def data_shape(self, params: Mapping[str, Any]) -> tuple[int, ...]:
        return (1, 28, 28)

    def candidate_folders(self, request: DataRequest) -> list[Path]:
        layouts = (self.folder_name, f"{self.torchvision_class}/raw")
        folders = []
        if request.data_dir:
            data_dir = Path(request.data_dir).expanduser()
            folders += [data_dir / layout for layout in layouts] + [data_dir]
        cache_dir = Path(request.cache_dir).expanduser()
        return folders + [cache_dir / layout for layout in layouts]

    def has_split(self, folder: Path, split: str) -> bool:
        from ._idx import idx_file

        return bool(idx_file(folder, split, "images") or idx_file(folder, split, "labels"))

    def read_split(self, folder: Path, split: str) -> tuple["torch.Tensor", "torch.Tensor"]:
        import torch

        from ._idx import read_idx_split

        images, labels = read_idx_split(folder, split, (28, 28))
        labels = torch.from_numpy(labels)
        counts = torch.bincount(labels, minlength=10).tolist()
        for title, counts_by_split in PUBLISHED_LABEL_COUNTS.items():
            if title != self.title and counts == counts_by_split[split]:
                raise UserError(f"{folder} holds {title}'s {split} files, not {self.title}'s (the file names "
                                f"are the same, the label counts are {title}'s); put {self.expected_files} "
                                f"and pass --data-dir DIR.")
        return torch.from_numpy(images.copy()).unsqueeze(1), labels

    def download(self, cache_dir: Path, split: str) -> tuple["torch.Tensor", "torch.Tensor"]:
        import torch
        import torchvision

        dataset_class = getattr(torchvision.datasets, self.torchvision_class)
        dataset = dataset_class(root=str(cache_dir), train=split == "train", download=True)
        return dataset.data.unsqueeze(1), torch.as_tensor(dataset.targets, dtype=torch.int64)


class MnistDataset(IdxDataset):
    """MNIST (LeCun, Cortes and Burges): 70,000 handwritten digits, 28x28 grayscale."""

    name = "mnist"
    description = "MNIST handwritten digits, 1x28x28, 10 classes (60,000 train / 10,000 test)"
    title = "MNIST"
    recommended_steps = 2000  # 5x the 400 steps at which dcgan's digits are not yet recognisable: docs/mnist.md
    folder_name = "mnist"
    torchvision_class = "MNIST"
    expected_files = ("train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz (or the t10k-* test "
                      "files) in DIR/mnist/ or DIR/MNIST/raw/")


class FashionMnistDataset(IdxDataset):
    """Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017): 70,000 clothing images in MNIST's format."""

    name = "fashion-mnist"
    description = "Fashion-MNIST clothing images, 1x28x28, 10 classes (60,000 train / 10,000 test)"
    title = "Fashion-MNIST"
    folder_name = "fashion-mnist"
    torchvision_class = "FashionMNIST"
    expected_files = ("train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz (or the t10k-* test "
                      "files) in DIR/fashion-mnist/ or DIR/FashionMNIST/raw/")


class Cifar10Dataset(TorchvisionDataset):
    """CIFAR-10 (Krizhevsky, 2009): 60,000 32x32 colour images, read and downloaded by torchvision.

    torchvision verifies the checksum of every batch file, so the extracted
    ``cifar-10-batches-py`` folder must be complete (both splits) to be read.
    """

    name = "cifar10"
    description = "CIFAR-10 natural images, 3x32x32, 10 classes (50,000 train / 10,000 test)"
    source = "torchvision download, or cifar-10-batches-py in --data-dir"
    title = "CIFAR-10"
    expected_files = "the extracted cifar-10-batches-py/ folder (from cifar-10-python.tar.gz) in DIR/"
    batch_folder = "cifar-10-batches-py"
    split_files = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}

    def data_shape(self, params: Mapping[str, Any]) -> tuple[int, ...]:
        return (3, 32, 32)

    def candidate_folders(self, request: DataRequest) -> list[Path]:
        layouts = (self.batch_folder, f"cifar10/{self.batch_folder}")
        folders = []
        if request.data_dir:
            data_dir = Path(request.data_dir).expanduser()
            folders += [data_dir / layout for layout in layouts]
            if data_dir.name == self.batch_folder:
                folders.append(data_dir)
        cache_dir = Path(request.cache_dir).expanduser()
        return folders + [cache_dir / layout for layout in layouts]

    def has_split(self, folder: Path, split: str) -> bool:
        return all((folder / name).is_file() for name in self.split_files[split])

    def read_split(self, folder: Path, split: str) -> tuple["torch.Tensor", "torch.Tensor"]:
        import torchvision

        try:
            dataset = torchvision.datasets.CIFAR10(root=str(folder.parent), train=split == "train",
                                                   download=False)
        except RuntimeError:
            raise UserError(f"{folder} is incomplete or corrupted (torchvision checks every batch file "
                            f"of both splits); extract cifar-10-python.tar.gz there again.") from None
        return self._tensors(dataset)

    def download(self, cache_dir: Path, split: str) -> tuple["torch.Tensor", "torch.Tensor"]:
        import torchvision

        dataset = torchvision.datasets.CIFAR10(root=str(cache_dir), train=split == "train", download=True)
        return self._tensors(dataset)

    @staticmethod
    def _tensors(dataset: Any) -> tuple["torch.Tensor", "torch.Tensor"]:
        import torch

        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()  # HWC -> CHW
        return images, torch.as_tensor(dataset.targets, dtype=torch.int64)


class GaussianMixtureDataset(Dataset):
    """Points from an equal-weight mixture of isotropic 2D Gaussians, sampled in memory.

    ``modes`` and ``std`` describe the mixture exactly; the mode-coverage metric reads them.
    Labels are the index of the mode each point was drawn from.
    """

    source = "synthetic (sampled in memory)"
    defaults: ClassVar[Mapping[str, Any]] = {"num_points": 100_000}
    recommended_steps = 6000
    """The quickstart's length: its mlp (width 128, Adam 2e-3 falling linearly to 0, batch 256)
    puts 91-94% of ring8's samples on the modes with ns, lsgan and hinge by then
    (results/quickstart). grid25 needs far longer (8-48% at 4,000 steps); give it --steps."""
    std: ClassVar[float] = 0.0
    """Standard deviation of every mixture component, in each coordinate."""

    def mode_coordinates(self) -> list[tuple[float, float]]:
        raise NotImplementedError

    def mixture(self, params: Mapping[str, Any]) -> GaussianMixture:
        return GaussianMixture(tuple(self.mode_coordinates()), self.std)

    @property
    def modes(self) -> "torch.Tensor":
        """The component means, float64 ``[n_modes, 2]``; row ``i`` is the mode of label ``i``."""
        import torch

        return torch.tensor(self.mode_coordinates(), dtype=torch.float64)

    def data_shape(self, params: Mapping[str, Any]) -> tuple[int, ...]:
        return (2,)

    def load(self, request: DataRequest) -> LoadedData:
        import torch

        _check_split(self.name, request.split)
        num_points = _int_param(request.params, "num_points", self.defaults["num_points"])
        generator = torch.Generator().manual_seed(_split_seed(request.seed, request.split))
        modes = self.modes
        labels = torch.randint(len(modes), (num_points,), generator=generator)
        noise = torch.randn(num_points, 2, generator=generator, dtype=torch.float64)
        samples = (modes[labels] + self.std * noise).to(torch.float32)
        return LoadedData(samples, labels, request.split)


def _split_seed(seed: int, split: str) -> int:
    # Hashing (rather than seed + offset) keeps the test split of one seed from being the
    # train split of another.
    digest = hashlib.sha256(f"{split}:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


class Ring8Dataset(GaussianMixtureDataset):
    """Eight Gaussians with means on the unit circle, std 0.01.

    The 2D-ring benchmark of VEEGAN (Srivastava et al., NeurIPS 2017) with the parameters of
    PacGAN (Lin et al., NeurIPS 2018): means ``(cos(2*pi*k/8), sin(2*pi*k/8))``, k = 0..7,
    variance 1e-4 per coordinate.
    """

    name = "ring8"
    description = "8 Gaussians on the unit circle, std 0.01 (2D mode-collapse benchmark, VEEGAN/PacGAN)"
    num_classes = 8
    std = 0.01

    def mode_coordinates(self) -> list[tuple[float, float]]:
        # Angles 2*pi*k/8 for k = 0..7. The widely copied np.linspace(0, 2*pi, 8) includes
        # both endpoints, so its first and last means coincide and the ring has 7 modes.
        return [(math.cos(2 * math.pi * k / 8), math.sin(2 * math.pi * k / 8)) for k in range(8)]


class Grid25Dataset(GaussianMixtureDataset):
    """Twenty-five Gaussians with means on the lattice {-4, -2, 0, 2, 4}^2, std 0.05.

    The 2D-grid benchmark of VEEGAN (Srivastava et al., NeurIPS 2017) with the parameters of
    PacGAN (Lin et al., NeurIPS 2018): variance 0.0025 per coordinate. Label ``5*i + j`` is
    the mode ``(-4 + 2i, -4 + 2j)``.
    """

    name = "grid25"
    description = "25 Gaussians on a 5x5 grid, spacing 2, std 0.05 (2D mode-collapse test, VEEGAN/PacGAN)"
    num_classes = 25
    std = 0.05

    def mode_coordinates(self) -> list[tuple[float, float]]:
        axis = (-4.0, -2.0, 0.0, 2.0, 4.0)
        return [(x, y) for x in axis for y in axis]


class ImageFolderDataset(Dataset):
    """The user's own images: every png/jpg/jpeg/bmp/webp file under a folder, recursively.

    Each image is resized so its shorter side is ``resolution`` (Lanczos), center-cropped
    to a square and converted to ``image_channels`` (3 = RGB, 1 = grayscale). All images
    are held in memory as float32, about ``4 * channels * resolution**2`` bytes each.
    """

    name = "image-folder"
    description = "your own images (png, jpg, bmp, webp; searched recursively), resized and center-cropped"
    source = "your own image folder"
    defaults: ClassVar[Mapping[str, Any]] = {"image_folder": "", "resolution": 64, "image_channels": 3}

    def data_shape(self, params: Mapping[str, Any]) -> tuple[int, ...]:
        resolution = _int_param(params, "resolution", self.defaults["resolution"])
        return (self._channels(params), resolution, resolution)

    def _channels(self, params: Mapping[str, Any]) -> int:
        channels = params.get("image_channels", self.defaults["image_channels"])
        if channels not in (1, 3) or isinstance(channels, bool):
            raise UserError(f"image_channels must be 1 (grayscale) or 3 (RGB), got {channels!r}; "
                            f"set it with --set image_channels=3.")
        return int(channels)

    def load(self, request: DataRequest) -> LoadedData:
        import torch

        _check_split(self.name, request.split)
        channels, resolution, _ = self.data_shape(request.params)
        folder, note = self._folder(request)
        paths = sorted(path for path in folder.rglob("*")
                       if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
                       # skip hidden files, such as macOS's "._photo.jpg" metadata files
                       and not any(part.startswith(".") for part in path.relative_to(folder).parts))
        if not paths:
            raise UserError(f"{folder} contains no images ({', '.join(IMAGE_SUFFIXES)}, searched "
                            f"recursively); pass a folder of images with --set image_folder=PATH.")
        images = torch.empty(len(paths), channels, resolution, resolution, dtype=torch.uint8)
        for index, path in enumerate(paths):
            images[index] = _read_image(path, folder, channels, resolution)
        if request.split == "test":
            note = (f"an image folder has no separate test split; using all {len(paths):,} images "
                    f"of {folder}")
        return LoadedData(_unit_range(images), None, "train", note)

    def _folder(self, request: DataRequest) -> tuple[Path, str]:
        """Return the folder to read and a note when it came from ``--data-dir``."""
        setting = str(request.params.get("image_folder", "") or "")
        note = ""
        if setting:
            folder = Path(setting).expanduser()
        elif request.data_dir:
            folder = Path(request.data_dir).expanduser()
            note = f"image_folder is not set; reading images from --data-dir {folder}"
        else:
            raise UserError("dataset image-folder needs a folder of images; "
                            "pass it with --set image_folder=PATH.")
        if not folder.is_dir():
            raise UserError(f"image folder {folder} does not exist or is not a folder; "
                            f"pass a folder of images with --set image_folder=PATH.")
        return folder, note


def _read_image(path: Path, folder: Path, channels: int, resolution: int) -> "torch.Tensor":
    """One image as uint8 ``[channels, resolution, resolution]``."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB" if channels == 3 else "L")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise UserError(f"could not read {path} as an image ({error}); fix it or remove it "
                        f"from {folder}.") from None
    image = TF.resize(image, resolution, interpolation=InterpolationMode.LANCZOS)
    image = TF.center_crop(image, [resolution, resolution])
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8))
    return pixels.unsqueeze(0) if channels == 1 else pixels.permute(2, 0, 1)
