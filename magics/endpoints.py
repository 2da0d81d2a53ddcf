"""``nothing endpoint ...`` and ``nothing predict``: endpoints with stages (엔드포인트) from a terminal.

``nothing endpoint create NAME --model M`` serves a model at ``/inference`` of the endpoint's default stage;
``stage-create`` adds a stage to try a new model, ``set-default`` moves callers to it (the old default's
resources are removed, no request lost), ``stats`` shows a stage's API statistics. ``nothing predict NAME
FILE.json`` posts the file (``{"instances": [...]}``) to the default stage, or ``--stage S``. See docs/endpoints.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from urllib.parse import quote

from .client import NothingClient, NothingError
from .models import parse_tags
from .tracking_cli import table


def add_endpoint_parser(sub) -> None:
    ep = sub.add_parser("endpoint", help="endpoints that serve models: ls, show, create, stages, default, stats, rm")
    cmds = ep.add_subparsers(dest="endpoint_command", required=True)
    cmds.add_parser("ls", help="your endpoints and your groups'").add_argument("--all", action="store_true",
                                                                               help="every endpoint (admins)")
    cmds.add_parser("show", help="an endpoint, its stages and stage resources").add_argument("name")

    def resource_options(p, with_model_flag: bool = True) -> None:
        if with_model_flag:
            p.add_argument("--model", required=True, help="the model's name or id")
        p.add_argument("--path", default="/inference", help="the resource path callers POST to (/inference)")
        p.add_argument("--replicas", type=int, default=1, help="model-server replicas (the seed's pods)")
        p.add_argument("--cpus", type=int, default=1)
        p.add_argument("--memory", default=None, help="e.g. 2G")
        p.add_argument("--gpus", type=int, default=0, help="GPUs per replica, held for as long as it serves")

    create = cmds.add_parser("create", help="a new endpoint with its default stage serving a model: "
                                            "create MODEL, or create NAME --model MODEL")
    create.add_argument("name", help="the endpoint's name (with --model), or the model to serve (named after it)")
    resource_options(create, with_model_flag=False)
    create.add_argument("--model", default=None, help="the model's name or id (default: NAME is the model)")
    create.add_argument("--stage", default=None, help="the default stage's name (default)")
    create.add_argument("--description", default="")
    create.add_argument("--group", default=None, help="one of your groups: its members may call it")
    create.add_argument("--tag", action="append", default=[], help="KEY=VALUE (at most 10)")
    stage = cmds.add_parser("stage-create", help="a new stage on an endpoint, to try a model before the default")
    stage.add_argument("name")
    stage.add_argument("stage")
    resource_options(stage)
    stage.add_argument("--description", default="")
    res = cmds.add_parser("resource-add", help="serve another model at another path of a stage")
    res.add_argument("name")
    res.add_argument("stage")
    resource_options(res)
    rrm = cmds.add_parser("resource-rm", help="remove a stage resource")
    rrm.add_argument("name")
    rrm.add_argument("stage")
    rrm.add_argument("resource", type=int)
    default = cmds.add_parser("set-default", help="make an ACTIVE stage the default")
    default.add_argument("name")
    default.add_argument("stage")
    srm = cmds.add_parser("stage-rm", help="delete a stage that is not the default")
    srm.add_argument("name")
    srm.add_argument("stage")
    stats = cmds.add_parser("stats", help="a stage's API statistics: requests, errors, p50/p95/p99")
    stats.add_argument("name")
    stats.add_argument("stage", nargs="?", help="the stage (default: the default stage)")
    stats.add_argument("--minutes", type=int, default=60)
    cmds.add_parser("rm", help="delete an endpoint (only its default stage may be left)").add_argument("name")

    predict = sub.add_parser("predict", help="call an endpoint with a JSON file: {\"instances\": [...]}")
    predict.add_argument("name")
    predict.add_argument("file", help="the request body (a JSON file; - for standard input)")
    predict.add_argument("--stage", default=None, help="a named stage instead of the default")
    predict.add_argument("--path", default="/inference", help="the resource path (/inference)")


def _resource(args: argparse.Namespace) -> dict:
    body: dict = {"model": args.model, "resource_path": args.path, "replicas": args.replicas, "cpus": args.cpus,
                  "gpus": args.gpus}
    if args.memory:
        body["memory"] = args.memory
    return body


def endpoint_name_for(model: str) -> str:
    """An endpoint name (lower-case letters, digits, '-') from a model's name: ``ResNet_50.v2`` → ``resnet-50-v2``."""
    import re

    name = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")[:40].strip("-")
    if not name:
        raise NothingError(f"cannot name an endpoint after model {model!r}: give NAME --model {model}")
    return name


def endpoints_table(rows: list[dict]) -> str:
    if not rows:
        return "no endpoints"
    lines = []
    for e in rows:
        stages = ", ".join(f"{s['name']}{'*' if s['default'] else ''}:{s['state']}" for s in e["stages"])
        lines.append([e["name"], e["owner"], e["group"] or "-", e["state"], e["default_stage"] or "-", stages,
                      str(e["gpus"]), e["url"]])
    return table(lines, ["NAME", "OWNER", "GROUP", "STATE", "DEFAULT", "STAGES (*: default)", "GPUS", "URL"])


