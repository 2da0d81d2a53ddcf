"""Models (EasyMaker's 모델): an artifact copied into the platform's model store, with its fields and rules.

A model is made from a COMPLETE run's ``model/`` folder (``EM_MODEL_DIR``, or another folder inside the
run's), from a COMPLETE tuning's best trial's run, from an uploaded .tar.gz, or from a server folder under
``c.Models.allowed_roots``.  Whatever the source, the artifact is copied: what an endpoint serves cannot
change under it, and deleting the run's files later cannot break it.

The store (``<data_dir>/models``) is root's, mode 0700; each model's folder inside it
(``<id>-<token>/``) is 0755 with files 0644, so a model-server run reads it only through a read-only
bind of that one folder, as runs read datasets.  The store holds regular files and folders only:
symlinks and special files of a source are never followed nor copied (``skipped``).

Sources are user-owned folders: they are read through folder descriptors, every component opened
with ``O_NOFOLLOW``; a file is opened without following a link and checked (a regular file, of the
run's own Unix account) on the descriptor it is then read through, and the copy stops at a byte and a
file limit.  These functions block: the service runs them in a thread (copies) or its helper process
(unpacking an upload), never on the event loop.  The database functions take a session first and run
on the database thread (``Database.run``).

Rules: a model that a stage resource uses, or that a batch inference not yet ended reads, cannot be
deleted; a run or a tuning a model was made from cannot be deleted (``tracking_store.RUN_DELETION_RULES``,
``tuning.deletion_blockers``).  Each refusal names what is in the way.
"""

from __future__ import annotations

import os
import posixpath
import re
import secrets
import shutil
import stat
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from traitlets import Integer, List, Unicode
from traitlets.config import LoggingConfigurable

from .nofollow import DIR_FLAGS, READ_FLAGS, open_below
from .orm import BatchInference, Endpoint, EndpointStage, Model, Run, StageResource
from .serving_runtime.artifacts import FRAMEWORKS
from .serving_states import BATCH_TERMINAL
from .snapshot import SnapshotError, SnapshotLimits, unpack

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")
MAX_DESCRIPTION = 10_000
MAX_FRAMEWORK_VERSION = 64
MAX_TAGS = 10
MAX_TAG_KEY = 64
MAX_TAG_VALUE = 256
MAX_PATH_CHARS = 1024
MAX_DEPTH = 64
DEFAULT_RUN_PATH = "model"  # EM_MODEL_DIR, inside the run's folder
SOURCE_KINDS = ("run", "tuning", "upload", "path")
CREATE_FIELDS = frozenset({"name", "description", "framework", "framework_version", "tags", "group", "source"})
CHANGE_FIELDS = frozenset({"name", "description", "tags"})
STAGING_PREFIX = ".incoming-"
CHUNK = 1024 * 1024

