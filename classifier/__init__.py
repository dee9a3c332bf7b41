"""The classifier's core: everything that does not depend on a server.

- ``preprocessing``: decode image bytes, zoom, crop, normalise, pad (what the network sees);
- ``model``: the ResNet50 wrapper that returns logits and the 2048-d embedding;
- ``backends``: eager / ONNX Runtime / OpenVINO inference behind one callable;
- ``postprocessing``: top-k predictions, embedding statistics, error bodies;
- ``settings``: the serving settings of model-config.yaml.

Consumers (the TorchServe handler in ``handlers/``, ``training/``, ``loadtests/``)
import from here; nothing here imports TorchServe.
"""
