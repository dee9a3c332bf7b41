"""The limits on what one request may cost, each in one place.

Every consumer (the handler, the CLI, the gRPC client, the configs' tests) reads them from here.
"""

from __future__ import annotations

# Pillow's own default allows ~179 MP before refusing; a 30000x30000 PNG of a few KB would otherwise allocate
# 2.7 GB in the worker. Checked from the header, before a pixel is decoded.
MAX_IMAGE_PIXELS = 40_000_000
