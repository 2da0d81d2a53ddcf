"""``from nothing import report``: buffered off the training loop, written whole at exit, harmless outside a run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import time

from nothing.scheduler.metrics import Reader


def run_python(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=dict(os.environ, **env),
                          capture_output=True, text=True, timeout=60)


def test_reports_reach_the_metrics_file_at_exit_in_order(tmp_path):
    target = tmp_path / "metrics.jsonl"
    result = run_python("""
        from nothing import report, save
        for i in range(25000):
            report(step=i, loss=1 / (i + 1), acc=float("nan") if i == 7 else 0.5)
        save("epoch-1.pt", step=24999)
    """, {"NOTHING_METRICS_FILE": str(target)})
    assert result.returncode == 0, result.stderr
    lines = target.read_text().splitlines()
    records = [r for line in lines for r in json.loads(line)]
    # At most 500 reports to a line: 51 lines when the writer thread keeps up, a few more when a loaded machine
    # wakes it with part of a line queued (the order and the count of reports are what must hold).
    assert all(len(json.loads(line)) <= 500 for line in lines) and 51 <= len(lines) <= 60, len(lines)
    assert len(records) == 25001
    points, checkpoints = Reader().report_lines([line.encode() for line in lines])
    assert [p.step for p in points if p.name == "loss"] == list(range(25000))
    assert [(p.name, p.value) for p in points if p.step == 7 and p.name == "loss"] == [("loss", 1 / 8)]
    assert [math.isnan(p.value) for p in points if p.name == "acc"][6:9] == [False, True, False]
    assert [(name, step) for name, step, _ in checkpoints] == [("epoch-1.pt", 24999)]
    assert all(abs(p.at - time.time()) < 600 for p in points)  # seconds of the epoch, as the platform keeps them
    assert oct(target.stat().st_mode & 0o777) == "0o600"


def test_a_forked_child_writes_its_own_reports_once(tmp_path):
    target = tmp_path / "metrics.jsonl"
    result = run_python("""
        import os
        from nothing import report, flush
        report(step=1, parent=1)
        flush()
        pid = os.fork()
        if pid == 0:
            report(step=2, child=1)
            flush()
            os._exit(0)
        os.waitpid(pid, 0)
    """, {"NOTHING_METRICS_FILE": str(target)})
    assert result.returncode == 0, result.stderr
    points, _ = Reader().report_lines(target.read_bytes().splitlines())
    assert [p.name for p in points] == ["parent", "child"]


def test_outside_a_run_reports_are_dropped_with_one_warning(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NOTHING_METRICS_FILE"}
    result = subprocess.run([sys.executable, "-c", "from nothing import report\nreport(loss=1)\nreport(loss=2)"],
                            env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0
    assert result.stderr.count("not inside a NothingAI run") == 1
    assert list(tmp_path.iterdir()) == []
