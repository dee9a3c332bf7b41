"""Export the trained model to ONNX, fp32 and int8, for the optimized backends.

    python -m training.export_onnx [--model-dir build/model] [--calibration-images 128]

Reads ``model.pt2`` and writes, next to it:

- ``model.onnx``: fp32, dynamic batch; ONNX Runtime and OpenVINO run it (OpenVINO also in bf16);
- ``model.int8.onnx``: post-training static quantization in QDQ format (per-channel int8
  weights, uint8 activations), calibrated on images of the model's own training set sent
  through the serving preprocessing. ONNX Runtime and OpenVINO both run it as int8.

The training data is found from the flags that ``metadata.json`` saved, through the same
function training used (``training.datasets.training_items``): the built-in generated set is
re-drawn from its seed, an ImageFolder or CIFAR-10 folder is re-read from its path.
A weights-only export (``--weights imagenet.pth --epochs 0``) has no training data: pass
``--calibration-data DIR`` (any folder of representative images, searched recursively);
without it, the built-in textures are used and a warning says so. What calibration used is
written into ``metadata.json`` under ``int8_calibration``.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from classifier.transforms import PreprocessConfig, zoom_crop_pad
from training import lineage, registry, synthetic
from training.datasets import IMAGE_SUFFIXES, load_image_file, training_items

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


def calibration_images(metadata: dict, count: int, extra_dir: Path | None = None) -> tuple[list[Image.Image], str]:
    """Up to ``count`` decoded calibration images, and a description of where they came from."""
    config = PreprocessConfig.from_dict(metadata["preprocessing"])
    if extra_dir is not None:
        files = sorted(f for f in extra_dir.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SystemExit(f"error: --calibration-data {extra_dir} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        random.Random(0).shuffle(files)
        return [load_image_file(f, config) for f in files[:count]], f"folder {extra_dir} (--calibration-data)"
    if metadata["training"].get("data") is None:
        print(
            "warning: this model was exported from weights alone, with no training data to calibrate int8 on; "
            "using the built-in synthetic textures, which are not natural images. For an accurate int8 model pass "
            "--calibration-data DIR (make archive CALIBRATION_DATA=DIR) with images like the ones it will serve.",
            file=sys.stderr,
        )
        images = [img for img, _ in synthetic.generate(max(1, count // len(synthetic.CLASSES)), seed=0)]
        return images, "built-in synthetic textures (fallback: weights-only export, no training data)"
    train_args = metadata["training"]["args"]
    classes, items, val_items, description = training_items(train_args)
    # Calibrating on other data than the model saw would change the int8 model silently: refuse it.
    current = lineage.fingerprint(classes, items, val_items, train_args.get("data"))
    lineage.check_unchanged(metadata.get("data_fingerprint"), current, "to calibrate int8 on")
    chosen = balanced_sample(items, count, random.Random(0))
    images = [src if isinstance(src, Image.Image) else load_image_file(src, config) for src, _ in chosen]
    return images, f"training set, class-balanced: {description}"


def balanced_sample(items: list[tuple[Any, int]], count: int, rng: random.Random) -> list[tuple[Any, int]]:
    """Up to ``count`` items taken round-robin over the classes (each shuffled), so the activation ranges
    that calibration sees are not dominated by whichever class a plain random draw favours."""
    by_class: dict[int, list] = {}
    for item in items:
        by_class.setdefault(item[1], []).append(item)
    queues = []
    for label in sorted(by_class):
        rng.shuffle(by_class[label])
        queues.append(by_class[label])
    chosen: list[tuple[Any, int]] = []
    for depth in range(max((len(q) for q in queues), default=0)):
        chosen += [q[depth] for q in queues if depth < len(q)]
    return chosen[:count]


def calibration_batches(images: list[Image.Image], config: PreprocessConfig, batch_size: int = 8) -> list[np.ndarray]:
    """The images through the serving preprocessing (random crops, seeded), as float32 NCHW batches."""
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
    parser.add_argument(
        "--calibration-data",
        type=Path,
        default=None,
        help="folder of images to calibrate int8 on instead of the training set (needed for weights-only exports)",
    )
    parser.add_argument(
        "--into",
        type=Path,
        default=None,
        help="copy the model folder here and export there, leaving --model-dir as training wrote it (dvc.yaml's "
        "stages each own their outputs) (default: export in place)",
    )
    parser.add_argument("--skip-int8", action="store_true", help="only write the fp32 model.onnx (default: write both)")
    args = parser.parse_args(argv)
    if not (args.model_dir / "model.pt2").exists():
        raise SystemExit(f"error: {args.model_dir / 'model.pt2'} does not exist; train first (make train)")
    if args.into is not None:
        if args.into.exists():
            shutil.rmtree(args.into)
        shutil.copytree(args.model_dir, args.into)
        args.model_dir = args.into
    fp32 = export_fp32(args.model_dir)
    print(f"wrote {fp32}")
    if not args.skip_int8:
        meta_path = args.model_dir / "metadata.json"
        metadata = json.loads(meta_path.read_text())
        images, source = calibration_images(metadata, args.calibration_images, args.calibration_data)
        config = PreprocessConfig.from_dict(metadata["preprocessing"])
        int8 = quantize_int8(fp32, calibration_batches(images, config))
        metadata["int8_calibration"] = {"images": len(images), "source": source}
        meta_path.write_text(json.dumps(metadata, indent=2))
        print(f"wrote {int8} (calibrated on {len(images)} images from the {source})")
        registry.attach(args.model_dir, metadata)


if __name__ == "__main__":
    main()
