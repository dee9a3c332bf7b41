"""Export the trained model to ONNX, fp32 and int8, for the optimized backends.

    python -m training.export_onnx [--model-dir build/model] [--calibration-images 128]

Reads ``model.pt2`` and writes, next to it:

- ``model.onnx``: fp32, dynamic batch; ONNX Runtime and OpenVINO run it (OpenVINO also in bf16);
- ``model.int8.onnx``: post-training static quantization in QDQ format (per-channel int8
  weights, uint8 activations), calibrated on images of the model's own training set sent
  through the serving preprocessing. ONNX Runtime and OpenVINO both run it as int8.

The training data is found from ``metadata.json``: the built-in generated set is re-drawn
from its seed; an ImageFolder is re-read from its path.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

from classifier.preprocessing import PreprocessConfig, zoom_crop_pad
from training import synthetic

INPUT, OUTPUTS = "input", ["logits", "embedding"]


def export_fp32(model_dir: Path) -> Path:
    program = torch.export.load(str(model_dir / "model.pt2"))
    size = json.loads((model_dir / "metadata.json").read_text())["input_size"]
    batch = torch.export.Dim("batch", min=1, max=1024)
    onnx_program = torch.onnx.export(
        program,
        (torch.zeros(2, 3, size, size),),
        dynamo=True,
        input_names=[INPUT],
        output_names=OUTPUTS,
        dynamic_shapes=({0: batch},),
        verbose=False,
    )
    out = model_dir / "model.onnx"
    onnx_program.save(str(out))
    return out


def calibration_batches(metadata: dict, count: int, batch_size: int = 8) -> list[np.ndarray]:
    """``count`` preprocessed training images (random crops, seeded), as float32 NCHW batches."""
    config = PreprocessConfig.from_dict(metadata["preprocessing"])
    args = metadata["training"]["args"]
    if args.get("data"):
        from training.train import list_image_folder, load_image_file, split_items

        root = Path(args["data"])
        if (root / "train").is_dir():
            _, items = list_image_folder(root / "train")
        else:
            _, all_items = list_image_folder(root)
            items, _ = split_items(all_items, args.get("val_fraction", 0.2), args.get("seed", 0))
        random.Random(0).shuffle(items)
        images = [load_image_file(path, config) for path, _ in items[:count]]
    else:
        per_class = max(1, count // len(synthetic.CLASSES))
        images = [img for img, _ in synthetic.generate(per_class, seed=args.get("seed", 0))]
    rng = random.Random(1234)
    tensors = [zoom_crop_pad(img, config, "random", rng)[0] for img in images]
    return [torch.stack(tensors[i : i + batch_size]).numpy() for i in range(0, len(tensors), batch_size)]


def quantize_int8(fp32_path: Path, batches: list[np.ndarray]) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(batches)

        def get_next(self):
            batch = next(self.it, None)
            return None if batch is None else {INPUT: batch}

    out = fp32_path.with_name("model.int8.onnx")
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        # U8 activations, S8 per-channel weights: the layout VNNI accelerates, and one OpenVINO reads as int8.
        quantize_static(
            str(prepared),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model-dir", type=Path, default=Path("build/model"), help="export folder of training (default: build/model)"
    )
    parser.add_argument(
        "--calibration-images", type=int, default=128, help="training images used to calibrate int8 (default: 128)"
    )
    parser.add_argument("--skip-int8", action="store_true", help="only write the fp32 model.onnx (default: write both)")
    args = parser.parse_args(argv)
    if not (args.model_dir / "model.pt2").exists():
        raise SystemExit(f"error: {args.model_dir / 'model.pt2'} does not exist; train first (make train)")
    fp32 = export_fp32(args.model_dir)
    print(f"wrote {fp32}")
    if not args.skip_int8:
        metadata = json.loads((args.model_dir / "metadata.json").read_text())
        int8 = quantize_int8(fp32, calibration_batches(metadata, args.calibration_images))
        print(f"wrote {int8} (calibrated on {args.calibration_images} training images)")


if __name__ == "__main__":
    main()
