"""The run options shared by ``%%nothing_train``, ``%nothing_train`` and ``nothing submit``: one declaration
(:data:`RUN_OPTIONS`), one validation.

Platform options go anywhere before a ``--``; everything after it is the script's::

    nothing submit train.py --gpus 1 --hp lr=0.1 -- --epochs 3
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument

from ..common.spec import HP_KEY, ValueProblem, parse_duration, parse_memory
from .snapshot import build_snapshot


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


DESCRIPTION = ("Queue a training run on the shared GPUs. Options go anywhere before a --; "
               "everything after -- is passed to the code.")

# The one declaration of a run's options. ``%%nothing_train`` and ``%nothing_train script.py`` get them as
# IPython ``magic_arguments`` (so ``%nothing_train?`` lists them), ``nothing submit`` through
# :func:`make_parser`; :func:`spec_from_options` turns the parsed values into a submission.
RUN_OPTIONS: tuple[argument, ...] = (
    argument("--gpus", type=int, default=0, help="GPUs the run needs, all at once (default 0)"),
    argument("--cpus", type=int, default=1, help="CPU cores to reserve (default 1)"),
    argument("--memory", default=None, help="memory to reserve, e.g. 8G"),
    argument("--name", default="", help="a name to find the run by (a cell's default: '<notebook> cell <n>')"),
    argument("--experiment", default="default", help="experiment the run belongs to"),
    argument("--hp", action="append", default=[], metavar="KEY=VALUE",
             help="a hyperparameter, repeatable; reaches the code as --KEY VALUE and $EM_HP_KEY"),
    argument("--max-time", default=None, help="stop the run after this long, e.g. 2h or 90m"),
    argument("--priority", type=int, default=0, help="lower it (negative) to let others go first"),
    argument("--preemptible", action="store_true",
             help="may borrow idle GPUs beyond your group's share; stopped (SIGTERM, then requeued "
                  "with its checkpoints in EM_CHECKPOINT_INPUT_DIR) when the owner needs them back"),
    argument("--group", default=None, help="the group to charge (default: your first group)"),
    argument("--metric", action="append", default=[], metavar="NAME[=REGEX]",
             help="a metric to read from the run's output, repeatable: NAME alone reads 'NAME=value' or "
                  "'NAME: value', NAME=REGEX takes the regex's first group as the value (default: every "
                  "name=value pair; nothing.report() values are always recorded)"),
    argument("--checkpoint", default=None, metavar="RUN[:CHECKPOINT]",
             help="start from another run's checkpoints (all, or one): read-only in $EM_CHECKPOINT_INPUT_DIR"),
    argument("--dataset", action="append", default=[], metavar="NAME=DATASET[:VERSION]",
             help="a dataset to read, repeatable (at most 10), e.g. --dataset train=mnist:2 or "
                  "--dataset val=vision/mnist: mounted read-only at $EM_DATASET_<NAME> (all in $EM_DATASETS)"),
    argument("--nodes", type=int, default=1, metavar="N",
             help="run on N nodes at once (distributed training; needs --gpus-per-node); every process gets "
                  "MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK, LOCAL_RANK, NODE_RANK and TF_CONFIG"),
    argument("--gpus-per-node", type=int, default=0, metavar="G",
             help="GPUs on each node (the run takes N x G in all; --gpus may then be left out)"),
    argument("--procs-per-node", type=int, default=None, metavar="P",
             help="processes on each node, each with its own RANK (default 1); with --torchrun, its workers"),
    argument("--torchrun", action="store_true",
             help="start the entry point with torchrun on each node (--nnodes, --nproc-per-node, a c10d "
                  "rendezvous on the first node, --node-rank)"),
    argument("--template", default=None, metavar="NAME",
             help="start from a training template (nothing template ls): its settings and code, with the options "
                  "given here replacing its fields (--hp key by key); a script or the cell replaces its code"),
)
SCRIPT = argument("script", nargs="?", help="the entry point, a file in the current folder")


def run_options(with_script: bool) -> Callable[[Callable], Callable]:
    """Stack :data:`RUN_OPTIONS` (and the script) onto a magic, below ``@magic_arguments()``."""
    declared = (*RUN_OPTIONS, SCRIPT) if with_script else RUN_OPTIONS

    def decorate(func: Callable) -> Callable:
        for deco in reversed(declared):  # decorators apply bottom-up; the parser then adds them in this order
            func = deco(func)
        return func

    return decorate


def make_parser(prog: str, with_script: bool) -> argparse.ArgumentParser:
    """The options of a run; parse with :func:`parse_run_args` (which splits off the script's arguments)."""
    usage = f"{prog} SCRIPT [options] [-- script arguments]" if with_script else f"{prog} [options] [-- arguments]"
    p = _Parser(prog=prog, add_help=False, allow_abbrev=False, usage=usage, description=DESCRIPTION)
    for deco in (*RUN_OPTIONS, SCRIPT) if with_script else RUN_OPTIONS:
        deco.add_to_parser(p, None)
    return p


def parse_run_args(parser: argparse.ArgumentParser, argv: list[str], prog: str | None = None) -> argparse.Namespace:
    """Platform options anywhere before the first ``--``; what follows it becomes ``ns.script_args``.

    An option the platform does not know is an error (with the way to pass it to the
    code), never silently handed to the script or dropped.  ``prog`` names the command
    in messages (default: the parser's).
    """
    prog = prog or parser.prog
    if "--" in argv:
        cut = argv.index("--")
        own, rest = argv[:cut], argv[cut + 1:]
    else:
        own, rest = argv, []
    try:
        ns, unknown = parser.parse_known_args(own)
    except UsageError as e:  # a magic's parser (IPython's MagicArgumentParser) raises these
        raise OptionError(f"{prog}: {e}") from None
    if unknown:
        where = f"{prog} {ns.script} [options]" if getattr(ns, "script", None) else f"{prog} [options]"
        raise OptionError(f"{prog}: unknown option {' '.join(unknown)}; arguments for the code go after "
                          f"--, e.g. {where} -- {' '.join(unknown)}")
    ns.script_args = rest
    ns.given = {a.dest for a in parser._actions
                if any(t == o or t.startswith(o + "=") for o in a.option_strings for t in own)}
    return ns


# Which submission fields each option sets (for --template: only the options given replace its fields).
OPTION_FIELDS = {"gpus": "gpus", "cpus": "cpus", "memory": "memory", "name": "name", "experiment": "experiment",
                 "hp": "hyperparameters", "max_time": "max_time", "priority": "priority",
                 "preemptible": "preemptible", "group": "group", "metric": "metrics", "checkpoint": "checkpoint",
                 "dataset": "datasets", "nodes": "nodes", "gpus_per_node": "gpus_per_node",
                 "procs_per_node": "procs_per_node", "torchrun": "torchrun"}


def only_given(spec: dict[str, Any], ns: argparse.Namespace) -> dict[str, Any]:
    """With ``--template``: the fields of the options given (and the code's), so that defaults do not replace
    the template's."""
    given = getattr(ns, "given", set())
    keep = {OPTION_FIELDS[d] for d in given if d in OPTION_FIELDS}
    if spec.get("entry_point"):
        keep |= {"entry_point", "args"}
    elif spec.get("args"):
        keep.add("args")
    return {"template": ns.template, **{k: v for k, v in spec.items() if k in keep}}


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
    except ValueProblem as e:
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
    if getattr(ns, "metric", None):
        spec["metrics"] = [parse_metric(m) for m in ns.metric]
    if getattr(ns, "checkpoint", None):
        spec["checkpoint"] = ns.checkpoint
    if getattr(ns, "dataset", None):
        spec["datasets"] = parse_datasets(ns.dataset)
    spec.update(shape_from_options(ns))
    return only_given(spec, ns) if getattr(ns, "template", None) else spec


MAX_DATASETS = 10
_DATASET_OPTION = re.compile(r"([A-Za-z][A-Za-z0-9_]{0,31})=((?:[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}/)?"
                             r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}(?::[0-9]{1,9})?)")


