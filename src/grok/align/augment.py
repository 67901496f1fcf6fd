"""OCT-specific augmentation on top of the shared transforms: multiplicative speckle noise.

Geometric and intensity augmentations (small shifts, tilts, scale, brightness/contrast) come from
`grok.data.transforms.build_transform(train=True, augment=...)`. Horizontal flips are not used by default: flipping a
macular B-scan swaps its nasal and temporal sides, which would no longer match the table's nasal/temporal subfield
thicknesses of that eye.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


class OCTSpeckle:
    """With probability `p`, multiply pixel intensities by gamma noise of mean 1 and std `sigma` (OCT speckle)."""

    def __init__(self, p: float = 0.5, sigma: float = 0.1) -> None:
        if not (0.0 <= p <= 1.0 and sigma >= 0.0):
            raise ValueError(f"data.speckle needs 0 <= p <= 1 and sigma >= 0, got p={p}, sigma={sigma}")
        self.p, self.sigma = p, sigma

    def __call__(self, image: Image.Image) -> Image.Image:
        """A noisy copy of a grey or RGB PIL image (or the image itself when not applied)."""
        if self.sigma == 0 or torch.rand(()).item() >= self.p:
            return image
        shape = 1.0 / self.sigma**2
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32))
        noise = torch.distributions.Gamma(torch.tensor(shape), torch.tensor(shape)).sample(pixels.shape[:2])
        if pixels.ndim == 3:
            noise = noise.unsqueeze(-1)
        return Image.fromarray((pixels * noise).clamp(0, 255).to(torch.uint8).numpy())
