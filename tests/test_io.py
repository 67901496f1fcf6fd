"""Image readers and the per-family preprocessing path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from skimage import data

from grok.data.io import ImageReadError, read_cfp, read_oct
from grok.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transform


def _slice(value: int, shape: tuple[int, int] = (20, 30)) -> np.ndarray:
    return np.full(shape, value, dtype=np.uint8)


def test_oct_folder_of_slices_picks_central_by_natural_order(tmp_path: Path) -> None:
    folder = tmp_path / "volume"
    folder.mkdir()
    for index in range(11):  # natural order: slice_2 before slice_10
        Image.fromarray(_slice(index * 10)).save(folder / f"slice_{index}.png")
    assert np.asarray(read_oct(folder)).max() == 50
    chosen = read_oct(folder, slices=[0, 10, -1])
    assert [int(np.asarray(image).max()) for image in chosen] == [0, 100, 100]
    with pytest.raises(ImageReadError, match="slice 11 out of range"):
        read_oct(folder, slices=[11])


def test_oct_multipage_tiff_16bit(tmp_path: Path) -> None:
    volume = np.stack([np.linspace(0, 1000 * (k + 1), 600, dtype=np.uint16).reshape(20, 30) for k in range(5)])
    path = tmp_path / "volume.tif"
    tifffile.imwrite(path, volume)
    central = read_oct(path)
    assert central.mode == "L" and central.size == (30, 20)
    assert np.asarray(central).max() == 255  # rescaled from 16 bit
    assert len(read_oct(path, slices=[1, 3])) == 2


def test_corrupt_and_missing_images_name_the_file(tmp_path: Path) -> None:
    corrupt = tmp_path / "scan.png"
    corrupt.write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match=r"scan.png: corrupt or unsupported"):
        read_oct(corrupt)
    with pytest.raises(ImageReadError, match=r"missing.jpg: file does not exist"):
        read_cfp(tmp_path / "missing.jpg")
    with pytest.raises(ImageReadError, match=r"unsupported OCT format '.dcm'"):
        read_oct(tmp_path / "scan.dcm")


def test_retfound_transform_on_the_real_fundus_photograph(tmp_path: Path) -> None:
    path = tmp_path / "retina.jpg"
    Image.fromarray(data.retina()).save(path)
    image = read_cfp(path)
    tensor = build_transform("retfound", "cfp", image_size=224)(image)
    assert tensor.shape == (3, 224, 224) and tensor.dtype == torch.float32
    # ImageNet normalisation: a black pixel maps to -mean/std per channel.
    black = build_transform("retfound", "cfp", 32)(Image.new("RGB", (64, 64)))
    expected = -torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(black[:, 0, 0], expected, atol=1e-5)


def test_grey_oct_becomes_three_identical_channels_and_train_mode_augments(tmp_path: Path) -> None:
    image = Image.fromarray((np.random.default_rng(0).random((64, 80)) * 255).astype(np.uint8))
    tensor = build_transform("tiny", "oct", image_size=48)(image)
    assert tensor.shape == (3, 48, 48)
    assert torch.equal(tensor[0], tensor[1]) and torch.equal(tensor[1], tensor[2])
    torch.manual_seed(0)
    augmented = build_transform("tiny", "oct", image_size=48, train=True)(image)
    assert not torch.equal(augmented, tensor)
    with pytest.raises(ValueError, match="unknown transform family 'vgg'"):
        build_transform("vgg", "oct")
