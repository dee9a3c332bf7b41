"""What the TorchServe handler's steps pass on: preprocess to inference, inference to postprocess.

Its own module because TorchServe's loader takes the handler module's only class as the handler, and refuses a
module that defines two (``ts.utils.util.list_classes_from_module``).
"""

from __future__ import annotations

from dataclasses import dataclass

from classifier.service import Item, Outputs


@dataclass(frozen=True)
class Batch:
    """One batch's items, when it arrived, and the backend's outputs once inference ran: never kept on the handler."""

    items: list[Item]
    started: float  # perf_counter when the batch arrived, for the batch-latency metric
    outputs: Outputs | None = None