def endpoint_text(e: dict) -> str:
    out = [f"{e['name']}  {e['state']}  ({e['reason']})", f"  url: {e['url']}  default stage: {e['default_stage']}"]
    for s in e["stages"]:
        out.append(f"  stage {s['name']}{' (default)' if s['default'] else ''}: {s['state']} ({s['reason']})  "
                   f"{s['url']}")
        for r in s["resources"]:
            out.append(f"    #{r['id']} {r['resource_path']} <- model {r['model']['name']}: {r['state']} "
                       f"{r['ready_replicas']}/{r['replicas']} ready, {r['gpus']} GPUs each"
                       + (f", {r['restarts']} restarts" if r["restarts"] else ""))
            if r["state"] == "CREATE FAILED" and r["last_failure_log"]:
                out += ["      | " + line for line in r["last_failure_log"].splitlines()[-5:]]
    return "\n".join(out)


def endpoint_command(client: NothingClient, args: argparse.Namespace) -> int:
    cmd = args.endpoint_command
    name = quote(getattr(args, "name", "") or "", safe="")

    def call(method: str, path: str, **kwargs):
        return client._request(method, path, **kwargs)

    if cmd == "ls":
        print(endpoints_table(call("GET", "/endpoints", params={"all": "1"} if args.all else {}, retry=True)
                              .json()["endpoints"]))
    elif cmd == "show":
        print(endpoint_text(call("GET", f"/endpoints/{name}", retry=True).json()))
    elif cmd == "create":
        if args.model is None:  # ``nothing endpoint create MODEL``: the endpoint is named after the model
            args.model, args.name = args.name, endpoint_name_for(args.name)
        body = dict(_resource(args), name=args.name, description=args.description)
        if args.stage:
            body["stage"] = args.stage
        if args.group:
            body["group"] = args.group
        if args.tag:
            body["tags"] = parse_tags(args.tag)
        print(endpoint_text(call("POST", "/endpoints", json=body).json()))
    elif cmd == "stage-create":
        body = dict(_resource(args), name=args.stage, description=args.description)
        print(endpoint_text(call("POST", f"/endpoints/{name}/stages", json=body).json()))
    elif cmd == "resource-add":
        body = _resource(args)
        print(endpoint_text(call("POST", f"/endpoints/{name}/stages/{quote(args.stage, safe='')}/resources",
                                 json=body).json()))
    elif cmd == "resource-rm":
        call("DELETE", f"/endpoints/{name}/stages/{quote(args.stage, safe='')}/resources/{args.resource}")
        print(f"stage resource {args.resource} is being removed")
    elif cmd == "set-default":
        print(endpoint_text(call("POST", f"/endpoints/{name}/default-stage", json={"stage": args.stage}).json()))
    elif cmd == "stage-rm":
        call("DELETE", f"/endpoints/{name}/stages/{quote(args.stage, safe='')}")
        print(f"stage {args.stage} of {args.name} is being deleted")
    elif cmd == "stats":
        stage = args.stage or call("GET", f"/endpoints/{name}", retry=True).json()["default_stage"]
        s = call("GET", f"/endpoints/{name}/stages/{quote(stage, safe='')}/stats",
                 params={"minutes": str(args.minutes)}, retry=True).json()
        t = s["total"]
        print(f"{args.name}/{stage}, last {args.minutes} min: {t['requests']} requests, {t['errors']} errors, "
              f"p50 {t['p50_ms']} ms, p95 {t['p95_ms']} ms, p99 {t['p99_ms']} ms")
        if s["series"]:
            print(table([[p["minute"], str(p["requests"]), str(p["errors"]), str(p["p50_ms"]), str(p["p99_ms"])]
                         for p in s["series"]], ["MINUTE", "REQUESTS", "ERRORS", "P50 MS", "P99 MS"]))
    elif cmd == "rm":
        call("DELETE", f"/endpoints/{name}")
        print(f"endpoint {args.name} is being deleted")
    return 0


def predict_command(client: NothingClient, args: argparse.Namespace) -> int:
    """POST the file to the endpoint through the platform and print the answer."""
    data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    try:
        json.loads(data)
    except ValueError as e:
        raise NothingError(f"{args.file} is not JSON: {e}") from None
    base = client.api.rsplit("/api", 1)[0]
    stage = f"/stages/{quote(args.stage, safe='')}" if args.stage else ""
    url = f"{base}/serve/{quote(args.name, safe='')}{stage}{args.path}"
    response = client.session.post(url, data=data, headers={"Content-Type": "application/json"},
                                   timeout=client.timeout)
    if response.status_code >= 400:
        try:
            message = response.json().get("message") or response.text
        except ValueError:
            message = response.text
        raise NothingError(f"{response.status_code}: {message}", response.status_code)
    print(json.dumps(response.json(), indent=2))
    return 0