_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class ModelError(ValueError):
    """A model's field or source that cannot be accepted; ``status`` is the HTTP answer, the message says why."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status

    def __reduce__(self):  # raised in the helper process, it comes back with its status
        return type(self), (str(self), self.status)


# ---------------------------------------------------------------- fields (pure)
@dataclass(frozen=True)
class Source:
    """Where the artifact comes from: ``kind`` and, for a run, the folder inside its own (``path``)."""

    kind: str
    run_id: int | None = None
    tuning_id: int | None = None
    path: str = ""
    upload: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class NewModel:
    name: str
    framework: str
    description: str = ""
    framework_version: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    group: str = ""
    source: Source = Source("upload")


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not MODEL_NAME.fullmatch(name) or name.isdigit():
        raise ModelError(f"model name {str(name)[:60]!r} must be 1-100 letters, digits, _, . or -, starting with a "
                         "letter or digit, and not a number alone")
    return name


def check_description(description: Any) -> str:
    if description is None:
        return ""
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION or "\0" in description:
        raise ModelError(f"description must be text of at most {MAX_DESCRIPTION} characters")
    return description


def check_tags(tags: Any) -> dict[str, str]:
    """At most 10 tags, as the seed allows: ``{"key": "value"}``, keys 1-64 characters, values at most 256."""
    if tags is None:
        return {}
    if not isinstance(tags, dict):
        raise ModelError('tags must be an object of key: value text, e.g. {"stage": "prod"}')
    if len(tags) > MAX_TAGS:
        raise ModelError(f"a model has at most {MAX_TAGS} tags, not {len(tags)}")
    for key, value in tags.items():
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_TAG_KEY or not key.strip() or "\0" in key:
            raise ModelError(f"tag key {str(key)[:80]!r} must be 1-{MAX_TAG_KEY} characters")
        if not isinstance(value, str) or len(value) > MAX_TAG_VALUE or "\0" in value:
            raise ModelError(f"the value of tag {key!r} must be text of at most {MAX_TAG_VALUE} characters")
    return dict(tags)


def check_relative_path(path: Any) -> str:
    """A folder inside a run's folder: relative, normalised, without ``..``; ``model`` when not given."""
    if path is None or path == "":
        return DEFAULT_RUN_PATH
    if not isinstance(path, str) or len(path) > MAX_PATH_CHARS or "\0" in path or "\\" in path:
        raise ModelError(f"path must be a folder inside the run's folder, at most {MAX_PATH_CHARS} characters")
    norm = posixpath.normpath(path.strip("/"))
    if path.startswith("/") or norm in (".", "..") or norm.startswith("../") or \
            any(part in ("", ".", "..") for part in norm.split("/")):
        raise ModelError(f"path {path[:100]!r} must be a folder inside the run's folder, such as 'model' or "
                         "'checkpoints/epoch-3'")
    return norm


def _whole(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or \
            (isinstance(value, str) and not value.strip().isdigit()) or not 0 <= int(value) < 2**63:
        raise ModelError(f"{what} must be the id of a {what}, a whole number")
    return int(value)


def parse_source(raw: Any) -> Source:
    """``{"run": ID, "path"?: P}``, ``{"tuning": ID}``, ``{"upload": base64 .tar.gz}`` or ``{"server_path": P}``."""
    import base64
    import binascii

    shapes = ('source must be one of {"run": ID, "path": "model"}, {"tuning": ID}, {"upload": "<base64 .tar.gz>"} '
              'or {"server_path": "/abs/path"}')
    if not isinstance(raw, dict):
        raise ModelError(shapes)
    kinds = [k for k in ("run", "tuning", "upload", "server_path") if k in raw]
    if len(kinds) != 1 or set(raw) - {kinds[0], "path"} or ("path" in raw and kinds[0] != "run"):
        raise ModelError(shapes)
    kind = kinds[0]
    if kind == "run":
        return Source("run", run_id=_whole(raw["run"], "run"), path=check_relative_path(raw.get("path")))
    if kind == "tuning":
        return Source("tuning", tuning_id=_whole(raw["tuning"], "tuning"), path=DEFAULT_RUN_PATH)
    if kind == "upload":
        if not isinstance(raw["upload"], str):
            raise ModelError("source.upload must be the model folder as a base64-encoded .tar.gz")
        try:
            data = base64.b64decode(raw["upload"], validate=True)
        except (binascii.Error, ValueError):
            raise ModelError("source.upload is not valid base64") from None
        return Source("upload", upload=data)
    path = raw["server_path"]
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path or len(path) > 4096:
        raise ModelError("source.server_path must be an absolute server path")
    return Source("path", path=path)


def parse_new_model(body: Any, upload: bytes | None = None) -> NewModel:
    """The body of ``POST /api/models``; with ``upload`` (a multipart file) the body names no source."""
    if not isinstance(body, dict):
        raise ModelError("a model is a JSON object")
    unknown = sorted(map(str, set(body) - CREATE_FIELDS))
    if unknown:
        raise ModelError(f"unknown field(s) {', '.join(unknown)[:200]}; allowed: {', '.join(sorted(CREATE_FIELDS))}")
    framework = body.get("framework")
    if framework not in FRAMEWORKS:
        raise ModelError(f"framework {str(framework)[:40]!r} is not one of {', '.join(FRAMEWORKS)}")
    version = body.get("framework_version") or ""
    if not isinstance(version, str) or len(version) > MAX_FRAMEWORK_VERSION or "\0" in version:
        raise ModelError(f"framework_version must be text of at most {MAX_FRAMEWORK_VERSION} characters, "
                         "e.g. '2.15'")
    group = body.get("group") or ""
    if not isinstance(group, str) or len(group) > 255 or "\0" in group:
        raise ModelError("group must be the name of one of your groups")
    if upload is not None:
        if body.get("source") is not None:
            raise ModelError("a multipart model takes its artifact from the 'archive' file: leave out 'source'")
        source = Source("upload", upload=upload)
    else:
        source = parse_source(body.get("source"))
    return NewModel(name=check_name(body.get("name")), framework=framework,
                    description=check_description(body.get("description")), framework_version=version,
                    tags=check_tags(body.get("tags")), group=group, source=source)


def parse_changes(body: Any) -> dict[str, Any]:
    """The body of ``PATCH``: only name, description and tags (the whole set of tags) can change."""
    if not isinstance(body, dict) or not body:
        raise ModelError('send the fields to change: {"name"?, "description"?, "tags"?}')
    other = sorted(map(str, set(body) - CHANGE_FIELDS))
    if other:
        raise ModelError(f"only name, description and tags can be changed, not {', '.join(other)[:200]} (make a "
                         "new model for another artifact or framework)")
    changes: dict[str, Any] = {}
    if "name" in body:
        changes["name"] = check_name(body["name"])
    if "description" in body:
        changes["description"] = check_description(body["description"])
    if "tags" in body:
        changes["tags"] = check_tags(body["tags"])
    return changes


# ---------------------------------------------------------------- the store's files (blocking)
@dataclass
class Copied:
    files: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)

    def note(self) -> str:
        """What was left out, for a refusal's message ("" when nothing was)."""
        if not self.skipped:
            return ""
        shown = ", ".join(self.skipped[:5]) + (f" and {len(self.skipped) - 5} more" if len(self.skipped) > 5 else "")
        return f" (not copied, as links and special files never are: {shown})"


