"""The committed JupyterLab bundle was built from the committed sources (the digest ``npm run build:prod`` records).

The full check, a rebuild compared byte for byte, is ``python scripts/labextension_bundle.py rebuild``: it needs
``node_modules`` and rewrites tracked files, so it is a script (CONTRIBUTING.md), not a test.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("labextension_bundle", REPO / "scripts" / "labextension_bundle.py")
bundle = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bundle)


def test_the_bundle_was_built_from_the_sources_as_committed():
    assert bundle.check() == 0, "rebuild the sidebar: cd labextension && PATH=../.venv/bin:$PATH npm run build:prod"


def test_any_change_to_a_source_changes_the_digest(tmp_path, monkeypatch):
    copy = tmp_path / "labextension"
    copy.mkdir()
    for name in bundle.SOURCES:
        source = REPO / "labextension" / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, copy / name)
    monkeypatch.setattr(bundle, "LAB", copy)
    monkeypatch.setattr(bundle, "STAMP", copy / "bundle-sources.sha256")
    assert bundle.write() == 0 and bundle.check() == 0
    style = sorted((copy / "style").glob("*.css"))[0]
    style.write_text(style.read_text() + "\n/* one more line */\n")
    assert bundle.check() == 1
