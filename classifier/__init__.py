"""The classifier's core: everything that does not depend on a server.

- ``service``: one image's trip, in one place: load the model, prepare one request, answer a batch in order;
- ``preprocessing``: bytes to the network's input, from ``decoding`` (bytes to an upright RGB image),
  ``transforms`` (zoom, crop, normalise, pad) and ``region`` (a JPEG decoded only where the crop needs it);
- ``model``: the ResNet50 wrapper that returns logits and the 2048-d embedding;
- ``backends``: eager / ONNX Runtime / OpenVINO inference behind one ``Backend`` protocol;
- ``postprocessing``: top-k predictions, embedding statistics, error bodies;
- ``settings``: the serving settings of model-config.yaml; ``limits``: what one request may cost;
- ``artifacts``: the backend names and the files each needs (stdlib only: make reads it before a venv exists);
- ``drift``: the embedding-drift score the server exports.

Consumers (the TorchServe handler in ``handlers/``, ``training/``, the CLI in ``cli/``, ``benchmarks/``, the C++
harness ``cpp.compare``) import from here; nothing here imports TorchServe or a consumer.
"""