def open_folder_below(top: str, relative: str, what: str) -> int:
    """A descriptor of the folder ``top/relative``; no component may be a link (ModelError otherwise)."""
    fd = os.open(top, DIR_FLAGS)
    for part in [p for p in relative.split("/") if p]:
        try:
            child = os.open(part, DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            os.close(fd)
            raise ModelError(f"{what} has no folder {relative!r}") from None
        except OSError:  # ELOOP (a link), ENOTDIR (a file)
            os.close(fd)
            raise ModelError(f"{relative!r} in {what} is not a folder (a link is never followed)") from None
        os.close(fd)
        fd = child
    return fd


def copy_tree(src: int, dst: int, max_bytes: int, max_files: int, owner_uid: int | None) -> Copied:
    """Copy the regular files and folders below ``src`` into the empty folder ``dst`` (folders 0755, files 0644).

    Links and special files are skipped, and with ``owner_uid`` so is any file of another owner (a hard
    link to someone else's file).  ModelError past ``max_bytes`` or ``max_files``.  ``src`` and ``dst`` stay
    open (the caller's).
    """
    done = Copied()
    pending: list[tuple[str, ...]] = [()]
    while pending:
        parts = pending.pop()
        s = open_below(src, parts)
        if s is not None and owner_uid is not None and os.fstat(s).st_uid != owner_uid:
            os.close(s)
            s = None
        if s is None:  # swapped for a link or another's folder since it was listed
            done.skipped.append("/".join(parts))
            continue
        d = open_below(dst, parts)
        assert d is not None  # made by us just before, in a folder nobody else can reach
        prefix = "".join(p + "/" for p in parts)
        try:
            with os.scandir(s) as entries:
                listing = sorted((e.name, e.stat(follow_symlinks=False)) for e in entries)
            for name, st in listing:
                if stat.S_ISDIR(st.st_mode) and (owner_uid is None or st.st_uid == owner_uid):
                    if len(parts) >= MAX_DEPTH:
                        raise ModelError(f"the model folder is nested deeper than {MAX_DEPTH} folders "
                                         f"(at {prefix}{name})")
                    os.mkdir(name, 0o755, dir_fd=d)
                    _chmod_at(d, name, 0o755, DIR_FLAGS)
                    pending.append((*parts, name))
                elif stat.S_ISREG(st.st_mode):
                    if not _copy_file(s, d, name, owner_uid, done, max_bytes):
                        done.skipped.append(prefix + name)
                        continue
                    if done.files > max_files:
                        raise ModelError(f"the model folder holds more than {max_files} files, the limit")
                else:
                    done.skipped.append(prefix + name)
        finally:
            os.close(s)
            os.close(d)
    return done


def _chmod_at(dir_fd: int, name: str, mode: int, flags: int) -> None:
    """chmod without following a link (Linux has no lchmod): through a descriptor opened with ``O_NOFOLLOW``."""
    fd = os.open(name, flags, dir_fd=dir_fd)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _copy_file(src: int, dst: int, name: str, owner_uid: int | None, done: Copied, max_bytes: int) -> bool:
    """Copy one file, checked on the descriptor it is read through; False when it is not one to copy."""
    try:
        fd = os.open(name, READ_FLAGS, dir_fd=src)
    except OSError:
        return False  # a link (ELOOP), or gone meanwhile
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (owner_uid is not None and st.st_uid != owner_uid):
            return False
        out = os.open(name, _WRITE_FLAGS, 0o644, dir_fd=dst)
        try:
            os.fchmod(out, 0o644)
            while True:
                chunk = os.read(fd, CHUNK)
                if not chunk:
                    break
                done.bytes += len(chunk)
                if done.bytes > max_bytes:
                    raise ModelError(f"the model folder holds more than {max_bytes} bytes, the limit for a model")
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view):]
            os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(out)
    finally:
        os.close(fd)
    done.files += 1
    return True


