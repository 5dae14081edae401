"""A ResNet-18 in plain torch.nn with torchvision's module names, paddings and initialisation.

The independent reference for the weight conversion (torchvision cannot be installed beside torch here).
``python tests/torch_resnet18.py OUT.pth [SEED]`` writes a randomly initialised, BatchNorm-calibrated
state dict: a stand-in for ``resnet18-f37072fd.pth`` where the ImageNet file is not available.
"""

from __future__ import annotations

import sys

import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    """torchvision.models.resnet18; ``forward`` returns the stage outputs and the pooled features."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = (64, 128, 256, 512)
        inplanes = 64
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            setattr(
                self, f"layer{i + 1}", nn.Sequential(BasicBlock(inplanes, width, stride), BasicBlock(width, width, 1))
            )
            inplanes = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, 1000)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = {}
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            out[f"layer{i}"] = x
        out["pooled"] = torch.flatten(self.avgpool(x), 1)
        return out


def random_resnet18(seed: int) -> ResNet18:
    """Random weights; BatchNorm affine parameters drawn at random and running statistics calibrated by
    train-mode passes over random images, so that eval-mode activations stay of order one (as with real
    weights) and every BatchNorm quantity takes part in the comparison."""
    torch.manual_seed(seed)
    model = ResNet18()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
                m.momentum = None  # cumulative average over the calibration batches
        model.train()
        for _ in range(3):
            model(torch.randn(8, 3, 96, 96))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.1
    return model.eval()


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        raise SystemExit("usage: python tests/torch_resnet18.py OUT.pth [SEED]")
    torch.save(random_resnet18(int(sys.argv[2]) if len(sys.argv) == 3 else 0).state_dict(), sys.argv[1])
    print(f"wrote a random-weights torchvision-layout ResNet-18 state dict to {sys.argv[1]}")
