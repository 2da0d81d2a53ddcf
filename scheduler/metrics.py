"""Reading metrics out of what a run writes: its log (EasyMaker's 지표 이름 / 지표 형식) and ``report()`` lines.

Pure functions of text: the collector (``tracker.py``) feeds them new bytes and
stores what they return.  A run names its metrics with rules, each a name and a
regular expression whose one group (or group ``value``) is the number; with no
rules, ``name=value`` pairs are read (as Katib's default collector does) and
``step=N`` on the line gives their step.  Patterns are RE2 (``google-re2``):
matching takes time linear in the line whatever the pattern, so no rule can
stall the service (Python's ``re`` can backtrack for minutes on ``(a+)+$``).

Bounds, so that no run can make the service slow or its database huge:
``MAX_LINE_BYTES`` per line (longer lines are skipped), ``MAX_METRIC_NAMES``
distinct names per run (later names are ignored), and the collector's cap on
stored points per run (``Tracker.max_points_per_run``).
"""

from __future__ import annotations

import json
import math
import re as _re
from dataclasses import dataclass, field
from functools import lru_cache

import re2

MAX_RULES = 50
MAX_PATTERN_CHARS = 500
MAX_NAME_CHARS = 100
MAX_LINE_BYTES = 64 * 1024
MAX_REPORT_LINE_BYTES = 4 * 1024**2  # report() writes up to 500 reports per line
MAX_REPORTS_PER_LINE = 10_000
MAX_METRIC_NAMES = 100
NAME = _re.compile(r"[A-Za-z_][A-Za-z0-9_./\-]{0,99}")
_NUMBER = r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:[Nn]a[Nn]|[Ii]nf(?:inity)?)"
# name=value pairs: the default when a run names no rules.  Our own patterns use Python's ``re``
# (several times faster per line than the RE2 bindings); they have no nested repetition to backtrack on.
_DEFAULT = r"(?<![A-Za-z0-9_./\-])([A-Za-z_][A-Za-z0-9_./\-]{0,99}){ws}*={ws}*(" + _NUMBER + r")(?:[{sp},;)\]}]|$)"
_STEP_AT = r"(?:^|[{sp},;({\[])(?:step|global_step){ws}*[=:]{ws}*([0-9]{1,18})(?:[{sp},;)\]}]|$)"
DEFAULT_PATTERN = _re.compile(_DEFAULT.replace("{ws}", r"\s").replace("{sp}", r"\s"))
_STEP = _re.compile(_STEP_AT.replace("{ws}", r"\s").replace("{sp}", r"\s"))
# The same two patterns for lines that are pure ASCII, matched on the bytes without decoding them: ``\s`` of a
# str pattern also matches the ASCII separators \x1c-\x1f, so they are named, and both read exactly alike.
_DEFAULT_ASCII = _re.compile(_DEFAULT.replace("{ws}", r"[\s\x1c-\x1f]").replace("{sp}", r"\s\x1c-\x1f").encode())
_STEP_ASCII = _re.compile(_STEP_AT.replace("{ws}", r"[\s\x1c-\x1f]").replace("{sp}", r"\s\x1c-\x1f").encode())
_STEP_NAMES = (b"step", b"global_step")
_LOWER_IS_BETTER = _re.compile(r"loss|err|mse|mae|rmse|perplexity|ppl|wer|cer|latency|time", _re.IGNORECASE)


class RuleError(ValueError):
    """A metric rule that cannot be used; the message says why."""


@dataclass(frozen=True)
class MetricRule:
    name: str
    pattern: str
    goal: str = ""  # "maximize", "minimize" or "" (from the name: losses and errors are minimised)


def goal_of(name: str, rules: list[MetricRule] | None = None) -> str:
    for rule in rules or ():
        if rule.name == name and rule.goal:
            return rule.goal
    return "minimize" if _LOWER_IS_BETTER.search(name) else "maximize"