def copy_folder(top: str, relative: str, dest: str, max_bytes: int, max_files: int, owner_uid: int | None,
                what: str) -> Copied:
    """Copy the folder ``top/relative`` (no link followed on the way) into ``dest``, made here (root's, 0755).

    On any failure ``dest`` is removed.
    """
    src = open_folder_below(top, relative, what)
    try:
        if owner_uid is not None and os.fstat(src).st_uid != owner_uid:
            raise ModelError(f"{relative!r} in {what} is not the run's own folder")
        os.mkdir(dest, 0o700)
        try:
            dst = os.open(dest, DIR_FLAGS)
            try:
                done = copy_tree(src, dst, max_bytes, max_files, owner_uid)
                os.fchmod(dst, 0o755)
            finally:
                os.close(dst)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
    finally:
        os.close(src)
    return done


def unpack_upload(data: bytes, dest: str, max_bytes: int, max_files: int) -> Copied:
    """Unpack an uploaded .tar.gz into ``dest`` with the snapshot's safe unpacking and limits, then keep only
    regular files and folders, made readable (0755/0644).  On any failure ``dest`` is removed."""
    try:
        unpack(data, dest, SnapshotLimits(max_unpacked_bytes=max_bytes, max_members=max_files))
    except SnapshotError as e:
        raise ModelError(f"the uploaded model: {str(e).replace('the code archive', 'the archive')}") from None
    try:
        return settle_tree(dest)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def settle_tree(dest: str) -> Copied:
    """Folders 0755, files 0644, links removed: what the store holds.  Returns what it holds."""
    done = Copied()
    top = os.open(dest, DIR_FLAGS)
    try:
        os.fchmod(top, 0o755)
        for folder, dirs, files, fd in os.fwalk(".", dir_fd=top):
            prefix = "" if folder == "." else folder[2:] + "/"
            kept = []
            for name in dirs + files:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    _chmod_at(fd, name, 0o755, DIR_FLAGS)
                    kept.append(name)
                elif stat.S_ISREG(st.st_mode):
                    _chmod_at(fd, name, 0o644, READ_FLAGS)
                    done.files += 1
                    done.bytes += st.st_size
                else:
                    os.unlink(name, dir_fd=fd)
                    done.skipped.append(prefix + name)
            dirs[:] = kept
    finally:
        os.close(top)
    return done