def parse_datasets(items: list[str]) -> dict[str, str]:
    """``--dataset train=mnist:2`` (repeatable) → the submission's ``{"train": "mnist:2"}``; the service resolves
    the names to exact versions (and says which one it does not find)."""
    if len(items) > MAX_DATASETS:
        raise OptionError(f"a run takes at most {MAX_DATASETS} datasets, not {len(items)}")
    out: dict[str, str] = {}
    for item in items:
        m = _DATASET_OPTION.fullmatch(item)
        if not m:
            raise OptionError(f"--dataset takes NAME=DATASET[:VERSION] (NAME: a letter, then letters, digits or _; "
                              f"it becomes $EM_DATASET_<NAME>), e.g. --dataset train=mnist:2, not {item[:80]!r}")
        if m.group(1).upper() in {k.upper() for k in out}:
            raise OptionError(f"--dataset {m.group(1)} is given twice")
        out[m.group(1)] = m.group(2)
    return out


def shape_from_options(ns: argparse.Namespace) -> dict[str, Any]:
    """``--nodes``, ``--gpus-per-node``, ``--procs-per-node`` and ``--torchrun`` as submission fields (only those
    given), checked as far as the client can: the service knows the cluster and checks the rest."""
    nodes, per_node = getattr(ns, "nodes", 1), getattr(ns, "gpus_per_node", 0)
    procs, torchrun = getattr(ns, "procs_per_node", None), getattr(ns, "torchrun", False)
    if nodes < 1:
        raise OptionError(f"--nodes must be at least 1, not {nodes}")
    if per_node < 0:
        raise OptionError(f"--gpus-per-node cannot be negative, not {per_node}")
    if procs is not None and procs < 1:
        raise OptionError(f"--procs-per-node must be at least 1, not {procs}")
    if nodes > 1 and not per_node and (not ns.gpus or ns.gpus % nodes):
        raise OptionError(f"--nodes {nodes} needs --gpus-per-node G (the GPUs on each node), e.g. --nodes {nodes} "
                          "--gpus-per-node 1")
    if per_node and ns.gpus and ns.gpus != nodes * per_node:
        raise OptionError(f"--gpus {ns.gpus} is not --nodes x --gpus-per-node ({nodes} x {per_node}); leave "
                          "--gpus out")
    shape: dict[str, Any] = {}
    if nodes != 1:
        shape["nodes"] = nodes
    if per_node:
        shape["gpus_per_node"] = per_node
    if procs is not None:
        shape["procs_per_node"] = procs
    if torchrun:
        shape["torchrun"] = True
    return shape


