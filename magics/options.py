"""The run options shared by ``%%nothing_train`` and ``nothing submit``: one parser, one validation."""

from __future__ import annotations

import argparse
from typing import Any

from nothing.scheduler.runenv import HP_KEY
from nothing.scheduler.spec import SpecError, parse_duration, parse_memory


class OptionError(ValueError):
    """Bad options on the command line or the magic's line; the message is for a person."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise OptionError(f"{self.prog}: {message}")

    def exit(self, status=0, message=None):
        raise OptionError(message or "")


def small_parser(prog: str) -> argparse.ArgumentParser:
    """A parser that raises OptionError instead of exiting."""
    return _Parser(prog=prog, add_help=False)


def make_parser(prog: str, with_script: bool) -> argparse.ArgumentParser:
    p = _Parser(prog=prog, add_help=False, description="Queue a training run on the shared GPUs.")
    p.add_argument("--gpus", type=int, default=0, help="GPUs the run needs, all at once (default 0)")
    p.add_argument("--cpus", type=int, default=1, help="CPU cores to reserve (default 1)")
    p.add_argument("--memory", default=None, help="memory to reserve, e.g. 8G")
    p.add_argument("--name", default="", help="a name to find the run by")
    p.add_argument("--experiment", default="default", help="experiment the run belongs to")
    p.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE",
                   help="a hyperparameter, repeatable; reaches the code as --KEY VALUE and $EM_HP_KEY")
    p.add_argument("--max-time", default=None, help="stop the run after this long, e.g. 2h or 90m")
    p.add_argument("--priority", type=int, default=0, help="lower it (negative) to let others go first")
    p.add_argument("--preemptible", action="store_true",
                   help="may borrow idle GPUs beyond your group's share; stopped (SIGTERM, then requeued "
                        "with its checkpoints in EM_CHECKPOINT_INPUT_DIR) when the owner needs them back")
    p.add_argument("--group", default=None, help="the group to charge (default: your first group)")
    if with_script:
        p.add_argument("script", nargs="?", help="the entry point, a file in the current folder")
        p.add_argument("script_args", nargs=argparse.REMAINDER, help="arguments for the script")
    return p


def parse_hp(pairs: list[str]) -> dict[str, str]:
    hps = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not HP_KEY.fullmatch(key):
            raise OptionError(f"--hp takes KEY=VALUE with KEY like lr or batch_size, not {pair!r}")
        hps[key] = value
    return hps


def spec_from_options(ns: argparse.Namespace, entry_point: str, args: list[str] | None = None) -> dict[str, Any]:
    """The JSON submission for the service, validated here first so mistakes show before any upload."""
    if ns.gpus < 0 or ns.cpus < 0:
        raise OptionError("--gpus and --cpus cannot be negative")
    try:
        if ns.memory:
            parse_memory(ns.memory)
        if ns.max_time:
            parse_duration(ns.max_time)
    except SpecError as e:
        raise OptionError(str(e)) from None
    spec: dict[str, Any] = {
        "entry_point": entry_point,
        "args": list(args or []),
        "hyperparameters": parse_hp(ns.hp),
        "gpus": ns.gpus,
        "cpus": ns.cpus,
        "experiment": ns.experiment,
        "priority": ns.priority,
    }
    if ns.name:
        spec["name"] = ns.name
    if ns.memory:
        spec["memory"] = ns.memory
    if ns.max_time:
        spec["max_time"] = ns.max_time
    if ns.preemptible:
        spec["preemptible"] = True
    if ns.group:
        spec["group"] = ns.group
    return spec
