"""What the handler's preprocess hands to inference, and inference to postprocess.

Its own module because TorchServe loads a handler module only when it defines exactly one class.
"""

from __future__ import annotations

from dataclasses import dataclass

from classifier.service import Item, Outputs


@dataclass(frozen=True)
class Batch:
    """What preprocess hands to inference, and inference to postprocess: never kept on the handler."""

    items: list[Item]
    started: float  # perf_counter when the batch arrived, for the batch-latency metric
    outputs: Outputs | None = None
