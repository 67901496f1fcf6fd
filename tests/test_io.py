"""Image readers (single B-scans, OCT volumes and their slice selection, fundus photographs) and the per-family
preprocessing path."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from omegaconf import OmegaConf
from PIL import Image
from skimage import data

from grok.data.io import (
    ImageReadError,
    SliceSelectionError,
    check_slice_spec,
    read_cfp,
    read_oct,
    read_oct_volume,
    select_slices,
)
from grok.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transform, transform_slices


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


def test_the_slices_of_one_volume_share_one_random_augmentation() -> None:
    scan = Image.fromarray((np.random.default_rng(1).random((64, 80)) * 255).astype(np.uint8))
    augment = build_transform("tiny", "oct", image_size=48, train=True)
    torch.manual_seed(0)
    apart = torch.stack([augment(scan) for _ in range(3)])
    assert not torch.equal(apart[0], apart[1])  # each call draws its own shift and contrast
    torch.manual_seed(0)
    together = transform_slices(augment, [scan] * 3)
    assert (
        together.shape == (3, 3, 48, 48)
        and torch.equal(together[0], together[1])
        and torch.equal(together[1], together[2])
    )
    assert not torch.equal(transform_slices(augment, [scan] * 2)[0], together[0])  # the next volume draws anew


# ------------------------------------------------------------------ volumes: read a stack, select slices by config


def _slice_folder(root: Path, count: int = 9) -> Path:
    folder = root / "volume"
    folder.mkdir()
    for index in range(count):  # natural order: slice_2 before slice_10
        Image.fromarray(_slice(index * 10)).save(folder / f"slice_{index}.png")
    return folder


def test_select_slices_central_k_evenly_spaced_and_lists() -> None:
    assert select_slices(25, "central") == [12] and select_slices(128, "central") == [64]
    assert select_slices(25, 7) == [0, 4, 8, 12, 16, 20, 24] and select_slices(25, 1) == [12]
    assert 64 in select_slices(128, 7) and select_slices(5, "all") == [0, 1, 2, 3, 4]
    assert select_slices(25, [12, -1, 0]) == [12, 24, 0]
    assert select_slices(25, OmegaConf.create({"s": [3, 5]}).s) == [3, 5]  # a list as Hydra gives it
    bad = [
        (30, r"data\.oct_slices=30 asks for 30 evenly spaced slices but the volume holds 25"),
        ([25], r"slice\(s\) \[25\] out of range for a volume of 25 slices \(0\.\.24\)"),
        ([3, -22], r"names slice\(s\) \[3\] more than once"),
        (0, r"at least 1"),
        ([], "an empty list"),
        (True, "expected 'central'"),
        (2.5, "expected 'central'"),
        ("middle", r"data\.oct_slices='middle'"),
        ([1, "2"], "non-integer entries"),
    ]
    for spec, match in bad:
        with pytest.raises(SliceSelectionError, match=match):
            select_slices(25, spec, path="scan.tif")
    with pytest.raises(SliceSelectionError, match=r"OCT volume scan.tif: data\.oct_slices=30"):
        select_slices(25, 30, path="scan.tif")
    with pytest.raises(SliceSelectionError, match="holds no slices"):
        select_slices(0, "central", path="scan.tif")
    assert check_slice_spec([1, 2]) == (1, 2) and check_slice_spec(np.int64(3)) == 3


def test_read_volume_from_a_slice_folder(tmp_path: Path) -> None:
    folder = _slice_folder(tmp_path, 11)
    stack = read_oct_volume(folder)
    assert stack.shape == (11, 20, 30) and stack.dtype == np.uint8
    assert [int(s.max()) for s in stack] == [10 * k for k in range(11)]  # natural order
    assert [int(s.max()) for s in read_oct_volume(folder, slices=3)] == [0, 50, 100]
    assert read_oct_volume(folder, "central")[:, 0, 0].tolist() == [50]
    with pytest.raises(SliceSelectionError, match=rf"{folder.name}: data\.oct_slices=\[11\]: slice\(s\) \[11\] out of"):
        read_oct_volume(folder, slices=[11])
    with pytest.raises(SliceSelectionError, match=r"encoder\.oct_slices=12 asks for 12"):
        read_oct_volume(folder, slices=12, key="encoder.oct_slices")
    (folder / "slice_5.png").write_bytes(b"not a png")  # unreadable slice: named, even if another was asked for
    with pytest.raises(ImageReadError, match=r"slice_5.png: corrupt or unsupported"):
        read_oct_volume(folder)
    assert read_oct_volume(folder, slices=[0, 10]).shape == (2, 20, 30)  # only the chosen slices are decoded
    Image.fromarray(_slice(7, (21, 30))).save(folder / "slice_5.png")
    with pytest.raises(ImageReadError, match="slice 5 is 30x21 px but slice 0 is 30x20"):
        read_oct_volume(folder)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")
def test_read_volume_errors_empty_missing_unreadable(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no slices here")
    with pytest.raises(ImageReadError, match=r"empty: the folder holds no slice images"):
        read_oct_volume(empty, slices="central")
    with pytest.raises(ImageReadError, match=r"gone: no such file or folder"):
        read_oct_volume(tmp_path / "gone")
    with pytest.raises(ImageReadError, match=r"gone.tif: file does not exist"):
        read_oct_volume(tmp_path / "gone.tif")
    truncated = tmp_path / "truncated.tif"
    tifffile.imwrite(tmp_path / "whole.tif", np.zeros((3, 20, 30), dtype=np.uint8))
    truncated.write_bytes((tmp_path / "whole.tif").read_bytes()[:40])
    with pytest.raises(ImageReadError, match=r"truncated.tif"):
        read_oct_volume(truncated)


def test_read_volume_from_a_multipage_tiff(tmp_path: Path) -> None:
    pages = np.stack([np.linspace(0, 1000 * (k + 1), 600, dtype=np.uint16).reshape(20, 30) for k in range(5)])
    path = tmp_path / "volume.tif"
    tifffile.imwrite(path, pages)
    stack = read_oct_volume(path)
    assert stack.shape == (5, 20, 30) and stack.dtype == np.uint8 and stack.max() == 255  # 16 bit rescaled
    assert np.array_equal(read_oct_volume(path, slices=3), stack[[0, 2, 4]])
    assert np.array_equal(read_oct_volume(path, slices=[-1]), stack[[4]])
    assert np.array_equal(read_oct_volume(path, "central")[0], np.asarray(read_oct(path)))
    with pytest.raises(SliceSelectionError, match=r"volume.tif: data\.oct_slices=6 asks for 6"):
        read_oct_volume(path, slices=6)
    single = tmp_path / "bscan.png"
    Image.fromarray(_slice(9)).save(single)
    assert read_oct_volume(single).shape == (1, 20, 30)  # one image is a volume of one


class _FakeHeyexVolume:
    def __init__(self, count: int) -> None:
        self.data = np.stack([np.full((20, 30), float(k), dtype=np.float32) + np.arange(30) for k in range(count)])


def test_read_volume_from_a_heidelberg_vol_through_eyepy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The .vol path as eyepy hands it over (a fake eyepy module: eyepy ships no sample volume, it downloads them)."""
    path = tmp_path / "scan.vol"
    path.write_bytes(b"HSF-OCT-103 placeholder")
    fake = types.ModuleType("eyepy")
    fake.import_heyex_vol = lambda source: _FakeHeyexVolume(7)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "eyepy", fake)
    stack = read_oct_volume(path)
    assert stack.shape == (7, 20, 30) and stack.dtype == np.uint8
    assert read_oct_volume(path, slices=3).shape == (3, 20, 30) and read_oct_volume(path, "central").shape[0] == 1
    with pytest.raises(SliceSelectionError, match=r"scan.vol: data\.oct_slices=\[7\]"):
        read_oct_volume(path, slices=[7])

    def broken(source: object) -> None:
        raise ValueError("bad magic")

    fake.import_heyex_vol = broken  # type: ignore[attr-defined]
    with pytest.raises(ImageReadError, match=r"scan.vol: eyepy could not parse it \(bad magic\)"):
        read_oct_volume(path)
    monkeypatch.setitem(sys.modules, "eyepy", None)  # not installed
    with pytest.raises(ImageReadError, match=r"scan.vol: Heidelberg files need the optional extra"):
        read_oct_volume(path)


def test_read_a_heidelberg_vol_file_through_eyepy(tmp_path: Path) -> None:
    """A real .vol file (eyepy's HSF-OCT layout) read back by eyepy, pixel for pixel, slice order kept."""
    pytest.importorskip("eyepy")
    from heyex_vol import write_heyex_vol

    scans = np.stack([np.clip(_slice(40) + np.arange(30, dtype=np.uint8) + 25 * k, 0, 255) for k in range(5)])
    path = write_heyex_vol(tmp_path / "scan.vol", scans.astype(np.uint8))
    stack = read_oct_volume(path)
    assert stack.shape == (5, 20, 30) and stack.dtype == np.uint8
    assert np.array_equal(stack, scans)
    assert np.array_equal(read_oct_volume(path, slices="central"), scans[[2]])
    assert np.array_equal(read_oct_volume(path, slices=[0, -1]), scans[[0, 4]])
    assert np.array_equal(np.asarray(read_oct(path)), scans[2])  # the single-image reader: the central B-scan
