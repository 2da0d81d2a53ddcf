"""``nothing``: the scheduler from a terminal, with the same client and options as the magics."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .batch import add_batch_parser, batch_command
from .client import NothingClient, NothingError
from .failure import explain
from .endpoints import add_endpoint_parser, endpoint_command, predict_command
from .models import add_model_parser, model_command
from .templates import add_template_parser, template_command
from .tracking_cli import tracking_command
from .tuning import add_tune_parser, make_tune_parser, parse_tune_args, status_text, tune_command, tuning_from_options
from .options import OptionError, make_parser, parse_run_args, script_snapshot, spec_from_options
from .snapshot import SnapshotTooLarge
from .widget import status_line


def _submit(client: NothingClient, argv: list[str]) -> int:
    ns = parse_run_args(make_parser("nothing submit", with_script=True), argv)
    if not ns.script and ns.template:  # the template's code and entry point
        print(status_line(client.submit(spec_from_options(ns, "", ns.script_args), b"")))
        return 0
    if not ns.script:
        raise OptionError("nothing submit needs a script: nothing submit train.py [--gpus N] [-- script args]")
    entry, archive = script_snapshot(ns.script)
    print(status_line(client.submit(spec_from_options(ns, entry, ns.script_args), archive)))
    return 0


def _tune_submit(client: NothingClient, argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(make_tune_parser("nothing tune submit").format_help())
        return 0
    ns = parse_tune_args(argv)
    if not ns.script and ns.template:  # the template's code and entry point
        print(status_text(client.submit_tuning(tuning_from_options(ns, "", ns.script_args), b"")))
        return 0
    if not ns.script:
        raise OptionError("nothing tune submit needs a script: nothing tune submit train.py --param x:double:0:1 ...")
    entry, archive = script_snapshot(ns.script)
    print(status_text(client.submit_tuning(tuning_from_options(ns, entry, ns.script_args), archive)))
    return 0


def _dataset(client: NothingClient, args: argparse.Namespace) -> int:
    from . import datasets

    if args.dataset_command == "push":
        print(datasets.push(client, args.name, args.path, group=args.group, description=args.description).summary())
    elif args.dataset_command == "ls":
        print(datasets.listing(client.datasets()))
    elif args.dataset_command == "show":
        print(datasets.details(client, args.dataset))
    else:
        print(datasets.remove(client, args.dataset))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="nothing", description="Queue and watch runs on the shared GPUs.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("submit", help="queue a script with the current folder as its code", add_help=False)
    runs = sub.add_parser("runs", help="list your runs")
    runs.add_argument("--all", action="store_true", help="everyone's runs (admins)")
    runs.add_argument("--state", action="append", default=[])
    runs.add_argument("--json", action="store_true")
    for name, help_text in (("show", "one run and its history"), ("cancel", "cancel a run")):
        sub.add_parser(name, help=help_text).add_argument("run", type=int)
    logs = sub.add_parser("logs", help="a run's log")
    logs.add_argument("run", type=int)
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("--tail", type=int)
    dl = sub.add_parser("download", help="a run's outputs")
    dl.add_argument("run", type=int)
    dl.add_argument("path", nargs="?")
    dl.add_argument("--dest", default=None)
    sub.add_parser("gpus", help="the cluster's GPUs")
    rm = sub.add_parser("rm", help="delete a run: its record, log, outputs, checkpoints and metrics")
    rm.add_argument("run", type=int)
    rm.add_argument("--stop", action="store_true", help="stop it first if it is still queued or running")
    met = sub.add_parser("metrics", help="a run's metrics: latest, min and max of each, or every point")
    met.add_argument("run", type=int)
    met.add_argument("--name", action="append", default=[], help="only this metric (repeatable)")
    met.add_argument("--points", action="store_true", help="every point (step, time, value), not the summary")
    met.add_argument("--csv", action="store_true", help="every point as CSV")
    add_model_parser(sub)
    add_endpoint_parser(sub)
    exp = sub.add_parser("experiments", help="your experiments (ls, create, rename, describe, rm)")
    exp.add_argument("action", nargs="?", default="ls", choices=["ls", "create", "rename", "describe", "rm"])
    exp.add_argument("name", nargs="?")
    exp.add_argument("value", nargs="?", help="the new name (rename) or the description (create, describe)")
    exp.add_argument("--metric", help="show each experiment's best value of this metric (ls)")
    sub.add_parser("storage", help="what your runs take on disk, against your storage quota")
    data = sub.add_parser("dataset", help="datasets: push a file or folder as a new version, ls, show, rm")
    data_sub = data.add_subparsers(dest="dataset_command", required=True)
    data_push = data_sub.add_parser("push", help="upload PATH as the next version of NAME (made if new)")
    data_push.add_argument("name")
    data_push.add_argument("path")
    data_push.add_argument("--group", default=None, help="the group that owns it (a new dataset)")
    data_push.add_argument("--description", default="", help="what it holds (a new dataset)")
    data_sub.add_parser("ls", help="your datasets and your groups'")
    data_sub.add_parser("show", help="versions, sizes, files, and the runs that use it").add_argument(
        "dataset", metavar="NAME[:VERSION]")
    data_sub.add_parser("rm", help="delete a dataset or one version").add_argument("dataset", metavar="NAME[:VERSION]")

    add_tune_parser(sub)
    add_template_parser(sub)
    add_batch_parser(sub)

    if argv[:1] == ["submit"]:
        command, rest = "submit", argv[1:]
    elif argv[:2] == ["tune", "submit"]:
        command, rest = "tune-submit", argv[2:]
    elif argv[:2] == ["template", "save"] and len(argv) > 2:
        args = parser.parse_args(argv[:3])
        command, rest = "template", argv[3:]
    else:
        args = parser.parse_args(argv)
        command, rest = args.command, None
    try:
        client = NothingClient()
        if command == "submit":
            return _submit(client, rest)
        if command == "tune-submit":
            return _tune_submit(client, rest)
        if command == "tune":
            return tune_command(client, args)
        if command == "batch":
            return batch_command(client, args)
        if command == "template":
            return template_command(client, args, rest or [])
        if command == "runs":
            found = client.runs(everyone=args.all, states=args.state)
            if args.json:
                print(json.dumps(found, indent=2))
            for r in [] if args.json else found:
                print(status_line(explain(client, r)).replace("\n", " "))
        elif command == "show":
            print(json.dumps(dict(client.run(args.run), events=client.events(args.run)), indent=2))
        elif command == "cancel":
            print(status_line(client.cancel(args.run)))
        elif command == "logs":
            if args.follow:
                for chunk in client.follow_logs(args.run):
                    sys.stdout.write(chunk)
                    sys.stdout.flush()
            else:
                sys.stdout.write(client.logs(args.run, tail=args.tail)[0])
        elif command == "download":
            dest = args.dest or (Path.cwd() if args.path else Path.cwd() / f"run-{args.run}")
            written = client.download(args.run, dest, args.path)
            if not written:
                print(f"run {args.run} has no outputs")
            for f in written:
                print(f)
        elif command == "dataset":
            return _dataset(client, args)
        elif command == "model":
            return model_command(client, args)
        elif command == "endpoint":
            return endpoint_command(client, args)
        elif command == "predict":
            return predict_command(client, args)
        elif command in ("rm", "metrics", "experiments", "storage"):
            return tracking_command(client, command, args)
        elif command == "gpus":
            info = client.gpus()
            for node in info["nodes"]:
                for g in node["gpus"]:
                    holder = f"run {g['run_id']} ({g['owner']})" if g["run_id"] else ("busy" if g["busy"] else "free")
                    print(f"{node['name']}:{g['index']}  {g['name']:<20} {holder}")
        return 0
    except (NothingError, OptionError, SnapshotTooLarge) as e:
        print(f"nothing: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
