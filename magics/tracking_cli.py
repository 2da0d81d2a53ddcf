"""``nothing rm / metrics / model ls / model rm / experiments / storage``: what runs leave behind, as tables."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime

from .client import NothingClient, NothingError


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("TB", 1000**4), ("GB", 1000**3), ("MB", 1000**2), ("kB", 1000)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _number(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def table(rows: list[list[str]], header: list[str]) -> str:
    """Columns padded to their widest cell, as ``nothing runs`` and NSML's listings print."""
    cells = [header] + rows
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def _when(iso: str | None) -> str:
    if not iso:
        return "-"
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _elapsed(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(max(seconds, 0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def print_checkpoints(listing: dict) -> None:
    rows = [[c["checkpoint"], _when(c["last_modified"]), _elapsed(c["elapsed_seconds"]),
             ", ".join(f"{k}={_number(v)}" for k, v in sorted(c["summary"].items())) or "-", human_bytes(c["bytes"])]
            for c in listing["checkpoints"]]
    if rows:
        print(table(rows, ["CHECKPOINT", "LAST MODIFIED", "ELAPSED", "SUMMARY", "SIZE"]))
    print(f"run {listing['run']}: {len(rows)} checkpoint{'s' if len(rows) != 1 else ''}, "
          f"{human_bytes(listing['total_bytes'])} in total")


def tracking_command(client: NothingClient, command: str, args: argparse.Namespace) -> int:
    if command == "rm":
        client.delete_run(args.run, stop=args.stop)
        print(f"run {args.run} deleted")
    elif command == "metrics":
        if args.csv:
            sys.stdout.write(client.metrics_csv(args.run, args.name))
            return 0
        data = client.metrics(args.run, args.name)
        if args.points:
            rows = [[name, str(step), _number(value)] for name, points in sorted(data["series"].items())
                    for step, _, value in points]
            print(table(rows, ["METRIC", "STEP", "VALUE"]))
            return 0
        summary = {k: v for k, v in data["summary"].items() if not args.name or k in args.name}
        if not summary:
            print(f"run {args.run} has no metrics yet (print name=value lines, or use nothing.report())")
            return 0
        rows = [[name, _number(e["latest"]), str(e["step"]), _number(e["min"]), _number(e["max"]), str(e["count"])]
                for name, e in sorted(summary.items())]
        print(table(rows, ["METRIC", "LATEST", "STEP", "MIN", "MAX", "POINTS"]))
    elif command == "model":
        if args.model_command == "ls":
            print_checkpoints(client.checkpoints(args.run))
        else:
            result = client.remove_checkpoints(args.run, args.checkpoint)
            print(f"removed {', '.join(result['removed'])} ({human_bytes(result['freed_bytes'])} freed)")
            print_checkpoints(result)
    elif command == "experiments":
        return _experiments(client, args)
    elif command == "storage":
        usage = client.storage()
        for who in [usage["user"], *usage["groups"]]:
            quota = f" of {human_bytes(who['quota_bytes'])}" if who["quota_bytes"] is not None else " (no quota)"
            print(f"{who['name']}: {human_bytes(who['used_bytes'])}{quota}")
    return 0


def _experiments(client: NothingClient, args: argparse.Namespace) -> int:
    if args.action == "ls":
        found = client.experiments(metric=args.metric)
        rows = []
        for e in found:
            states = ", ".join(f"{n} {s}" for s, n in sorted(e["runs_by_state"].items())) or "no runs"
            row = [e["name"], str(e["runs"]), states, _when(e["last_activity"])]
            if args.metric:
                row.append(_number(e["metric"]["best"]))
            rows.append(row)
        header = ["EXPERIMENT", "RUNS", "STATES", "LAST ACTIVITY"] + ([f"BEST {args.metric}"] if args.metric else [])
        print(table(rows, header) if rows else "no experiments yet: runs make theirs (--experiment NAME)")
        return 0
    if not args.name:
        raise NothingError(f"nothing experiments {args.action} needs the experiment's name")
    if args.action == "create":
        client.create_experiment(args.name, args.value or "")
        print(f"experiment {args.name} created")
    elif args.action == "rename":
        if not args.value:
            raise NothingError("nothing experiments rename OLD NEW")
        client.update_experiment(args.name, new_name=args.value)
        print(f"experiment {args.name} is now {args.value}")
    elif args.action == "describe":
        client.update_experiment(args.name, description=args.value or "")
        print(f"experiment {args.name} described")
    else:
        client.delete_experiment(args.name)
        print(f"experiment {args.name} deleted")
    return 0
