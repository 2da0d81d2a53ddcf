"""What a model's artifact folder must hold to be served, per framework, checked without running user code.

Standard library only, because two very different processes import it: the platform (as
``nothing.scheduler.serving_runtime.artifacts``) when a model is created, so a user learns at once what is
missing, and the serving runtime (as the sibling ``artifacts``) when it loads the model, so both agree on the
format.  The formats follow EasyMaker's "serving notes per framework": TensorFlow serves a SavedModel, PyTorch a
TorchServe archive (``.mar``) or the files the archiver would take (model.py, handler.py, a weight file), and our
own ``python`` framework a ``handler.py`` with ``load`` and ``predict``.
"""

from __future__ import annotations

import ast
import json
import os
import zipfile
from pathlib import Path, PurePosixPath

FRAMEWORKS = ("tensorflow", "pytorch", "python")
FORMATS = {"tensorflow": ("savedmodel",), "pytorch": ("pytorch", "mar"), "python": ("python",)}
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin")
MAR_MANIFEST = "MAR-INF/MANIFEST.json"


class ArtifactError(ValueError):
    """An artifact folder that cannot be served; the message names what to add or change."""


def inspect(path: Path, framework: str, model_name: str) -> str:
    """The format of the artifact at ``path`` for ``framework``, or ArtifactError saying what is missing.

    Guaranteed on success: the files the loader of that format opens are there, and no symlink leads out of
    the folder (the folder is bound read-only into runs; a link out would serve, or leak, another file).
    """
    if framework not in FRAMEWORKS:
        raise ArtifactError(f"unknown framework {framework!r}: use one of {', '.join(FRAMEWORKS)}")
    root = Path(path)
    if not root.is_dir():
        raise ArtifactError(f"the model artifact {root} is not a folder")
    check_links(root)
    if framework == "tensorflow":
        return inspect_savedmodel(root)
    if framework == "pytorch":
        return inspect_mar(root, model_name) if mar_files(root) else inspect_pytorch(root)
    return inspect_python(root)


def check_links(root: Path) -> None:
    """Refuse any symlink under ``root`` whose target is outside it."""
    top = os.path.realpath(root)
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            entry = os.path.join(folder, name)
            if os.path.islink(entry):
                target = os.path.realpath(entry)
                if os.path.commonpath([top, target]) != top:
                    relative = os.path.relpath(entry, root)
                    raise ArtifactError(f"{relative} is a symlink out of the model folder: copy the file in instead")


def inspect_savedmodel(root: Path) -> str:
    if not (root / "saved_model.pb").is_file():
        raise ArtifactError("a tensorflow model is a SavedModel folder: saved_model.pb is missing "
                            "(save it with tf.saved_model.save(model, folder))")
    variables = root / "variables"
    if variables.exists() and not variables.is_dir():
        raise ArtifactError("variables must be the SavedModel's variables folder, not a file")
    return "savedmodel"


def mar_files(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.suffix == ".mar" and p.is_file())


def inspect_mar(root: Path, model_name: str) -> str:
    archives = mar_files(root)
    if len(archives) > 1:
        names = ", ".join(p.name for p in archives)
        raise ArtifactError(f"a pytorch model folder holds exactly one .mar archive, this one has {names}")
    manifest = read_mar_manifest(archives[0])
    name = (manifest.get("model") or {}).get("modelName")
    if name != model_name:
        raise ArtifactError(f"{archives[0].name} archives the model {name!r} but the model is named {model_name!r}: "
                            "a PyTorch model's name must be the name given to torch-model-archiver --model-name")
    return "mar"


def read_mar_manifest(archive: Path) -> dict:
    """The archive's MANIFEST.json, after checking every member stays inside the folder it is unpacked to."""
    if not zipfile.is_zipfile(archive):
        raise ArtifactError(f"{archive.name} is not a model archive (torch-model-archiver writes a zip file)")
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        unsafe = [n for n in names if not safe_member(n)]
        if unsafe:
            raise ArtifactError(f"{archive.name} holds a path outside the archive: {unsafe[0]}")
        if MAR_MANIFEST not in names:
            raise ArtifactError(f"{archive.name} has no {MAR_MANIFEST}: build it with torch-model-archiver")
        try:
            manifest = json.loads(zf.read(MAR_MANIFEST))
        except ValueError as e:
            raise ArtifactError(f"{archive.name}: {MAR_MANIFEST} is not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{archive.name}: {MAR_MANIFEST} is not a JSON object")
    return manifest


def safe_member(name: str) -> bool:
    """Whether a zip member's name, unpacked under a folder, stays inside that folder."""
    path = PurePosixPath(name.replace("\\", "/"))
    return bool(name) and not path.is_absolute() and ".." not in path.parts and ":" not in path.parts[0]


def weight_files(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())


def inspect_pytorch(root: Path) -> str:
    missing = [name for name in ("model.py", "handler.py") if not (root / name).is_file()]
    weights = weight_files(root)
    if not weights:
        missing.append("a weight file (.pt, .pth or .bin)")
    if missing:
        raise ArtifactError("a pytorch model is a .mar archive or model.py, handler.py and one weight file "
                            f"(.pt, .pth or .bin); missing: {', '.join(missing)}")
    if len(weights) > 1:
        names = ", ".join(p.name for p in weights)
        raise ArtifactError(f"a pytorch model has one weight file, this one has {names}: move the others to extra/")
    tree = parse_source(root / "handler.py")
    has_class = any(isinstance(node, ast.ClassDef) for node in tree.body)
    if not has_class and "handle" not in functions(tree):
        raise ArtifactError("handler.py must define a TorchServe handler: a class with initialize(context) and "
                            "handle(data, context), or a function handle(data, context)")
    parse_source(root / "model.py")
    return "pytorch"


def inspect_python(root: Path) -> str:
    handler = root / "handler.py"
    if not handler.is_file():
        raise ArtifactError("a python model needs handler.py defining load(model_dir) and predict(model, instances)")
    defined = functions(parse_source(handler))
    for name, arity in (("load", 1), ("predict", 2)):
        if name not in defined:
            raise ArtifactError(f"handler.py defines no function {name}: a python model's handler.py defines "
                                "load(model_dir) and predict(model, instances)")
        if not accepts(defined[name], arity):
            raise ArtifactError(f"handler.py: {name} must take {arity} positional argument{'s' * (arity > 1)}")
    return "python"


def parse_source(path: Path) -> ast.Module:
    try:
        return ast.parse(path.read_bytes(), path.name)
    except SyntaxError as e:
        raise ArtifactError(f"{path.name} line {e.lineno}: {e.msg}") from None
    except ValueError as e:  # null bytes
        raise ArtifactError(f"{path.name} is not Python source ({e})") from None


def functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    """The module's top-level (synchronous) functions by name; the last definition wins, as at import."""
    return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}


def accepts(function: ast.FunctionDef, count: int) -> bool:
    """Whether ``function`` can be called with ``count`` positional arguments."""
    args = function.args
    positional = len(args.posonlyargs) + len(args.args)
    required = positional - len(args.defaults)
    required_keywords = [d for d in args.kw_defaults if d is None]
    return required <= count and (positional >= count or args.vararg is not None) and not required_keywords
