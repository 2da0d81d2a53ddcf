"""The wheel and the editable install both give ``nothing.<folder>`` for the repository's top-level folders,
and ``from nothing import report``; the editable one resolves to the checkout's own files."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check"]

PROBE = textwrap.dedent("""
    import importlib.util, json, sys
    import nothing
    lazy = "nothing.common.tracking" not in sys.modules
    from nothing import report, save
    try:
        import nothing.tests
        stray = True
    except ImportError:
        stray = False
    print(json.dumps({
        "nothing": nothing.__file__,
        "policy": importlib.util.find_spec("nothing.scheduler.policy").origin,
        "api": importlib.util.find_spec("nothing.scheduler.api").origin,
        "magics": importlib.util.find_spec("nothing.magics").origin,
        "report": sys.modules[report.__module__].__file__,
        "save_is_tracking": save.__module__ == "nothing.common.tracking",
        "tracking_lazy": lazy,
        "stray": stray,
    }))
""")


def test_editable_install_imports_the_checkouts_files(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = str(venv / "bin" / "python")
    r = subprocess.run([*PIP, "--python", python, "install", "--quiet", "--no-deps", "-e", str(REPO)],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    found = json.loads(r.stdout)
    assert found == {
        "nothing": str(REPO / "toplevel" / "nothing" / "__init__.py"),
        "policy": str(REPO / "scheduler" / "policy.py"),
        "api": str(REPO / "scheduler" / "api" / "__init__.py"),
        "magics": str(REPO / "magics" / "__init__.py"),
        "report": str(REPO / "common" / "tracking.py"),
        "save_is_tracking": True,
        "tracking_lazy": True,
        "stray": False,  # only the mapped folders, not the checkout's other ones
    }


def test_the_wheel_holds_the_top_level_package_and_no_editable_machinery(tmp_path):
    r = subprocess.run([*PIP, "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), str(REPO)],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    (wheel,) = tmp_path.glob("nothingai-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"nothing/__init__.py", "nothing/scheduler/policy.py", "nothing/magics/options.py",
            "nothing/common/tracking.py", "nothing/scheduler/auth.py", "nothing/spawner/local.py"} <= names
    assert not [n for n in names if n.startswith(("toplevel/", "scheduler/", "_nothing")) or "hatch_build" in n]
    assert zipfile.ZipFile(wheel).read("nothing/__init__.py") == (REPO / "toplevel/nothing/__init__.py").read_bytes()
