"""The handler module loads the way TorchServe's worker loads it, without a server or a model.

TorchServe's model loader takes a handler module's one class as its entry point and refuses a module that defines
two: a helper class next to the handler fails every worker at start, which only a server would otherwise show.
"""

from __future__ import annotations

import importlib

from ts.model_loader import TsModelLoader
from ts.utils.util import list_classes_from_module


def test_the_handler_module_defines_exactly_the_handler_class():
    module = importlib.import_module("handlers.classifier_handler")
    assert [c.__name__ for c in list_classes_from_module(module)] == ["ClassifierHandler"]
    entry_point, _ = TsModelLoader()._get_class_entry_point(module)
    assert type(entry_point.__self__).__name__ == "ClassifierHandler"