def allowed_folder(path: str, roots: list[str]) -> str:
    """The real path of a server folder under one of ``roots`` (every link resolved); ModelError (403) otherwise."""
    real = os.path.realpath(path)
    allowed = [os.path.realpath(r) for r in roots]
    if not any(real == r or real.startswith(r.rstrip("/") + "/") for r in allowed):
        shown = ", ".join(roots) or "none: c.Models.allowed_roots is empty"
        raise ModelError(f"{path[:200]} is not under a folder models may be registered from ({shown})", 403)
    if not os.path.isdir(real):
        raise ModelError(f"{path[:200]} is not a folder")
    return real


def remove_folder(path: str) -> None:
    """Remove a model's folder (never following a link)."""
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass


class Models(LoggingConfigurable):
    """The model store: where artifacts are copied, from where admins allow them, and how large they may be."""

    allowed_roots = List(
        Unicode(),
        help="""Server folders models may be registered from (``"source": {"server_path": ...}``), e.g. a shared
        NFS folder of exported models. A path is allowed when it is under one of these once every link is
        resolved; its files are copied into the model store. Every user may register a model from them, so
        list only folders whose contents all users may read. Example:
        ``c.Models.allowed_roots = ["/mnt/nfs/models"]``""",
    ).tag(config=True)
    max_upload_bytes = Integer(
        256 * 1024**2,
        help="""Largest uploaded model (the .tar.gz as sent), in bytes. Larger models are better made from a run or
        a server folder. Example: ``c.Models.max_upload_bytes = 1024**3``""",
    ).tag(config=True)
    max_artifact_bytes = Integer(
        100 * 1024**3,
        help="""Largest model artifact, in bytes, whatever its source: a copy or an unpacked upload stops
        there and the model is refused. Example: ``c.Models.max_artifact_bytes = 20 * 1024**3``""",
    ).tag(config=True)
    max_files = Integer(
        100_000, help="Most files one model artifact may hold. Example: ``c.Models.max_files = 10000``"
    ).tag(config=True)
    store_dir = Unicode(help="Where model artifacts are kept (default: <data_dir>/models).").tag(config=True)

    def __init__(self, data_dir: str, **kwargs):
        super().__init__(**kwargs)
        self.root = Path(self.store_dir or Path(data_dir) / "models")

    def prepare(self) -> None:
        """The store folder (root's, 0700), without what an interrupted creation left."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        for leftover in self.root.glob(STAGING_PREFIX + "*"):
            remove_folder(str(leftover))

    def staging(self) -> str:
        """A path for a new artifact being copied (not yet made)."""
        return str(self.root / f"{STAGING_PREFIX}{secrets.token_hex(8)}")


def artifact_folder(root: str, model_id: int, token: str) -> str:
    return str(Path(root) / f"{model_id}-{token}")


# ---------------------------------------------------------------- database work (on the database thread)
def insert_model(session: Session, values: dict, store_root: str, token: str) -> Model:
    """The new row; its artifact folder is ``<store>/<id>-<token>`` (the caller moves the copy there).

    ModelError (409) when the owner has a model of that name, or the source run or tuning is gone meanwhile.
    """
    if find_own(session, values["owner"], values["name"]) is not None:
        raise ModelError(f"you already have a model named {values['name']!r}", 409)
    if values.get("source_run_id") is not None and session.get(Run, values["source_run_id"]) is None:
        raise ModelError(f"run {values['source_run_id']} was deleted while the model was being made", 409)
    row = Model(**values, artifact_path="")
    session.add(row)
    session.flush()
    row.artifact_path = artifact_folder(store_root, row.id, token)
    return row


def get_model(session: Session, model_id: int) -> Model | None:
    return session.get(Model, model_id)


def find_own(session: Session, owner: str, name: str) -> Model | None:
    return session.scalar(select(Model).where(Model.owner == owner, Model.name == name))


def models_named(session: Session, name: str, groups: list[str]) -> list[Model]:
    """Models of that name shared with any of ``groups``."""
    if not groups:
        return []
    return list(session.scalars(select(Model).where(Model.name == name, Model.group.in_(groups)).order_by(Model.id)))


def list_models(session: Session, owner: str | None, groups: list[str]) -> list[Model]:
    """The caller's models and their groups' (``owner`` None: everyone's), by name."""
    q = select(Model).order_by(Model.name, Model.id)
    if owner is not None:
        q = q.where((Model.owner == owner) | ((Model.group != "") & Model.group.in_(groups or [""])))
    return list(session.scalars(q))


def run_names(session: Session, run_ids: list[int]) -> dict[int, str]:
    ids = sorted({i for i in run_ids if i is not None})
    if not ids:
        return {}
    return {i: n for i, n in session.execute(select(Run.id, Run.name).where(Run.id.in_(ids)))}


def update_model(session: Session, model_id: int, changes: dict[str, Any], at: datetime) -> Model | None:
    """Apply name/description/tags; ModelError (409) when the new name is another of the owner's models'."""
    row = session.get(Model, model_id)
    if row is None:
        return None
    new_name = changes.get("name")
    if new_name is not None and new_name != row.name:
        other = find_own(session, row.owner, new_name)
        if other is not None:
            raise ModelError(f"{row.owner} already has a model named {new_name!r} (model {other.id})", 409)
    for key, value in changes.items():
        setattr(row, key, value)
    row.updated_at = at
    session.flush()
    return row


def deletion_blockers(session: Session, model_id: int) -> list[str]:
    """Why the model cannot be deleted: the endpoint stages that serve it, the batch inferences still reading it."""
    reasons = [f"endpoint {endpoint!r} stage {stage!r} serves it at {path} (delete that stage resource first)"
               for endpoint, stage, path in session.execute(
                   select(Endpoint.name, EndpointStage.name, StageResource.resource_path)
                   .join(EndpointStage, StageResource.stage_id == EndpointStage.id)
                   .join(Endpoint, EndpointStage.endpoint_id == Endpoint.id)
                   .where(StageResource.model_id == model_id).order_by(StageResource.id))]
    reasons += [f"batch inference {i} {name!r} is {state} (wait for it to end, or stop it)"
                for i, name, state in session.execute(
                    select(BatchInference.id, BatchInference.name, BatchInference.state)
                    .where(BatchInference.model_id == model_id, BatchInference.state.not_in(list(BATCH_TERMINAL)))
                    .order_by(BatchInference.id))]
    return reasons


def delete_model(session: Session, model_id: int) -> list[str]:
    """Delete the row unless something uses the model: ``[]`` when deleted, else the blockers (nothing deleted)."""
    blockers = deletion_blockers(session, model_id)
    if not blockers:
        row = session.get(Model, model_id)
        if row is not None:
            session.delete(row)
    return blockers


def _made_from(session: Session, where) -> list[str]:
    return [f"model {i} {name!r} (of {owner}) was made from it: delete the model first"
            for i, name, owner in session.execute(select(Model.id, Model.name, Model.owner).where(where)
                                                  .order_by(Model.id))]


def models_made_from_run(session: Session, run_id: int) -> list[str]:
    """A run deletion rule (``tracking_store.RUN_DELETION_RULES``): the models made from the run."""
    return _made_from(session, Model.source_run_id == run_id)


def models_made_from_tuning(session: Session, tuning_id: int) -> list[str]:
    """For ``tuning.deletion_blockers``: the models made from the tuning's best trial."""
    return _made_from(session, Model.source_tuning_id == tuning_id)
