"""What a run submission may contain, checked the same way by the service and the client.

``parse_submission`` turns a JSON-like dict into the values of a new run, or
raises ``SpecError`` with one sentence naming the problem.  Every number is
bounded (the database columns are 64-bit), every pattern must match the whole
string (``fullmatch``: ``$`` alone lets a trailing newline through), and the
arguments and hyperparameters must fit the run's command line and environment,
where the kernel refuses a single string over 128 KiB (``E2BIG``).
"""

from __future__ import annotations

import json
import math
import posixpath
import re
from typing import Any

from .datasets import DatasetRefError, parse_refs
from .metrics import RuleError, parse_rules, rules_to_json
from ..common import spec as common_spec
from ..common.spec import HP_KEY, ValueProblem
from ..common.spec import short as _short
from .runenv import hp_env_name

FIELDS = {
    "name", "experiment", "entry_point", "args", "hyperparameters",
    "gpus", "cpus", "memory", "priority", "max_time", "group", "preemptible",
    "metrics", "checkpoint", "datasets",
    "nodes", "gpus_per_node", "procs_per_node", "torchrun",
}
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\- ]{0,99}")
_WHOLE = re.compile(r"\s*[+-]?[0-9]{1,19}\s*")

MAX_MEMORY_BYTES = common_spec.MAX_MEMORY_BYTES
MAX_SECONDS = common_spec.MAX_SECONDS
MAX_ENTRY_POINT_CHARS = 1024
MAX_VALUE_BYTES = 4096  # each argument and each hyperparameter value
MAX_ARGS = 256
MAX_HYPERPARAMETERS = 256
# What the arguments and hyperparameters may take of the run's command line and environment
# together: each hyperparameter is there three times (``--key value``, ``EM_HP_<KEY>``, ``EM_HPS``).
MAX_LAUNCH_BYTES = 64 * 1024
MAX_DATASETS = 10  # as EasyMaker


class SpecError(ValueError):
    """A submission that cannot be accepted; the message says why."""


def parse_memory(value: Any) -> int:
    """``8G``, ``512Mi``, ``1.5GB`` or a number of bytes → bytes (``nothing.common.spec``, as the client)."""
    try:
        return common_spec.parse_memory(value)
    except ValueProblem as e:
        raise SpecError(str(e)) from None


def parse_duration(value: Any) -> int:
    """``2h``, ``1h30m``, ``90m``, ``45s`` or a number of seconds → seconds (``nothing.common.spec``)."""
    try:
        return common_spec.parse_duration(value)
    except ValueProblem as e:
        raise SpecError(str(e)) from None


def _int(body: dict, key: str, default: int, low: int, high: int | None = None) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        if not isinstance(value, str) or not _WHOLE.fullmatch(value):
            raise SpecError(f"{key} must be a whole number, not {_short(value)}")
        value = int(value)
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise SpecError(f"{key} must be {bounds}, not {_short(value)}")
    return value


def _plain_text(label: str, value: str) -> None:
    """Arguments and values reach ``exec`` and the environment, which carry neither NUL nor lone surrogates."""
    if "\0" in value:
        raise SpecError(f"{label} may not contain a NUL character")
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        raise SpecError(f"{label} is not valid Unicode text") from None
    if len(encoded) > MAX_VALUE_BYTES:
        raise SpecError(f"{label} is longer than {MAX_VALUE_BYTES} bytes; pass large settings in a file "
                        "in the snapshot instead")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_args(raw: Any) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(a, str) for a in raw):
        raise SpecError("args must be a list of strings")
    if len(raw) > MAX_ARGS:
        raise SpecError(f"a run takes at most {MAX_ARGS} args, not {len(raw)}")
    for i, arg in enumerate(raw):
        _plain_text(f"args[{i}]", arg)
    return list(raw)


def launch_bytes(args: list[str], hyperparameters: dict[str, str]) -> int:
    """Bytes the arguments and hyperparameters take in the run's command line and environment."""
    size = sum(len(a.encode()) + 1 for a in args)
    for key, value in hyperparameters.items():
        size += len(key) + 3 + len(value.encode()) + 1  # --key value
        size += len(hp_env_name(key)) + 1 + len(value.encode()) + 1  # EM_HP_KEY=value
    return size + len("EM_HPS=") + len(json.dumps(hyperparameters)) + 1


