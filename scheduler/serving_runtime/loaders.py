"""Turn a model's artifact folder into a Predictor: ``predict(instances) -> predictions``, one per instance, in order.

The model server and every batch inference worker load the model through here, so a model answers the same
online and offline.  Runs under the serving runtime's interpreter: the standard library, numpy and whichever
frameworks that environment holds; torch and tensorflow are imported only by their own loaders, and their
absence is a LoadError that says how to install them.  User code (handler.py, model.py) is imported from the
model folder, which goes on ``sys.path`` so it may import its own helper modules.
"""

from __future__ import annotations

import atexit
import importlib.util
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import artifacts


class LoadError(Exception):
    """The model cannot be loaded; the message is one line a user can act on."""


class PredictionError(Exception):
    """The model answered something that is not one prediction per instance."""


class Predictor:
    """A loaded model.  ``predict`` guarantees a list as long as ``instances``, in the same order."""

    def __init__(self, name: str, function: Callable[[list], Any]):
        self.name = name
        self._function = function

    def predict(self, instances: list) -> list:
        predictions = self._function(instances)
        if hasattr(predictions, "tolist"):  # numpy, torch and tensorflow arrays
            predictions = predictions.tolist()
        elif isinstance(predictions, tuple):
            predictions = list(predictions)
        if not isinstance(predictions, list):
            raise PredictionError(f"predict returned {type(predictions).__name__}: it must return a list "
                                  "(or array) with one prediction per instance")
        if len(predictions) != len(instances):
            raise PredictionError(f"predict returned {len(predictions)} predictions for {len(instances)} instances")
        return predictions


def load_model(model_dir: Path, framework: str, fmt: str, name: str) -> Predictor:
    """Load the model at ``model_dir``, checked first as the platform checked it when the model was created."""
    model_dir = Path(model_dir).resolve()
    try:
        found = artifacts.inspect(model_dir, framework, name)
    except artifacts.ArtifactError as e:
        raise LoadError(str(e)) from None
    if found != fmt:
        raise LoadError(f"the model folder holds a {found!r} {framework} model, not {fmt!r}")
    if fmt == "python":
        return load_python(model_dir, name)
    if fmt == "savedmodel":
        return load_savedmodel(model_dir, name)
    if fmt == "mar":
        return load_mar(model_dir, name)
    return load_pytorch(model_dir, name, pytorch_manifest(model_dir, name))


def require(module: str) -> Any:
    """Import a framework, or say how to add it to the runtime (it is not installed by default: too large)."""
    if importlib.util.find_spec(module) is None:
        package = {"tensorflow": "tensorflow", "torch": "torch"}.get(module, module)
        raise LoadError(f"the serving runtime has no {module}; install it into {sys.prefix}: "
                        f"{sys.prefix}/bin/pip install {package}")
    return importlib.import_module(module)


def import_file(path: Path, module_name: str) -> Any:
    """Import user code from ``path`` with its folder on sys.path (for its own imports, as TorchServe does)."""
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def load_python(model_dir: Path, name: str) -> Predictor:
    handler = import_file(model_dir / "handler.py", "em_handler")
    model = handler.load(model_dir)
    predict = handler.predict
    return Predictor(name, lambda instances: predict(model, instances))


class TorchServeContext:
    """The part of TorchServe's context a handler reads in ``initialize``: where its files are and their names."""

    def __init__(self, model_dir: Path, manifest: dict, gpu_id: int | None):
        self.model_name = manifest["model"]["modelName"]
        self.manifest = manifest
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": gpu_id, "batch_size": 1}
        self.metrics = None

    def get_request_header(self, idx: int, key: str) -> None:
        return None


def pytorch_manifest(model_dir: Path, name: str) -> dict:
    weights = artifacts.weight_files(model_dir)
    return {"model": {"modelName": name, "serializedFile": weights[0].name, "modelFile": "model.py",
                      "handler": "handler.py"}}


