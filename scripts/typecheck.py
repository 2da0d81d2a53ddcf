"""Type-check what ``[tool.mypy]`` in pyproject.toml lists: ``python scripts/typecheck.py [mypy options]``.

mypy finds modules by folder, and our folders are named by the wheel's mapping
(``scheduler/`` is ``nothing.scheduler``: ``[tool.hatch.build.targets.wheel.sources]``),
which mypy cannot read.  So this links ``build/mypy/nothing/<name>`` to each mapped
folder (and ``__init__.py`` to the top-level package), then runs mypy with
``mypy_path = "build/mypy"``.  Errors are reported under ``build/mypy/nothing/...``:
the same files as the checkout's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def link_tree() -> Path:
    wheel = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    links = {dist: src for src, dist in wheel["force-include"].items()}
    links.update({dist: src for src, dist in wheel["sources"].items()})
    root = REPO / "build" / "mypy"
    for dist, src in links.items():
        link = root / dist
        link.parent.mkdir(parents=True, exist_ok=True)
        target = os.path.relpath(REPO / src, link.parent)
        if not link.is_symlink() or os.readlink(link) != target:
            tmp = link.with_name(link.name + f".{os.getpid()}")
            tmp.symlink_to(target)
            tmp.replace(link)  # atomic: another checker running at the same time never sees it missing
    return root


def main(argv: list[str]) -> int:
    link_tree()
    return subprocess.run([sys.executable, "-m", "mypy", *argv], cwd=REPO).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