def parse_rules(raw) -> list[MetricRule] | None:
    """``[{"name": "loss", "regex": "loss: (\\S+)", "goal": "minimize"}, ...]`` → rules; None for the default."""
    if raw is None or raw == []:
        return None
    if not isinstance(raw, list):
        raise RuleError("metrics must be a list of {\"name\": ..., \"regex\": ...}")
    if len(raw) > MAX_RULES:
        raise RuleError(f"a run takes at most {MAX_RULES} metric rules, not {len(raw)}")
    rules, seen = [], set()
    for i, item in enumerate(raw):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or set(item) - {"name", "regex", "goal"}:
            raise RuleError(f"metrics[{i}] must be an object with name, and optionally regex and goal")
        name = item.get("name")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise RuleError(f"metric name {str(name)[:60]!r} must start with a letter or _ and use only letters, "
                            f"digits, _, ., / and - (at most {MAX_NAME_CHARS})")
        if name in seen:
            raise RuleError(f"metric {name!r} is named twice")
        seen.add(name)
        pattern = item.get("regex") or (_re.escape(name) + r"\s*[=:]\s*(" + _NUMBER + ")")
        if not isinstance(pattern, str) or len(pattern) > MAX_PATTERN_CHARS:
            raise RuleError(f"the regex of metric {name!r} must be text of at most {MAX_PATTERN_CHARS} characters")
        compiled = _compile(name, pattern)
        if compiled.groups < 1:
            raise RuleError(f"the regex of metric {name!r} needs a group around the number, e.g. "
                            f"{name}=([0-9.eE+-]+)")
        goal = item.get("goal") or ""
        if goal not in ("", "maximize", "minimize"):
            raise RuleError(f"the goal of metric {name!r} must be maximize or minimize, not {str(goal)[:40]!r}")
        rules.append(MetricRule(name, pattern, goal))
    return rules


def _compile(name: str, pattern: str):
    try:
        return re2.compile(pattern)
    except re2.error as e:
        raise RuleError(f"the regex of metric {name!r} does not compile: {e} (patterns are RE2: no "
                        "backreferences or look-arounds)") from None


def rules_to_json(rules: list[MetricRule] | None) -> list | None:
    return None if rules is None else [{"name": r.name, "regex": r.pattern, "goal": r.goal} for r in rules]


def rules_from_json(raw: list | None) -> list[MetricRule] | None:
    return None if not raw else [MetricRule(r["name"], r["regex"], r.get("goal", "")) for r in raw]


def to_float(text) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError, OverflowError):
        return None
    return value


@dataclass
class Point:
    name: str
    step: int
    at: float
    value: float


@lru_cache(maxsize=256)
def _compiled_rules(rules: tuple[MetricRule, ...]) -> tuple:
    """``(name, compiled RE2 pattern)`` of each rule: compiled once per set of rules, not once per read."""
    return tuple((r.name, re2.compile(r.pattern)) for r in rules)