def parse_metric(text: str) -> dict[str, str]:
    """``--metric loss`` or ``--metric 'loss=loss: ([0-9.]+)'`` → a metric rule of the submission."""
    name, sep, regex = text.partition("=")
    if not name.strip():
        raise OptionError(f"--metric {text!r}: give a name, e.g. --metric loss or --metric 'acc=acc: ([0-9.]+)'")
    return {"name": name.strip(), "regex": regex} if sep and regex else {"name": name.strip()}


def script_snapshot(script: str) -> tuple[str, bytes]:
    """A terminal command's ``SCRIPT``: its path in the current folder, checked (a file there that compiles),
    and that folder as the code snapshot (``NOTHING_MAX_SNAPSHOT_BYTES``, 100 MiB by default)."""
    cwd = Path.cwd().resolve()
    path = (cwd / script).resolve()
    if not path.is_file() or not path.is_relative_to(cwd):
        raise OptionError(f"{script} is not a file in the current folder {cwd}")
    if path.suffix == ".py":
        check_syntax(path.read_text(errors="replace"), script, script)
    archive, _ = build_snapshot(cwd, int(os.environ.get("NOTHING_MAX_SNAPSHOT_BYTES", 100 * 1024**2)))
    return path.relative_to(cwd).as_posix(), archive


def check_syntax(code: str, filename: str, what: str) -> None:
    """Refuse code that cannot even compile, before anything is uploaded or queued (the run would only fail)."""
    try:
        compile(code, filename, "exec", dont_inherit=True)
    except SyntaxError as e:
        text = (e.text or "").strip()
        raise OptionError(f"{what} has a SyntaxError, not sent: line {e.lineno}: {e.msg}"
                          + (f": {text}" if text else "")) from None
    except ValueError as e:  # e.g. a NUL byte
        raise OptionError(f"{what} cannot be compiled, not sent: {e}") from None


_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.\- ]+")


def cell_run_name(notebook: str | None, cell_number: int | None, experiment: str) -> str:
    """The default name of a cell's run: ``<notebook stem> cell <n>``, else ``<experiment> cell <n>``.

    Made of the characters the service accepts in a name (it refuses ``#``, slashes, …).
    """
    stem = PurePosixPath(notebook.replace("\\", "/")).stem if notebook else ""
    base = _NAME_CHARS.sub("-", stem).strip("-_. ") or _NAME_CHARS.sub("-", experiment).strip("-_. ") or "cell"
    suffix = f" cell {cell_number}" if cell_number else " cell"
    return (base[:100 - len(suffix)] + suffix).lstrip("-_. ")
