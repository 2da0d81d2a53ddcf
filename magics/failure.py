"""Why a run failed, in one line: the service's reason, completed from the run's log when it says only the exit code.

The service may already put the exception in its reason; then it is shown as it is.
A missing module gets the fix: add it to ``requirements.txt``.
"""

from __future__ import annotations

import re

from .client import NothingError

BARE_EXIT = re.compile(r"\s*(exited with (exit )?code -?\d+|exit (status|code) -?\d+)\.?\s*", re.IGNORECASE)
_EXCEPTION = re.compile(r"([A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)|Exception)(: .*)?")
_MISSING_MODULE = re.compile(r"ModuleNotFoundError: No module named '([^']+)'")
LOG_TAIL_LINES = 60


def last_exception(log: str) -> str | None:
    """The last line of the last traceback in ``log`` (``ValueError: bad lr``), or None."""
    lines = log.splitlines()
    start = max((i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")),
                default=None)
    candidates = lines[start + 1:] if start is not None else lines
    for line in reversed(candidates):
        if line and not line[0].isspace() and _EXCEPTION.fullmatch(line.strip()):
            return line.strip()[:300]
    return None


def requirements_hint(log: str) -> str | None:
    found = _MISSING_MODULE.findall(log)
    if not found:
        return None
    package = found[-1].split(".")[0]
    return f"add {package} to requirements.txt in the code's folder"


def failure_reason(run: dict, log: str) -> str:
    """The reason to show for ``run``: the service's, plus the exception and a fix when the log has them."""
    reason = (run.get("reason") or "").strip()
    if run.get("state") != "FAIL TRAIN":
        return reason
    exception = last_exception(log)
    if exception and (not reason or BARE_EXIT.fullmatch(reason)) and exception not in reason:
        reason = f"{reason}: {exception}" if reason else exception
    hint = requirements_hint(log)
    if hint and hint not in reason:
        reason = f"{reason}; {hint}" if reason else hint
    return reason


def needs_log(run: dict) -> bool:
    """Whether the log may add to the reason (a failed run whose reason is only an exit code)."""
    return run.get("state") == "FAIL TRAIN" and (
        not run.get("reason") or bool(BARE_EXIT.fullmatch(run["reason"])) or "ModuleNotFoundError" in run["reason"])


def explain(client, run: dict) -> dict:
    """``run`` with its reason completed from the log tail where that helps (one request, failed runs only)."""
    if not needs_log(run):
        return run
    try:
        log = client.logs(run["id"], tail=LOG_TAIL_LINES)[0]
    except NothingError:  # the reason alone is still worth showing
        return run
    return dict(run, reason=failure_reason(run, log))
