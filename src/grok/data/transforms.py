"""The one preprocessing path per encoder family: PIL image -> normalised 3-channel tensor."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from PIL import Image
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Family = Literal["retfound", "tiny"]
Modality = Literal["oct", "cfp"]

# Default training augmentations per modality. OCT: small shifts and tilts (B-scans are registered on the fovea;
# flips would swap nasal/temporal), brightness/contrast for device gain. CFP: larger rotations, colour jitter.
DEFAULT_AUGMENT: Mapping[str, Mapping[str, Any]] = {
    "oct": {"degrees": 3.0, "translate": (0.03, 0.05), "scale": (0.95, 1.05), "brightness": 0.2, "contrast": 0.2},
    "cfp": {"degrees": 10.0, "translate": (0.03, 0.03), "scale": (0.95, 1.05), "brightness": 0.2, "contrast": 0.2},
}

FAMILY_SETTINGS: Mapping[str, Mapping[str, Any]] = {
    "retfound": {"interpolation": v2.InterpolationMode.BICUBIC, "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
    "tiny": {"interpolation": v2.InterpolationMode.BILINEAR, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
}


def build_transform(
    family: Family = "tiny",
    modality: Modality = "oct",
    image_size: int = 224,
    train: bool = False,
    augment: Mapping[str, Any] | None = None,
) -> Callable[[Image.Image], torch.Tensor]:
    """Preprocessing for an encoder family: resize to `image_size`, grey -> 3 channels, normalise.

    `retfound` (RETFound and RetiZero) resizes bicubically and uses ImageNet statistics; `tiny` resizes bilinearly
    and maps to [-1, 1]. With `train=True`, modality-appropriate augmentations are applied (override with `augment`).
    """
    if family not in FAMILY_SETTINGS:
        raise ValueError(f"unknown transform family '{family}'; expected one of {sorted(FAMILY_SETTINGS)}")
    if modality not in DEFAULT_AUGMENT:
        raise ValueError(f"unknown modality '{modality}'; expected 'oct' or 'cfp'")
    settings = FAMILY_SETTINGS[family]
    steps: list[Callable] = [_to_rgb, v2.PILToTensor()]
    if train:
        options = {**DEFAULT_AUGMENT[modality], **(augment or {})}
        steps += [
            v2.RandomAffine(degrees=options["degrees"], translate=options["translate"], scale=options["scale"]),
            v2.ColorJitter(brightness=options["brightness"], contrast=options["contrast"]),
        ]
    steps += [
        v2.Resize((image_size, image_size), interpolation=settings["interpolation"], antialias=True),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=settings["mean"], std=settings["std"]),
    ]
    return v2.Compose(steps)


def _to_rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def transform_slices(transform: Callable[[Image.Image], torch.Tensor], scans: list[Image.Image]) -> torch.Tensor:
    """The B-scans of one volume through `transform` with the same random augmentation ([S, C, H, W]): one
    acquisition, so every slice gets the same shift and contrast, and a patch index means the same place in each."""
    state = torch.get_rng_state()
    out = []
    for scan in scans:
        torch.set_rng_state(state)
        out.append(transform(scan))
    return torch.stack(out)