@dataclass
class Reader:
    """What one run's reading remembers between chunks: the next implicit step of each metric."""

    rules: list[MetricRule] | None = None
    steps: dict[str, int] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)
    dropped_names: int = 0
    _compiled: tuple = ()
    _ascii_names: dict = field(default_factory=dict)

    def __post_init__(self):
        self._compiled = _compiled_rules(tuple(self.rules or ()))

    def _admit(self, name: str) -> bool:
        if name in self.names:
            return True
        if len(self.names) >= MAX_METRIC_NAMES:
            self.dropped_names += 1
            return False
        self.names.add(name)
        return True

    def _next_step(self, name: str, step: int | None) -> int:
        if step is None:
            step = self.steps.get(name, 0)
        self.steps[name] = step + 1
        return step

    def log_lines(self, lines: list[bytes], at: float) -> list[Point]:
        """Points in whole log lines (without their newlines)."""
        if not self._compiled:
            return self._default_lines(lines, at)
        points: list[Point] = []
        for raw in lines:
            if len(raw) > MAX_LINE_BYTES:
                continue
            line = raw.decode("utf-8", "replace")
            m = _STEP.search(line)
            step = int(m.group(1)) if m else None
            for name, pattern in self._compiled:
                hit = pattern.search(line)
                if hit:
                    value = to_float(hit.group("value") if "value" in pattern.groupindex else hit.group(1))
                    if value is not None and self._admit(name):
                        points.append(Point(name, self._next_step(name, step), at, value))
        return points

    def _default_lines(self, lines: list[bytes], at: float) -> list[Point]:
        """``name=value`` pairs.  The hot path of a run that prints its metrics: ASCII lines are matched as
        bytes (no decoding; a name's text is made once per run), others as text, with the same result."""
        points: list[Point] = []
        append = points.append
        steps = self.steps
        known = self._ascii_names
        for raw in lines:
            if len(raw) > MAX_LINE_BYTES or b"=" not in raw:
                continue
            if raw.isascii():
                m = _STEP_ASCII.search(raw) if b"step" in raw else None
                found, skip = _DEFAULT_ASCII.findall(raw), _STEP_NAMES
            else:
                line = raw.decode("utf-8", "replace")
                m = _STEP.search(line)
                found, skip = DEFAULT_PATTERN.findall(line), ("step", "global_step")
            step = int(m.group(1)) if m else None
            for name, text in found:
                if name in skip:
                    continue
                if type(name) is bytes:
                    decoded = known.get(name)
                    if decoded is None:
                        decoded = known[name] = name.decode()
                    name = decoded
                try:
                    value = float(text)
                except (ValueError, OverflowError):
                    continue
                if name not in self.names and not self._admit(name):
                    continue
                s = steps.get(name, 0) if step is None else step
                steps[name] = s + 1
                append(Point(name, s, at, value))
        return points

    def report_lines(self, lines: list[bytes]) -> tuple[list[Point], list[tuple[str, int, float]]]:
        """Points and registered checkpoints ``(name, step, at)`` in ``report()``'s JSON lines (an array of
        reports per line, each an array or, from earlier versions, an object); junk is skipped."""
        points: list[Point] = []
        append = points.append
        checkpoints = []
        records = []
        names, steps = self.names, self.steps
        for raw in lines:
            if len(raw) > MAX_REPORT_LINE_BYTES:
                continue
            try:
                parsed = json.loads(raw)
            except (ValueError, RecursionError):
                continue
            records.extend(parsed[:MAX_REPORTS_PER_LINE] if isinstance(parsed, list) else [parsed])
        for record in records:  # JSON's own types: an int is never a bool here, and type() is exact
            if type(record) is list:  # report()'s [step, at_ms, metrics] or [step, at_ms, null, checkpoint]
                if not 3 <= len(record) <= 4:
                    continue
                step, at, metrics = record[0], record[1], record[2]
                checkpoint = record[3] if len(record) == 4 else None
                at = at / 1000.0 if type(at) is int and 0 <= at < 2**62 else 0.0
            elif type(record) is dict:  # {"step", "at" (seconds), "metrics" | "checkpoint"}: earlier versions
                step, at = record.get("step"), record.get("at")
                metrics, checkpoint = record.get("metrics"), record.get("checkpoint")
                if type(at) is not float:
                    at = _finite(at)
                elif at - at != 0.0:  # infinite or NaN
                    at = 0.0
            else:
                continue
            if type(step) is not int or not 0 <= step < 2**62:
                step = None
            if type(checkpoint) is str:
                checkpoints.append((checkpoint[:1024], step if step is not None else -1, at))
            if type(metrics) is not dict:
                continue
            for name, raw_value in metrics.items():
                if type(raw_value) is float and name in names:
                    value = raw_value  # what report() writes, for a metric already admitted: nothing to check
                else:
                    if not isinstance(name, str) or not NAME.fullmatch(name) or isinstance(raw_value, bool):
                        continue
                    value = to_float(raw_value) if isinstance(raw_value, (int, float, str)) else None
                    if value is None or not self._admit(name):
                        continue
                s = steps.get(name, 0) if step is None else step
                steps[name] = s + 1
                append(Point(name, s, at, value))
        return points, checkpoints


def _finite(at) -> float:
    """A report's time as a float; 0.0 when it is none, not finite or too large for one."""
    if type(at) is not int:
        return 0.0
    try:
        return float(at)
    except OverflowError:
        return 0.0


def summarize(summary: dict | None, points: list[Point]) -> dict:
    """The run's summary updated with ``points``: per metric its latest value and step, min, max and count.

    NaN is never a minimum or maximum; it can be the latest value.
    """
    out = {name: dict(entry) for name, entry in (summary or {}).items()}
    by_name: dict[str, list[Point]] = {}
    for p in points:
        group = by_name.get(p.name)
        if group is None:
            group = by_name[p.name] = []
        group.append(p)
    for name, group in by_name.items():
        entry = out.get(name)
        if entry is None:
            entry = out[name] = {"latest": None, "step": None, "min": None, "max": None, "count": 0}
        last = group[-1]
        entry["latest"], entry["step"], entry["count"] = json_number(last.value), last.step, entry["count"] + len(group)
        values = [p.value for p in group if p.value == p.value]  # NaN is not equal to itself
        if values:
            low, high = min(values), max(values)
            if entry["min"] is None or low < _as_float(entry["min"]):
                entry["min"] = json_number(low)
            if entry["max"] is None or high > _as_float(entry["max"]):
                entry["max"] = json_number(high)
    return out


def best_of(summary: dict | None, name: str, rules: list[MetricRule] | None = None):
    entry = (summary or {}).get(name)
    if not entry:
        return None
    return entry["min"] if goal_of(name, rules) == "minimize" else entry["max"]


def json_number(value: float):
    """A float as JSON can carry it: non-finite values as the strings JavaScript's ``Number()`` reads."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _as_float(value) -> float:
    return float(value) if not isinstance(value, str) else float(value.replace("Infinity", "inf"))
