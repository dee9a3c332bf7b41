"""The served network: a torchvision ResNet that returns its logits and its pooled embedding."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import ResNet, resnet50
from torchvision.models.resnet import Bottleneck

ARCHITECTURES = ("resnet50", "tiny")


class ResNetWithEmbedding(nn.Module):
    """Wraps a torchvision ResNet so ``forward`` returns ``(logits, embedding)``.

    ``embedding`` is the flattened output of the global average pool, i.e. the
    input of ``fc`` (2048-d for Bottleneck ResNets). ``logits`` are exactly what
    the wrapped ResNet's own ``forward`` returns: the same modules in the same order.
    """

    def __init__(self, backbone: ResNet):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        x = b.layer4(b.layer3(b.layer2(b.layer1(x))))
        embedding = torch.flatten(b.avgpool(x), 1)
        return b.fc(embedding), embedding


def build_backbone(arch: str, num_classes: int) -> ResNet:
    """A randomly initialised ResNet.

    ``tiny`` is a ResNet with one Bottleneck block per stage: the same stem, the
    same 2048-d embedding and the same export path as ResNet50 at about a third of
    the compute. It exists so tests can train and serve a real model quickly.
    """
    if arch == "resnet50":
        return resnet50(weights=None, num_classes=num_classes)
    if arch == "tiny":
        return ResNet(Bottleneck, [1, 1, 1, 1], num_classes=num_classes)
    raise ValueError(f"Invalid architecture {arch!r}. Only {', '.join(ARCHITECTURES)} are supported.")
