"""The PyTorch side of the benchmarks: the same network, optimizer and loss as sla_jax, in plain torch.

ResNet-18 in torchvision's layout (``tests/torch_resnet18.py``) + CutPaste's projection head, SGD with
momentum 0.9 and l2 weight decay on convolution and linear weights only, cross-entropy against soft
targets; ``channels_last`` memory format, as the PyTorch CPU guides recommend for convolutions.
Also CutPaste as the PyTorch ports do it: per image, with PIL, in ``DataLoader`` workers.
"""

from __future__ import annotations

import math
import os
import random
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402
from tests.torch_resnet18 import ResNet18  # noqa: E402

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PretextNet(nn.Module):
    """Backbone + ``Linear → BatchNorm1d → ReLU`` per head width + classifier (sla_jax.training.models.PretextNet)."""

    def __init__(self, *, head=common.PAPER_HEAD, num_classes: int = 2):
        super().__init__()
        self.backbone = ResNet18()
        self.backbone.fc = nn.Identity()
        layers, width = [], 512
        for out in head:
            layers += [nn.Linear(width, out), nn.BatchNorm1d(out), nn.ReLU(inplace=True)]
            width = out
        self.head = nn.Sequential(*layers, nn.Linear(width, num_classes))

    def forward(self, x):
        return self.head(self.backbone(x)["pooled"])


def make_optimizer(
    model: nn.Module,
    *,
    lr=common.SGD["learning_rate"],
    momentum=common.SGD["momentum"],
    weight_decay=common.SGD["weight_decay"],
) -> torch.optim.SGD:
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.SGD(
        [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=lr,
        momentum=momentum,
    )


def train_step(model, optimizer, images_NCHW, targets_NxK, *, bf16: bool = False) -> torch.Tensor:
    """One SGD step on normalised images against soft targets; returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(images_NCHW)
    loss = F.cross_entropy(logits.float(), targets_NxK)
    loss.backward()
    optimizer.step()
    return loss


# ----------------------------------------------------------------------------- CutPaste with PIL


def cut_paste(image: Image.Image, rng: random.Random, *, jitter: float = 0.1) -> Image.Image:
    """CutPaste (Li et al. 2021) as the PyTorch ports write it: area U(0.02, 0.15), aspect ratio from
    (0.3, 1) ∪ (1, 3.3), colour jitter 0.1 on the patch, pasted at a random place."""
    width, height = image.size
    area = rng.uniform(0.02, 0.15) * width * height
    aspect = rng.choice([rng.uniform(0.3, 1.0), rng.uniform(1.0, 3.3)])
    cut_w = max(1, min(width, int(round(math.sqrt(area * aspect)))))
    cut_h = max(1, min(height, int(round(math.sqrt(area / aspect)))))
    left, top = rng.randint(0, width - cut_w), rng.randint(0, height - cut_h)
    patch = image.crop((left, top, left + cut_w, top + cut_h))
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        patch = enhance(patch).enhance(rng.uniform(1 - jitter, 1 + jitter))
    hsv = np.array(patch.convert("HSV"))
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(rng.uniform(-jitter, jitter) * 255)) % 256
    patch = Image.fromarray(hsv, "HSV").convert("RGB")
    out = image.copy()
    out.paste(patch, (rng.randint(0, width - cut_w), rng.randint(0, height - cut_h)))
    return out


class CutPasteDataset(torch.utils.data.Dataset):
    """Decoded training images (PIL, RGB, resized once); each item is (original, CutPaste) as tensors."""

    def __init__(self, images, *, length: int, seed: int = 0):
        self.images, self.length, self.seed = images, length, seed
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self):
        return self.length

    def _tensor(self, image):
        x = torch.from_numpy(np.asarray(image, np.float32) / 255.0).permute(2, 0, 1)
        return (x - self.mean) / self.std

    def __getitem__(self, index):
        rng = random.Random(self.seed * 1_000_003 + index)
        image = self.images[index % len(self.images)]
        return self._tensor(image), self._tensor(cut_paste(image, rng))