def load_pytorch(model_dir: Path, name: str, manifest: dict) -> Predictor:
    """A TorchServe handler: a class with ``initialize``/``handle`` (or preprocess/inference/postprocess), or a
    module function ``handle(data, context)``.  Each instance is one request of the batch TorchServe would pass
    (``{"data": instance, "body": instance}``); the handler answers one item per request."""
    torch = require("torch")
    handler_file, _, function_name = manifest["model"].get("handler", "handler.py").partition(":")
    if not handler_file.endswith(".py"):
        raise LoadError(f"the handler {handler_file!r} is one of TorchServe's built-in handlers, which need "
                        "TorchServe itself: archive your own handler.py instead")
    if not (model_dir / handler_file).is_file():
        raise LoadError(f"the archive's handler {handler_file} is not in it")
    context = TorchServeContext(model_dir, manifest, 0 if torch.cuda.is_available() else None)
    module = import_file(model_dir / handler_file, "em_torch_handler")
    handle = torchserve_entry(module, function_name, context)
    return Predictor(name, lambda instances: handle([{"data": x, "body": x} for x in instances], context))


def torchserve_entry(module: Any, function_name: str, context: TorchServeContext) -> Callable:
    """The handler's ``handle(data, context)``, initialized as TorchServe initializes it."""
    if function_name or (hasattr(module, "handle") and callable(module.handle)):
        handle = getattr(module, function_name or "handle", None)
        if not callable(handle):
            raise LoadError(f"the handler has no function {function_name}")
        handle(None, context)  # TorchServe's initialization call for a function handler
        return handle
    classes = [c for c in vars(module).values() if isinstance(c, type) and c.__module__ == module.__name__
               and any(hasattr(c, m) for m in ("handle", "inference"))]
    if len(classes) != 1:
        found = ", ".join(c.__name__ for c in classes) or "none"
        raise LoadError(f"handler.py must define one handler class with handle or inference (found: {found})")
    instance = classes[0]()
    if hasattr(instance, "initialize"):
        instance.initialize(context)
    if hasattr(instance, "handle"):
        return instance.handle

    def handle(data, context):
        for step in ("preprocess", "inference", "postprocess"):
            if hasattr(instance, step):
                data = getattr(instance, step)(data)
        return data

    return handle


def load_mar(model_dir: Path, name: str) -> Predictor:
    """Unpack the archive into a private folder (the model folder is read-only) and load it as a PyTorch model."""
    require("torch")
    archive = artifacts.mar_files(model_dir)[0]
    manifest = artifacts.read_mar_manifest(archive)  # also refuses members outside the archive
    unpacked = Path(tempfile.mkdtemp(prefix="mar-"))
    atexit.register(shutil.rmtree, unpacked, True)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(unpacked)
    model = manifest.setdefault("model", {})
    model.setdefault("handler", "handler.py")
    return load_pytorch(unpacked, name, manifest)


def load_savedmodel(model_dir: Path, name: str) -> Predictor:
    """The SavedModel's ``serving_default`` signature.  Instances are rows of its one input, or dicts of its
    named inputs; predictions are rows of its one output, or dicts of its named outputs (TF Serving's row format)."""
    tf = require("tensorflow")
    import numpy as np

    loaded = tf.saved_model.load(str(model_dir))
    if "serving_default" not in loaded.signatures:
        raise LoadError("the SavedModel has no serving_default signature: save it with "
                        "tf.saved_model.save(model, folder, signatures=...)")
    signature = loaded.signatures["serving_default"]
    specs = signature.structured_input_signature[1]

    def predict(instances: list) -> list:
        if len(specs) == 1 and not isinstance(instances[0], dict):
            (key, spec), = specs.items()
            inputs = {key: tf.constant(np.asarray(instances), dtype=spec.dtype)}
        else:
            inputs = {key: tf.constant(np.asarray([x[key] for x in instances]), dtype=spec.dtype)
                      for key, spec in specs.items()}
        outputs = {key: value.numpy().tolist() for key, value in signature(**inputs).items()}
        if len(outputs) == 1:
            return next(iter(outputs.values()))
        return [{key: rows[i] for key, rows in outputs.items()} for i in range(len(instances))]

    return Predictor(name, predict)
