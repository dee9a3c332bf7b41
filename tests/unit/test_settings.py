"""One home per fact: the serving defaults that model-config.yaml ships, the dataclass, the Makefile and the limits agree."""

from __future__ import annotations

import dataclasses
import os
import subprocess

import yaml

from classifier.limits import MAX_BODY_BYTES, MAX_IMAGE_PIXELS, MAX_REQUEST_BYTES
from classifier.settings import HandlerSettings
from tests.conftest import REPO

MODEL_CONFIG = yaml.safe_load((REPO / "model-config.yaml").read_text())


def test_every_handler_setting_of_model_config_is_the_dataclass_default():
    """A handler: section that leaves a key out means what the shipped file says, and the file lists every knob."""
    defaults = {field.name: field.default for field in dataclasses.fields(HandlerSettings)}
    assert MODEL_CONFIG["handler"] == defaults


def test_the_makefile_default_backend_is_model_configs():
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "BACKEND"}}
    out = subprocess.run(
        ["make", "-s", "--no-print-directory", "--eval", "print-backend: ; @echo $(BACKEND)", "print-backend"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == MODEL_CONFIG["handler"]["backend"]


def test_the_shipped_limits_are_the_core_limits():
    assert MODEL_CONFIG["handler"]["max_body_bytes"] == MAX_BODY_BYTES
    assert MODEL_CONFIG["handler"]["max_image_pixels"] == MAX_IMAGE_PIXELS
    # Between the two limits the handler answers 413 with a reason; above the frontend's, it cannot.
    assert MAX_BODY_BYTES < MAX_REQUEST_BYTES
