"""The classifier's core: everything that does not depend on a server.

- ``preprocessing``: decode image bytes, zoom, crop, normalise, pad (what the network sees);
- ``model``: the ResNet50 wrapper that returns logits and the 2048-d embedding;
- ``backends``: eager / ONNX Runtime / OpenVINO inference behind one callable;
- ``postprocessing``: top-k predictions, embedding statistics, error bodies;
- ``pipeline``: one image's seed, crop record, size limit and answer, as the handler and the CLI both build them;
- ``predict``: ``python -m classifier predict PATH...``, the server's answers for files, without a server;
- ``settings``: the serving settings of model-config.yaml.

Consumers (the TorchServe handler in ``handlers/``, ``training/``, ``benchmarks/``, ``cpp.compare``, the CLI)
import from here; nothing here imports TorchServe.
"""
