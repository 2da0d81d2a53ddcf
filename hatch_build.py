"""Editable installs (``pip install -e .``) that keep the repository's top-level folders.

The wheel maps ``scheduler/`` to ``nothing/scheduler`` and so on (``[tool.hatch.build.targets.wheel.sources]``).
An editable install cannot rewrite a prefix that way (hatchling refuses, see pfmoore/editables#20), so for the
editable build only this hook adds two files to the wheel:

- ``_nothing_editable.py``: a meta-path finder that maps exactly ``nothing.<name>`` to the checkout's folder
  (``nothing.scheduler`` is ``<checkout>/scheduler``; deeper modules follow through the package's
  ``__path__``), and nothing else;
- ``_nothing_editable.pth``: one ``import`` line, which Python's ``site`` runs at start, to install it.

The top-level ``nothing`` package itself is ``toplevel/nothing/__init__.py``, put on ``sys.path`` by hatch's
own ``dev-mode-dirs``.  Imports therefore resolve to the repository's files, with no copy to go stale.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

FINDER = '''\
"""Editable install of nothingai: ``nothing.<name>`` is the checkout's folder (made by hatch_build.py)."""

import importlib.util
import os
import sys

FOLDERS = {folders!r}


class NothingEditableFinder:
    """Finds ``nothing.scheduler`` and its siblings in the checkout; deeper names go through their ``__path__``."""

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        folder = FOLDERS.get(fullname)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(
            fullname, os.path.join(folder, "__init__.py"), submodule_search_locations=[folder])


if not any(getattr(f, "__name__", None) == "NothingEditableFinder" for f in sys.meta_path):
    sys.meta_path.insert(0, NothingEditableFinder)
'''


class EditableHook(BuildHookInterface):
    """Adds the finder of ``nothing.<folder>`` to editable wheels; standard wheels are left as configured."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version != "editable":
            return
        sources = self.build_config.sources  # {"scheduler/": "nothing/scheduler/", ...}
        folders = {
            dist.rstrip("/").replace("/", "."): os.path.join(self.root, src.rstrip("/"))
            for src, dist in sources.items()
        }
        out = tempfile.mkdtemp(prefix="nothing-editable-")
        finder, pth = os.path.join(out, "_nothing_editable.py"), os.path.join(out, "_nothing_editable.pth")
        with open(finder, "w") as f:
            f.write(FINDER.format(folders=dict(sorted(folders.items()))))
        with open(pth, "w") as f:
            f.write("import _nothing_editable\n")
        build_data["force_include_editable"][finder] = "_nothing_editable.py"
        build_data["force_include_editable"][pth] = "_nothing_editable.pth"
