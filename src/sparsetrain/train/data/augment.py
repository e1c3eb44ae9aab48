"""Train-time augmentation as batched tensor ops, seeded by a ``torch.Generator``.

The standard CIFAR recipe (random crop of the image padded by 4 pixels, then a random
horizontal flip) works on a whole batch ``(N, C, H, W)`` at once: one gather, no
Python loop per image. :func:`make_loaders` applies it to train batches only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

_MASK64 = (1 << 64) - 1


def mix_seed(*parts: int) -> int:
    """Mix integers into one well-spread 63-bit seed (splitmix64); order matters.

    Example:
        >>> mix_seed(0, 1) == mix_seed(0, 1), mix_seed(0, 1) == mix_seed(1, 0)
        (True, False)
    """
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) & _MASK64)) + 0x9E3779B97F4A7C15 & _MASK64
        h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
        h = (h ^ (h >> 27)) * 0x94D049BB133111EB & _MASK64
        h ^= h >> 31
    return h >> 1


class RandomCropFlip:
    """Random crop of the zero-padded image and random horizontal flip, on batches.

    Args:
        padding: pixels added on each side before cropping back to the original size
            (4 for 32x32 CIFAR images); 0 disables the crop.
        flip: flip each image left-right with probability 1/2.
        fill: the padding value per channel. For normalised inputs pass
            ``-mean / std`` so that the padding is black (0) in pixel space, as with
            torchvision's ``RandomCrop(32, padding=4)`` before ``Normalize``.

    Example:
        >>> aug = RandomCropFlip(padding=4)
        >>> x = torch.randn(8, 3, 32, 32)
        >>> y1 = aug(x, torch.Generator().manual_seed(0))
        >>> y2 = aug(x, torch.Generator().manual_seed(0))
        >>> y1.shape, torch.equal(y1, y2)
        (torch.Size([8, 3, 32, 32]), True)
    """

    def __init__(self, padding: int = 4, flip: bool = True, fill: float | Sequence[float] = 0.0) -> None:
        self.padding = int(padding)
        self.flip = bool(flip)
        self.fill = torch.as_tensor(fill, dtype=torch.float32).reshape(-1)

    def __repr__(self) -> str:
        return f"RandomCropFlip(padding={self.padding}, flip={self.flip})"

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a batch ``x`` of shape ``(N, C, H, W)``; returns a new tensor of the same shape."""
        if x.ndim != 4:
            raise ValueError(f"RandomCropFlip expects a batch (N, C, H, W), got shape {tuple(x.shape)}")
        n, c, h, w = x.shape
        p = self.padding
        if p > 0:
            fill = self.fill.to(dtype=x.dtype, device=x.device)
            padded = fill.reshape(1, -1, 1, 1).expand(n, c, h + 2 * p, w + 2 * p).clone()
            padded[:, :, p:p + h, p:p + w] = x
            dy = torch.randint(0, 2 * p + 1, (n, 1, 1), generator=generator).to(x.device)
            dx = torch.randint(0, 2 * p + 1, (n, 1, 1), generator=generator).to(x.device)
            # one gather over the flattened padded image: pixel (i, j) comes from (dy + i, dx + j)
            i = torch.arange(h, device=x.device)[None, :, None]
            j = torch.arange(w, device=x.device)[None, None, :]
            index = ((dy + i) * (w + 2 * p) + dx + j).reshape(n, 1, h * w).expand(n, c, h * w)
            x = padded.reshape(n, c, -1).gather(2, index).reshape(n, c, h, w)
        if self.flip:
            flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x


class StepAugment:
    """A batch augmentation called as ``augment(x, step)``, seeded by ``(seed, step)``.

    For training loops that augment on the device: the same seed and step give the
    same result, so a resumed run repeats the uninterrupted one.

    Example:
        >>> aug = StepAugment(RandomCropFlip(padding=2), seed=0)
        >>> x = torch.randn(4, 3, 8, 8)
        >>> torch.equal(aug(x, 5), aug(x, 5)), torch.equal(aug(x, 5), aug(x, 6))
        (True, False)
    """

    def __init__(self, augmentation: Callable[[torch.Tensor, torch.Generator], torch.Tensor], seed: int) -> None:
        self.augmentation = augmentation
        self.seed = int(seed)

    def __repr__(self) -> str:
        return f"StepAugment({self.augmentation!r}, seed={self.seed})"

    def __call__(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """Augment the batch ``x`` for training step ``step``."""
        return self.augmentation(x, torch.Generator().manual_seed(mix_seed(self.seed, step)))
