"""The limits on what one request may cost, each in one place.

Every consumer (the handler, the CLI, the gRPC client, the configs' tests) reads them from here. The ones that
TorchServe itself applies are also written in its config.properties files, which it reads as they are:
tests/unit/test_server_configs.py pins those to the values here.
"""

from __future__ import annotations

# Pillow's own default allows ~179 MP before refusing; a 30000x30000 PNG of a few KB would otherwise allocate
# 2.7 GB in the worker. Checked from the header, before a pixel is decoded.
MAX_IMAGE_PIXELS = 40_000_000

# The largest body the handler reads (model-config.yaml's handler.max_body_bytes): a 12 MP phone JPEG is 3-6 MB
# (docs/optimization.md), so 10 MiB refuses only what no camera sends. Kept under MAX_REQUEST_BYTES, so that an
# upload between the two gets a 413 with a reason; above MAX_REQUEST_BYTES the frontend refuses it without one.
MAX_BODY_BYTES = 10 * 2**20

# The Java frontend's hard cut-off (config.properties' max_request_size; its gRPC server applies it too): it bounds
# what one request can buffer in the frontend before any of our code runs. The gRPC client sends up to it (gRPC's
# own default would stop at 4 MiB), so that oversized images reach the handler and get its 413 with a reason.
MAX_REQUEST_BYTES = 32 * 2**20

# The seeds a request may send (X-Seed, a form field, gRPC, --seed): a non-negative signed 64-bit integer, which the
# C++ pipeline parses as int64 too. A seed the server draws has SEED_BITS random bits, so every reported seed is
# one a client can send back.
SEED_BITS = 63
MAX_SEED = 2**SEED_BITS - 1