def parse_hyperparameters(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SpecError("hyperparameters must be an object of key: value pairs")
    if len(raw) > MAX_HYPERPARAMETERS:
        raise SpecError(f"a run takes at most {MAX_HYPERPARAMETERS} hyperparameters, not {len(raw)}")
    out = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not HP_KEY.fullmatch(key):
            raise SpecError(f"hyperparameter name {_short(key)} must start with a letter or _ and use only "
                            "letters, digits, _, . and - (at most 64)")
        if isinstance(value, (dict, list)) or value is None:
            raise SpecError(f"hyperparameter {key!r} must have a plain value, not {_short(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise SpecError(f"hyperparameter {key!r} must be a finite number, not {value}")
        text = str(value).lower() if isinstance(value, bool) else str(value)
        _plain_text(f"hyperparameter {key!r}", text)
        out[key] = text
    return out


def parse_entry_point(value: Any) -> str:
    """A relative path inside the snapshot; no part may start with ``-`` (it would become an interpreter option)."""
    if not isinstance(value, str) or not value.strip():
        raise SpecError("entry_point is required: the file in the snapshot to run, e.g. train.py")
    if len(value) > MAX_ENTRY_POINT_CHARS or "\0" in value or not _encodable(value):
        raise SpecError(f"entry_point {_short(value)} must be a path of at most {MAX_ENTRY_POINT_CHARS} "
                        "characters of text, without NUL")
    norm = posixpath.normpath(value.strip())
    if norm.startswith("/") or norm == ".." or norm.startswith("../") or norm == ".":
        raise SpecError(f"entry_point {_short(value)} must be a path inside the snapshot")
    if any(part.startswith("-") for part in norm.split("/")):
        raise SpecError(f"entry_point {_short(value)}: no part of the path may start with '-'")
    return norm


def parse_group(value: Any, user_groups: list[str]) -> str:
    """The group a run is charged to: one of the user's JupyterHub groups (default: the first by name)."""
    if value in (None, ""):
        return sorted(user_groups)[0] if user_groups else ""
    if not isinstance(value, str) or value not in user_groups:
        mine = ", ".join(sorted(user_groups)) or "none"
        raise SpecError(f"you are not a member of group {_short(value)} (your groups: {mine})")
    return value


def parse_submission(body: dict, max_gpus_per_node: int, max_cpus_per_node: int, is_admin: bool,
                     user_groups: list[str] | None = None, cluster_nodes: int = 1) -> dict[str, Any]:
    """The values of a new run; ``cluster_nodes`` is how many nodes the cluster has (multi-node runs need them)."""
    unknown = sorted(set(body) - FIELDS - {"archive"})
    if unknown:
        shown = [k if k.isprintable() and len(k) <= 40 else _short(k, 40) for k in unknown[:10]]
        raise SpecError(f"unknown field{'s' if len(unknown) > 1 else ''}: {', '.join(shown)}; "
                        f"allowed: {', '.join(sorted(FIELDS))}")
    name = body.get("name") or ""
    experiment = body.get("experiment") or "default"
    for label, value in (("name", name), ("experiment", experiment)):
        if value and (not isinstance(value, str) or not NAME.fullmatch(value)):
            raise SpecError(f"{label} {_short(value)} must be 1-100 letters, digits, spaces, _, . or -, "
                            "starting with a letter or digit")
    args = parse_args(body.get("args"))
    hyperparameters = parse_hyperparameters(body.get("hyperparameters"))
    size = launch_bytes(args, hyperparameters)
    if size > MAX_LAUNCH_BYTES:
        raise SpecError(f"args and hyperparameters take {size} bytes of the run's command line and environment "
                        f"(each hyperparameter counts three times); the limit is {MAX_LAUNCH_BYTES}")
    gpus, shape = parse_shape(body, max_gpus_per_node, cluster_nodes)
    cpus = _int(body, "cpus", 1, 0)
    if cpus > max_cpus_per_node:
        raise SpecError(f"asks for {cpus} CPUs, but the largest node has {max_cpus_per_node}")
    priority = _int(body, "priority", 0, -1000, 1000)
    if priority > 0 and not is_admin:
        raise SpecError("only admins may raise a run's priority above 0; you may lower it")
    max_time = body.get("max_time")
    preemptible = body.get("preemptible", False)
    if not isinstance(preemptible, bool):
        raise SpecError(f"preemptible must be true or false, not {_short(preemptible)}")
    return {
        "group": parse_group(body.get("group"), user_groups or []),
        "preemptible": preemptible,
        "name": name,
        "experiment": experiment,
        "entry_point": parse_entry_point(body.get("entry_point")),
        "args": args,
        "hyperparameters": hyperparameters,
        "gpus": gpus,
        "cpus": cpus,
        "memory_bytes": parse_memory(body.get("memory") or 0),
        "priority": priority,
        "max_seconds": parse_duration(max_time) if max_time not in (None, "", 0) else None,
        **shape,
        "metric_rules": parse_metric_rules(body.get("metrics")),
        "dataset_refs": parse_dataset_refs(body.get("datasets")),
        **parse_checkpoint(body.get("checkpoint")),
    }


def parse_dataset_refs(raw: Any) -> list:
    """``datasets``: ``{"train": "mnist:2"}`` → ``[(name, group, dataset, version)]``; resolved by the service."""
    try:
        refs = parse_refs(raw)
    except DatasetRefError as e:
        raise SpecError(str(e)) from None
    if len(refs) > MAX_DATASETS:
        raise SpecError(f"a run takes at most {MAX_DATASETS} datasets, not {len(refs)}")
    return refs


def parse_metric_rules(raw: Any) -> list | None:
    """``metrics``: names with a regular expression each (EasyMaker's 지표 이름 / 지표 형식), or None."""
    try:
        return rules_to_json(parse_rules(raw))
    except RuleError as e:
        raise SpecError(str(e)) from None


_CHECKPOINT = re.compile(r"\s*([0-9]{1,18})(?::(.{1,1024}))?\s*", re.DOTALL)


def parse_checkpoint(raw: Any) -> dict[str, Any]:
    """``checkpoint``: ``RUN`` (all its checkpoints) or ``RUN:NAME`` (one of them) to start from."""
    if raw in (None, ""):
        return {"checkpoint_run": None, "checkpoint_name": None}
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    m = _CHECKPOINT.fullmatch(raw) if isinstance(raw, str) else None
    name = m.group(2) if m else None
    if not m or (name is not None and ("/" in name or name in (".", "..") or "\0" in name or not _encodable(name))):
        raise SpecError(f"checkpoint must be RUN or RUN:CHECKPOINT (a run id and, optionally, one entry of its "
                        f"checkpoint folder, e.g. 12:epoch-3.pt), not {_short(raw)}")
    return {"checkpoint_run": int(m.group(1)), "checkpoint_name": name}


MAX_NODES = 256
MAX_PROCS_PER_NODE = 64
MAX_WORLD_SIZE = 1024


def parse_shape(body: dict, max_gpus_per_node: int, cluster_nodes: int) -> tuple[int, dict[str, Any]]:
    """The run's GPUs in all, and its shape: ``nodes`` x ``gpus_per_node`` (0: not shaped, one node),
    ``procs_per_node`` (None: one process per node) and ``torchrun``.

    A run on several nodes needs GPUs on each (``gpus_per_node``, or ``gpus`` that divide evenly);
    then ``gpus`` is ``nodes * gpus_per_node``.  ``cluster_nodes`` nodes exist to place it on.
    """
    nodes = _int(body, "nodes", 1, 1, MAX_NODES)
    gpus_per_node = _int(body, "gpus_per_node", 0, 0)
    gpus = _int(body, "gpus", 0, 0)
    given = body.get("gpus") not in (None, 0, "0")
    if nodes > max(cluster_nodes, 1):
        have = f"only {cluster_nodes} node" + ("s" if cluster_nodes != 1 else "")
        raise SpecError(f"asks for {nodes} nodes, but this cluster has {have}; a multi-node run needs that many "
                        "nodes (ask for fewer, or ask an admin to add nodes)")
    if nodes > 1 and not gpus_per_node:
        if not given or gpus % nodes:
            raise SpecError(f"a run on {nodes} nodes needs gpus_per_node (the GPUs it takes on each node, at "
                            f"least 1), e.g. nodes={nodes}, gpus_per_node=1" +
                            (f"; {gpus} GPUs do not split evenly over {nodes} nodes" if given else ""))
        gpus_per_node = gpus // nodes
    if gpus_per_node:
        if gpus_per_node > max_gpus_per_node:
            raise SpecError(f"asks for {gpus_per_node} GPUs per node, but the largest node has {max_gpus_per_node}")
        if given and gpus != nodes * gpus_per_node:
            raise SpecError(f"gpus ({gpus}) must be nodes x gpus_per_node ({nodes} x {gpus_per_node} = "
                            f"{nodes * gpus_per_node}), or be left out")
        gpus = nodes * gpus_per_node
    elif gpus > max_gpus_per_node:
        raise SpecError(f"asks for {gpus} GPUs, but the largest node has {max_gpus_per_node}; " + (
            f"to use several nodes ask for nodes and gpus_per_node, e.g. nodes={-(-gpus // max_gpus_per_node)}, "
            f"gpus_per_node={max_gpus_per_node}" if cluster_nodes > 1 and max_gpus_per_node
            else "multi-node runs are not available on this cluster"))
    procs = body.get("procs_per_node")
    procs_per_node = None if procs in (None, "") else _int(body, "procs_per_node", 1, 1, MAX_PROCS_PER_NODE)
    torchrun = body.get("torchrun", False)
    if not isinstance(torchrun, bool):
        raise SpecError(f"torchrun must be true or false, not {_short(torchrun)}")
    world = nodes * (procs_per_node or 1)
    if world > MAX_WORLD_SIZE:
        raise SpecError(f"{nodes} nodes x {procs_per_node} processes is {world} processes; at most "
                        f"{MAX_WORLD_SIZE} processes per run")
    return gpus, {"nodes": nodes, "gpus_per_node": gpus_per_node, "procs_per_node": procs_per_node,
                  "torchrun": torchrun}
