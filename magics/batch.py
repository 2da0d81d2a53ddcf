"""``nothing batch ls|create|show|stop|copy|rm|results``: batch inference (배치 추론) from a terminal.

``create NAME --model M --input dataset:D|run:ID/path --type json|jsonl`` runs model M over every
matching input file as one job (docs/batch-inference.md); ``results ID --download DIR`` fetches the
result files, one ``<input path>.result.jsonl`` per input file, and ``_summary.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path, PurePosixPath
from typing import Any

from .client import NothingClient, NothingError
from .options import OptionError
from .tracking_cli import table

ENDED = {"COMPLETE", "STOPPED", "FAIL BATCH INFERENCE", "CREATE FAILED"}


# ---------------------------------------------------------------- calls (the service's /batch-inferences)
def batches(client: NothingClient) -> list[dict]:
    return client._request("GET", "/batch-inferences", retry=True).json()["batch_inferences"]


def batch(client: NothingClient, batch_id: int) -> dict:
    return client._request("GET", f"/batch-inferences/{int(batch_id)}", retry=True).json()


def create(client: NothingClient, body: dict[str, Any]) -> dict:
    """Not retried: a batch inference has no Idempotency-Key, a second attempt would make a second one."""
    return client._request("POST", "/batch-inferences", json=body).json()


def stop(client: NothingClient, batch_id: int) -> dict:
    return client._request("POST", f"/batch-inferences/{int(batch_id)}/stop").json()


def copy(client: NothingClient, batch_id: int, overrides: dict[str, Any] | None = None) -> dict:
    return client._request("POST", f"/batch-inferences/{int(batch_id)}/copy", json=overrides or {}).json()


def remove(client: NothingClient, batch_id: int) -> None:
    client._request("DELETE", f"/batch-inferences/{int(batch_id)}")


def results(client: NothingClient, batch_id: int) -> dict:
    return client._request("GET", f"/batch-inferences/{int(batch_id)}/results", retry=True).json()


def download(client: NothingClient, batch_id: int, dest: str | Path) -> list[Path]:
    """Every result file into ``dest``, keeping the input's folders (``output/`` left off); returns the files."""
    dest = Path(dest)
    written = []
    for entry in results(client, batch_id)["files"]:
        parts = PurePosixPath(entry["path"]).parts[1:]  # output/<relative path>
        if not parts or any(p in ("", ".", "..") for p in parts):
            continue
        target = dest.joinpath(*parts)
        r = client._request("GET", "/" + entry["results_href"], stream=True, retry=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as f:
            for chunk in r.iter_content(chunk_size=1024 * 1024):
                f.write(chunk)
        written.append(target)
    return written


# ---------------------------------------------------------------- options and printing
def body_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The request body from ``nothing batch create``'s options, checked before the service is asked."""
    body: dict[str, Any] = {"name": args.name, "model": args.model, "input_path": args.input,
                            "input_type": args.type.upper()}
    if not args.input.startswith(("dataset:", "run:")):
        raise OptionError(f"--input {args.input!r} must be dataset:NAME[:VERSION] or run:ID[/PATH]")
    for key, value in (("include_glob", args.include), ("exclude_glob", args.exclude)):
        if value:
            body[key] = value
    for key in ("batch_size", "instances", "gpus", "cpus"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    if args.timeout is not None:
        body["timeout_seconds"] = args.timeout
    for key in ("max_time", "memory", "group", "description"):
        if getattr(args, key):
            body[key] = getattr(args, key)
    if args.tag:
        tags = {}
        for item in args.tag:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise OptionError(f"--tag {item!r} must be KEY=VALUE")
            tags[key] = value
        body["tags"] = tags
    return body


def _elapsed(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, s = divmod(int(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}:{m:02d}:{s:02d}"


def status_text(b: dict) -> str:
    """One line: ``batch inference 4 'score' COMPLETE: 5 files, 120 records, 2 error records (0:00:07)``."""
    s = b.get("summary") or {}
    counts = f": {s.get('files', 0)} files, {s.get('records', 0)} records, {s.get('errors', 0)} error records" \
        if s else ""
    reason = f" ({b['reason']})" if b.get("reason") and not s else ""
    return f"batch inference {b['id']} {b['name']!r} {b['state']}{counts}{reason} [{_elapsed(b['elapsed_seconds'])}]"


def batches_table(rows: list[dict]) -> str:
    if not rows:
        return "no batch inferences"
    return table([[str(b["id"]), b["name"], b["state"], b["model"]["name"] or str(b["model"]["id"]), b["input_path"],
                   str((b.get("summary") or {}).get("records", "-")), str((b.get("summary") or {}).get("errors", "-")),
                   _elapsed(b["elapsed_seconds"]), str(b["run_id"] or "-")] for b in rows],
                 ["ID", "NAME", "STATE", "MODEL", "INPUT", "RECORDS", "ERRORS", "ELAPSED", "RUN"])


def batch_command(client: NothingClient, args: argparse.Namespace) -> int:
    cmd = args.batch_command
    if cmd == "ls":
        print(batches_table(batches(client)))
    elif cmd == "create":
        created = create(client, body_from_args(args))
        print(status_text(created))
        if args.wait:
            print(status_text(wait(client, created["id"])))
    elif cmd == "show":
        print(json.dumps(batch(client, args.batch), indent=2))
    elif cmd == "stop":
        print(status_text(stop(client, args.batch)))
    elif cmd == "copy":
        over: dict[str, Any] = json.loads(args.set) if args.set else {}
        if args.name:
            over["name"] = args.name
        print(status_text(copy(client, args.batch, over)))
    elif cmd == "rm":
        remove(client, args.batch)
        print(f"batch inference {args.batch} deleted")
    elif args.download:
        files = download(client, args.batch, args.download)
        print("\n".join(str(f) for f in files) if files else f"batch inference {args.batch} has no results")
    else:
        found = results(client, args.batch)
        print(json.dumps(found["summary"], indent=2) if found["summary"] else "no summary yet")
        print(table([[f["path"], str(f["size"])] for f in found["files"]], ["FILE", "BYTES"]) if found["files"]
              else "no result files")
    return 0


def wait(client: NothingClient, batch_id: int, timeout: float | None = None, interval: float = 1.0) -> dict:
    import time

    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        b = batch(client, batch_id)
        if b["state"] in ENDED:
            return b
        if deadline is not None and time.monotonic() > deadline:
            raise NothingError(f"batch inference {batch_id} is still {b['state']}")
        time.sleep(interval)


def add_batch_parser(sub) -> None:
    bp = sub.add_parser("batch", help="batch inference: create, ls, show, stop, copy, rm, results")
    bs = bp.add_subparsers(dest="batch_command", required=True)
    bs.add_parser("ls", help="your batch inferences and your groups'")
    c = bs.add_parser("create", help="run a model over a folder of JSON or JSONL files")
    c.add_argument("name")
    c.add_argument("--model", required=True, help="the model's name or id")
    c.add_argument("--input", required=True, metavar="dataset:NAME[:VERSION]|run:ID[/PATH]",
                   help="a dataset, or a folder of one of your runs (default its output/)")
    c.add_argument("--type", required=True, type=str.lower, choices=("json", "jsonl"),
                   help="json: each file a list of records; jsonl: a record per line")
    c.add_argument("--include", action="append", default=[], metavar="GLOB",
                   help="files to read (default **/*.json or **/*.jsonl); repeatable")
    c.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="files to skip even when included (exclude wins); repeatable")
    c.add_argument("--batch-size", type=int, default=None, help="records per inference request (default 32)")
    c.add_argument("--timeout", type=float, default=None, help="seconds one request may take (default 60)")
    c.add_argument("--instances", type=int, default=None, help="model processes in parallel (1-16, default 1)")
    c.add_argument("--max-time", default=None, help="end the job after this long, e.g. 1h (it then fails)")
    c.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE")
    c.add_argument("--gpus", type=int, default=None)
    c.add_argument("--cpus", type=int, default=None, help="default: one per instance")
    c.add_argument("--memory", default=None, help="e.g. 8G")
    c.add_argument("--group", default=None, help="the group that owns it and is charged")
    c.add_argument("--description", default=None)
    c.add_argument("--wait", action="store_true", help="wait until it has ended")
    for name, text in (("show", "one batch inference as JSON"), ("stop", "stop one in progress"),
                       ("rm", "delete an ended one with its job's run and results")):
        bs.add_parser(name, help=text).add_argument("batch", type=int)
    cp = bs.add_parser("copy", help="a new batch inference with the same settings")
    cp.add_argument("batch", type=int)
    cp.add_argument("--name", default=None)
    cp.add_argument("--set", default=None, metavar="JSON", help='fields to change, e.g. \'{"batch_size": 8}\'')
    res = bs.add_parser("results", help="the summary and the result files")
    res.add_argument("batch", type=int)
    res.add_argument("--download", default=None, metavar="DIR", help="fetch the result files into DIR")

