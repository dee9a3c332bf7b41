"""Add the drift reference to an exported model's metadata.json, for models exported before training wrote one:

    python -m training.drift_reference --model-dir build/model

The validation set is rebuilt from the training args saved in metadata.json (same data, split and seed),
so the reference equals what `training.train` would have written. Then `make archive` packs it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from classifier.backends import load_backend
from classifier.transforms import PreprocessConfig
from training.train import drift_reference, load_data


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=Path("build/model"), help="export folder (default: build/model)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")
    args = parser.parse_args(argv)
    path = args.model_dir / "metadata.json"
    metadata = json.loads(path.read_text())
    train_args = argparse.Namespace(**metadata["training"]["args"])
    data = load_data(train_args, PreprocessConfig.from_dict(metadata["preprocessing"]))
    classes, val_ds = data.classes, data.val
    if classes != metadata["classes"]:
        raise SystemExit(f"error: the data's classes {classes} are not the model's {metadata['classes']}")
    backend = load_backend("eager", args.model_dir, torch.device("cpu"), torch.get_num_threads())
    metadata["drift_reference"] = drift_reference(backend, val_ds, len(classes), args.batch_size)
    path.write_text(json.dumps(metadata, indent=2))
    print(f"wrote a drift reference from {len(val_ds)} held-out images into {path}")
    return metadata["drift_reference"]


if __name__ == "__main__":
    main()
