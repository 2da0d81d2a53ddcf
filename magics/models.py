"""``nothing model ls|show|create|edit|rm``: models (EasyMaker's 모델) from a terminal.

A model is made from a COMPLETE run (``--run``), a COMPLETE tuning's best trial (``--tuning``), a local
folder (``--upload``, packed as code snapshots are) or a server folder an admin allows (``--server-path``);
see docs/models.md.  The older forms stay: ``nothing model ls RUN`` lists a run's checkpoints and
``nothing model rm RUN NAME|PATTERN ...`` deletes them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .client import NothingClient, NothingError
from .snapshot import collect_files, pack_directory
from .tracking_cli import human_bytes, table, tracking_command


def parse_tags(items: list[str]) -> dict[str, str]:
    """``["stage=prod", "owner=ml"]`` → ``{"stage": "prod", "owner": "ml"}`` (the service checks the limits)."""
    tags = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise NothingError(f"a tag is KEY=VALUE, not {item!r}")
        tags[key] = value
    return tags


def pack_folder(path: str) -> bytes:
    """The local folder as a .tar.gz, as a code snapshot is packed (``.nothingignore`` honoured; links that
    lead out left out; the service keeps only regular files and folders)."""
    root = Path(path)
    if not root.is_dir():
        raise NothingError(f"{path} is not a folder: --upload takes the model's folder")
    files, _ = collect_files(root)
    return pack_directory(files)


def source_text(model: dict) -> str:
    source = model["source"]
    if source["kind"] == "run":
        return f"run {source['run_id']}" + (f" ({source['path']})" if source["path"] != "model" else "")
    if source["kind"] == "tuning":
        return f"tuning {source['tuning_id']} (run {source['run_id']})"
    if source["kind"] == "path":
        return source["path"]
    return "upload"


def models_table(rows: list[dict]) -> str:
    if not rows:
        return "no models"
    return table([[str(m["id"]), m["name"], m["owner"], m["group"] or "-",
                   m["framework"] + (f" {m['framework_version']}" if m["framework_version"] else ""), m["format"],
                   human_bytes(m["size_bytes"]), source_text(m),
                   ", ".join(f"{k}={v}" for k, v in sorted(m["tags"].items())) or "-"] for m in rows],
                 ["ID", "NAME", "OWNER", "GROUP", "FRAMEWORK", "FORMAT", "SIZE", "SOURCE", "TAGS"])


def create_body(args: argparse.Namespace) -> tuple[dict, bytes | None]:
    """The request body of ``nothing model create`` and, for ``--upload``, the packed folder."""
    body: dict = {"name": args.name, "framework": args.framework}
    for key, value in (("framework_version", args.framework_version), ("description", args.description),
                       ("group", args.group)):
        if value:
            body[key] = value
    if args.tag:
        body["tags"] = parse_tags(args.tag)
    if args.path is not None and args.run is None:
        raise NothingError("--path is a folder inside a run's folder: use it with --run")
    if args.run is not None:
        body["source"] = {"run": args.run, **({"path": args.path} if args.path else {})}
    elif args.tuning is not None:
        body["source"] = {"tuning": args.tuning}
    elif args.server_path is not None:
        body["source"] = {"server_path": args.server_path}
    else:
        return body, pack_folder(args.upload)
    return body, None


def model_command(client: NothingClient, args: argparse.Namespace) -> int:
    cmd = args.model_command
    if cmd == "ls" and args.run is not None or cmd == "rm" and args.checkpoint:
        if cmd == "rm":
            if not args.ref.isdigit():
                raise NothingError("nothing model rm RUN NAME ... deletes a run's checkpoints: RUN is a run's id")
            args.run = int(args.ref)
        return tracking_command(client, "model", args)
    if cmd == "ls":
        print(models_table(client.models(everyone=args.all)))
    elif cmd == "show":
        print(json.dumps(client.model(args.ref), indent=2))
    elif cmd == "create":
        body, archive = create_body(args)
        m = client.create_model(body, archive)
        print(f"model {m['id']} {m['name']!r} created: {m['framework']} ({m['format']}), "
              f"{human_bytes(m['size_bytes'])}, from {source_text(m)}")
    elif cmd == "edit":
        changes: dict = {}
        if args.new_name:
            changes["name"] = args.new_name
        if args.description is not None:
            changes["description"] = args.description
        if args.tag or args.clear_tags:
            tags = {} if args.clear_tags else dict(client.model(args.ref)["tags"])
            tags.update(parse_tags(args.tag))
            changes["tags"] = tags
        if not changes:
            raise NothingError("nothing model edit REF needs --name, --description, --tag or --clear-tags")
        m = client.update_model(args.ref, changes)
        print(f"model {m['id']} {m['name']!r} changed")
    elif cmd == "rm":
        client.delete_model(args.ref)
        print(f"model {args.ref} deleted")
    return 0


def add_model_parser(sub) -> None:
    model = sub.add_parser("model", help="models: ls, show, create, edit, rm (and a run's checkpoints: ls RUN, "
                                         "rm RUN NAME)")
    ms = model.add_subparsers(dest="model_command", required=True)
    ls = ms.add_parser("ls", help="your models and your groups'; with RUN, that run's checkpoints")
    ls.add_argument("run", type=int, nargs="?", help="a run's id: list its checkpoints (NSML's model ls)")
    ls.add_argument("--all", action="store_true", help="every user's models (admins)")
    ms.add_parser("show", help="one model, as JSON").add_argument("ref", metavar="NAME|ID")
    create = ms.add_parser("create", help="make a model from a COMPLETE run or tuning, a folder or a server path")
    create.add_argument("name")
    create.add_argument("--framework", required=True, choices=["tensorflow", "pytorch", "python"])
    create.add_argument("--framework-version", default="", help="e.g. 2.15")
    where = create.add_mutually_exclusive_group(required=True)
    where.add_argument("--run", type=int, help="a COMPLETE run: its model folder (EM_MODEL_DIR)")
    where.add_argument("--tuning", type=int, help="a COMPLETE tuning: its best trial's model folder")
    where.add_argument("--upload", metavar="DIR", help="a local folder, uploaded")
    where.add_argument("--server-path", metavar="PATH", help="a server folder under c.Models.allowed_roots")
    create.add_argument("--path", default=None, help="with --run: another folder inside the run's (default: model)")
    create.add_argument("--description", default="")
    create.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="up to 10")
    create.add_argument("--group", default=None, help="the group that owns it (one of yours)")
    edit = ms.add_parser("edit", help="change a model's name, description or tags")
    edit.add_argument("ref", metavar="NAME|ID")
    edit.add_argument("--name", dest="new_name", default=None)
    edit.add_argument("--description", default=None)
    edit.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE", help="add or replace a tag")
    edit.add_argument("--clear-tags", action="store_true", help="remove the tags (then add the --tag ones)")
    rm = ms.add_parser("rm", help="delete a model (with RUN NAME ...: a run's checkpoints)")
    rm.add_argument("ref", metavar="NAME|ID|RUN")
    rm.add_argument("checkpoint", nargs="*", help="with a run's id: its checkpoints to delete, by name or pattern")
