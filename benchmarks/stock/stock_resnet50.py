"""Model file for the stock-TorchServe baseline (`torch-model-archiver --model-file`).

A plain torchvision ResNet50. TorchServe's BaseHandler instantiates the one class
defined here with no arguments and loads the .pth state dict into it, so the
number of classes is read from the index_to_name.json packed beside this file.
"""

import json
import os

from torchvision.models.resnet import Bottleneck, ResNet

_LABELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "index_to_name.json")


class StockResNet50(ResNet):
    def __init__(self):
        with open(_LABELS) as f:
            num_classes = len(json.load(f))
        super().__init__(Bottleneck, [3, 4, 6, 3], num_classes=num_classes)
