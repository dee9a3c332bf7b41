"""What the handler's preprocess hands to inference, and inference to postprocess.

Its own module because TorchServe takes the one class its handler module defines as the handler
(``ts.utils.util.list_classes_from_module``): a second class there fails every model load.
"""

from __future__ import annotations

from dataclasses import dataclass

from classifier.service import Item, Outputs


@dataclass(frozen=True)
class Batch:
    """Never kept on the handler: values pass between the steps as return values."""

    items: list[Item]
    started: float  # perf_counter when the batch arrived, for the batch-latency metric
    outputs: Outputs | None = None
