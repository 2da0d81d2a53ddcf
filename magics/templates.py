"""``nothing template save|ls|show|copy|rm``: training templates (학습 템플릿) from a terminal.

``save NAME [SCRIPT] [options]`` takes a run's options and a tuning's (``nothing tune submit``'s):
the options given become the template's settings, the current folder its code when a SCRIPT
is named. Runs and tunings start from one with ``--template NAME`` (docs/templates.md).
"""

from __future__ import annotations

import argparse
import json

from .client import NothingClient
from .options import script_snapshot, spec_from_options
from .tracking_cli import table
from .tuning import parse_tune_args, tuning_from_options

_TUNE_DESTS = {"strategy", "seed", "param", "objective", "goal", "target", "max_trials", "parallel", "max_failed",
               "total_time", "early_stopping"}


def settings_from_args(argv: list[str]) -> tuple[dict, bytes | None, str]:
    """The template's settings (only the options given), its code (the folder, with a SCRIPT) and description."""
    ns = parse_tune_args(argv, prog="nothing template save NAME")
    ns.template = "-"  # only the options given count, as when starting from a template
    entry, code = "", None
    if ns.script:
        entry, code = script_snapshot(ns.script)
    if ns.given & _TUNE_DESTS:
        settings = tuning_from_options(ns, entry, ns.script_args)
    else:
        settings = spec_from_options(ns, entry, ns.script_args)
    settings.pop("template", None)
    settings.pop("description", None)
    return settings, code, ns.description


def templates_table(rows: list[dict]) -> str:
    if not rows:
        return "no templates"
    return table([[str(t["id"]), t["name"], t["owner"], t["group"] or "-", t["kind"],
                   "yes" if t["has_code"] else "no", ", ".join(t["hyperparameters"]) or "-"] for t in rows],
                 ["ID", "NAME", "OWNER", "GROUP", "KIND", "CODE", "HYPERPARAMETERS"])


def template_command(client: NothingClient, args: argparse.Namespace, rest: list[str]) -> int:
    cmd = args.template_command
    if cmd == "save":
        settings, code, description = settings_from_args(rest)
        body = {"name": args.name, "settings": settings, "description": description}
        if settings.get("group"):
            body["group"] = settings["group"]
        t = client.save_template(body, code)
        print(f"template {t['id']} {t['name']!r} saved ({t['kind']}, {'with' if t['has_code'] else 'without'} code)")
    elif cmd == "ls":
        print(templates_table(client.templates()))
    elif cmd == "show":
        print(json.dumps(client.template(args.template), indent=2))
    elif cmd == "copy":
        over = {"settings": json.loads(args.set)} if args.set else {}
        if args.name:
            over["name"] = args.name
        t = client.copy_template(args.template, over)
        print(f"template {t['id']} {t['name']!r} saved")
    elif cmd == "rm":
        client.delete_template(args.template)
        print(f"template {args.template} deleted")
    return 0


def add_template_parser(sub) -> None:
    tpl = sub.add_parser("template", help="training templates: save, ls, show, copy, rm")
    ts = tpl.add_subparsers(dest="template_command", required=True)
    save = ts.add_parser("save", help="save the options given (and the folder, with a SCRIPT) as template NAME; "
                                      "takes nothing submit's and nothing tune submit's options", add_help=False)
    save.add_argument("name")
    ts.add_parser("ls", help="your templates and your groups'")
    ts.add_parser("show", help="one template's settings").add_argument("template", metavar="NAME|ID")
    copy = ts.add_parser("copy", help="a new template of yours with the same settings and code")
    copy.add_argument("template", metavar="NAME|ID")
    copy.add_argument("--name", default=None)
    copy.add_argument("--set", default=None, metavar="JSON", help='settings to change, e.g. \'{"gpus": 2}\'')
    ts.add_parser("rm", help="delete a template").add_argument("template", metavar="NAME|ID")
