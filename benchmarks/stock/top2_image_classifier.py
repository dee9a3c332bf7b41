"""TorchServe's stock ``image_classifier`` handler with ``topk = 2``, for models with fewer than 5 classes.

The stock handler asks ``torch.topk`` for 5 classes and fails on a model with fewer.
Everything else (preprocessing, batching, inference, response format) is inherited unchanged.
The benchmark uses this file only when the model has fewer than 5 classes, and the
literal ``--handler image_classifier`` otherwise.
"""

from ts.torch_handler.image_classifier import ImageClassifier


class Top2ImageClassifier(ImageClassifier):
    topk = 2  # the number of classes our own handler returns
