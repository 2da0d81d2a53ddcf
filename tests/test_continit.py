"""The cont-init.d runner, with real shell scripts in a real temporary easymaker folder."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nothing.spawner.continit import run_cont_init, script_order


def add_script(root: Path, name: str, body: str, mode: int = 0o755) -> Path:
    folder = root / "cont-init.d"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(body)
    path.chmod(mode)
    return path


def records(root: Path, name: str) -> tuple[bytes, bytes]:
    folder = root / "cont-init.d"
    return (folder / f"{name}.exitcode").read_bytes(), (folder / f"{name}.output").read_bytes()


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_order_is_the_byte_order_of_the_names():
    assert script_order(["a", "B", "10-c", "1-b", "01-a"]) == ["01-a", "1-b", "10-c", "B", "a"]


def test_scripts_run_in_byte_order_in_the_easymaker_folder(tmp_path):
    trace = tmp_path / "trace"
    for name in ["a", "B", "10-c", "1-b", "01-a"]:
        add_script(tmp_path, name, f'#!/bin/sh\necho "{name} $(pwd) $MARK" >> {trace}\n')

    results = run_cont_init(tmp_path, timeout=10, env={**os.environ, "MARK": "from-env"})

    assert [r.name for r in results] == ["01-a", "1-b", "10-c", "B", "a"]
    assert trace.read_text().splitlines() == [
        f"{name} {tmp_path} from-env" for name in ["01-a", "1-b", "10-c", "B", "a"]]
    assert all(r.status == "ok" and r.exit_code == 0 for r in results)


def test_non_executable_shebangless_and_folder_entries_are_skipped_and_logged(tmp_path):
    ran = tmp_path / "ran"
    add_script(tmp_path, "10-readable-only", f"#!/bin/sh\ntouch {ran}-10\n", mode=0o644)
    add_script(tmp_path, "20-no-shebang", f"touch {ran}-20\n")
    add_script(tmp_path, "30-blank-first-line", f"\n#!/bin/sh\ntouch {ran}-30\n")
    (tmp_path / "cont-init.d" / "40-folder").mkdir()
    add_script(tmp_path / "cont-init.d" / "40-folder", "nested", f"#!/bin/sh\ntouch {ran}-40\n")
    add_script(tmp_path, "50-good", "#!/bin/sh\necho good\n")

    results = run_cont_init(tmp_path, timeout=10)

    assert not list(tmp_path.glob("ran-*"))
    assert [(r.name, r.status) for r in results] == [
        ("10-readable-only", "skipped"), ("20-no-shebang", "skipped"),
        ("30-blank-first-line", "skipped"), ("40-folder", "skipped"), ("50-good", "ok")]
    folder = tmp_path / "cont-init.d"
    assert sorted(p.name for p in folder.iterdir()) == [
        "10-readable-only", "20-no-shebang", "30-blank-first-line", "40-folder",
        "50-good", "50-good.exitcode", "50-good.output"]
    assert (tmp_path / "cont-init.output").read_text() == (
        f"running scripts in {folder}\n"
        "skip 10-readable-only: not executable\n"
        "skip 20-no-shebang: the first line does not start with #!\n"
        "skip 30-blank-first-line: the first line does not start with #!\n"
        "skip 40-folder: not a regular file\n"
        "run 50-good\n"
        "exit 50-good: 0\n"
        "done: 1 run, 0 failed, 4 skipped\n")


def test_failing_and_hanging_scripts_do_not_stop_the_others(tmp_path):
    child_pid = tmp_path / "child.pid"
    add_script(tmp_path, "10-ok", "#!/bin/sh\necho hello\necho warn >&2\necho again\n")
    add_script(tmp_path, "20-fail", "#!/bin/sh\necho boom >&2\nexit 3\n")
    add_script(tmp_path, "30-hang", f"#!/bin/sh\necho started\nsleep 60 &\necho $! > {child_pid}\nwait\n")
    add_script(tmp_path, "40-after", "#!/usr/bin/env python3\nprint('after')\n")

    started = time.monotonic()
    results = run_cont_init(tmp_path, timeout=1, kill_grace=0.5)
    elapsed = time.monotonic() - started

    assert [(r.name, r.status, r.exit_code) for r in results] == [
        ("10-ok", "ok", 0), ("20-fail", "failed", 3), ("30-hang", "timeout", 143), ("40-after", "ok", 0)]
    assert records(tmp_path, "10-ok") == (b"0\n", b"hello\nwarn\nagain\n")
    assert records(tmp_path, "20-fail") == (b"3\n", b"boom\n")
    assert records(tmp_path, "30-hang") == (b"143\n", b"started\n")
    assert records(tmp_path, "40-after") == (b"0\n", b"after\n")
    folder = tmp_path / "cont-init.d"
    assert (tmp_path / "cont-init.output").read_bytes() == (
        f"running scripts in {folder}\n"
        "run 10-ok\n"
        "exit 10-ok: 0\n"
        "run 20-fail\n"
        "exit 20-fail: 3\n"
        "run 30-hang\n"
        "exit 30-hang: 143 (timed out after 1 s)\n"
        "run 40-after\n"
        "exit 40-after: 0\n"
        "done: 4 run, 2 failed, 0 skipped\n").encode()
    assert elapsed < 60, "waited for the hanging script's sleep 60 instead of stopping it at its timeout"
    pid = int(child_pid.read_text())
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid), "the hanging script's child survived its process group being killed"


def test_a_script_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path):
    add_script(tmp_path, "10-stubborn", "#!/bin/sh\ntrap '' TERM\necho stubborn\nwhile :; do sleep 0.1; done\n")
    add_script(tmp_path, "20-next", "#!/bin/sh\necho next\n")

    results = run_cont_init(tmp_path, timeout=0.5, kill_grace=0.5)

    assert [(r.name, r.exit_code) for r in results] == [("10-stubborn", 137), ("20-next", 0)]
    assert records(tmp_path, "10-stubborn") == (b"137\n", b"stubborn\n")


def test_a_missing_interpreter_is_recorded_as_127(tmp_path):
    add_script(tmp_path, "10-bad", "#!/nonexistent/interpreter\n")
    add_script(tmp_path, "20-next", "#!/bin/sh\necho next\n")

    results = run_cont_init(tmp_path, timeout=10)

    assert [(r.name, r.exit_code) for r in results] == [("10-bad", 127), ("20-next", 0)]
    assert records(tmp_path, "10-bad") == (b"127\n", b"cannot execute 10-bad: No such file or directory\n")
    assert "exit 10-bad: 127 (cannot execute: No such file or directory)\n" in (
        tmp_path / "cont-init.output").read_text()


def test_records_are_rewritten_and_never_run_on_the_next_start(tmp_path):
    counter = tmp_path / "count"
    # The script prints a shebang line, so its .output record looks like a script.
    add_script(tmp_path, "10-echo-shebang", f"#!/bin/sh\necho '#!/bin/sh'\necho x >> {counter}\n")
    first = run_cont_init(tmp_path, timeout=10)
    first_log = (tmp_path / "cont-init.output").read_bytes()
    output = tmp_path / "cont-init.d" / "10-echo-shebang.output"
    output.chmod(0o755)

    second = run_cont_init(tmp_path, timeout=10)

    assert first == second
    assert [r.name for r in second] == ["10-echo-shebang"]
    assert counter.read_text() == "x\nx\n"
    assert (tmp_path / "cont-init.output").read_bytes() == first_log
    assert output.read_bytes() == b"#!/bin/sh\n"
    assert output.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "cont-init.d" / "10-echo-shebang.exitcode").stat().st_mode & 0o777 == 0o644


def test_a_record_name_without_its_script_is_skipped_with_a_log_line(tmp_path):
    ran = tmp_path / "ran"
    add_script(tmp_path, "gone.output", f"#!/bin/sh\ntouch {ran}\n")

    results = run_cont_init(tmp_path, timeout=10)

    assert not ran.exists()
    assert [(r.name, r.status) for r in results] == [("gone.output", "skipped")]
    assert "skip gone.output: the name ends in .output, which is reserved for script records\n" in (
        tmp_path / "cont-init.output").read_text()


def test_a_link_to_a_script_elsewhere_runs(tmp_path):
    target = tmp_path / "scripts" / "setup.sh"
    target.parent.mkdir()
    target.write_text("#!/bin/sh\necho linked\n")
    target.chmod(0o755)
    (tmp_path / "cont-init.d").mkdir()
    (tmp_path / "cont-init.d" / "10-setup").symlink_to(target)

    results = run_cont_init(tmp_path, timeout=10)

    assert [(r.name, r.status) for r in results] == [("10-setup", "ok")]
    assert records(tmp_path, "10-setup") == (b"0\n", b"linked\n")


def test_a_missing_easymaker_folder_writes_nothing(tmp_path):
    assert run_cont_init(tmp_path / "absent", timeout=10) == []
    assert not (tmp_path / "absent").exists()


def test_an_easymaker_folder_without_scripts_gets_an_empty_cont_init_d(tmp_path):
    assert run_cont_init(tmp_path, timeout=10) == []
    assert (tmp_path / "cont-init.d").is_dir()
    assert (tmp_path / "cont-init.output").read_text() == (
        f"running scripts in {tmp_path / 'cont-init.d'}\ndone: 0 run, 0 failed, 0 skipped\n")


def test_log_lines_also_go_to_the_given_logger(tmp_path, caplog):
    add_script(tmp_path, "10-ok", "#!/bin/sh\n")
    logger = logging.getLogger("test.continit")
    with caplog.at_level(logging.INFO, logger="test.continit"):
        run_cont_init(tmp_path, timeout=10, logger=logger)
    assert [r.getMessage() for r in caplog.records] == [
        f"cont-init: running scripts in {tmp_path / 'cont-init.d'}", "cont-init: run 10-ok",
        "cont-init: exit 10-ok: 0", "cont-init: done: 1 run, 0 failed, 0 skipped"]


@pytest.mark.parametrize("extra", [[], ["--timeout", "not-a-number"]])
def test_the_command_line_always_exits_zero(tmp_path, extra):
    add_script(tmp_path, "10-fail", "#!/bin/sh\nexit 9\n")
    # A relative --dir, as a person might type it.
    proc = subprocess.run([sys.executable, "-m", "nothing.spawner.continit", "--dir", tmp_path.name,
                           "--timeout", "5", *extra], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path.parent)
    assert proc.returncode == 0
    if extra:
        assert "invalid float value" in proc.stderr
        assert not (tmp_path / "cont-init.output").exists()
    else:
        log = (tmp_path / "cont-init.output").read_text()
        assert "exit 10-fail: 9\n" in log
        assert log.startswith(f"running scripts in {tmp_path / 'cont-init.d'}\n")
        assert proc.stderr == "".join(f"cont-init: {line}\n" for line in log.splitlines())


def test_the_command_line_accepts_a_missing_folder(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nothing.spawner.continit", "--dir", str(tmp_path / "no")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "does not exist" in proc.stderr
