"""Whether the committed JupyterLab bundle (``labextension/nothing_lab/labextension``) was built from the sources.

The bundle is committed prebuilt, so that installing the platform needs no Node.js.  Two checks:

- ``check`` (the default, fast, run by the test suite): the digest of the sources (``src/``, ``style/``,
  ``package.json``, ``package-lock.json``, ``tsconfig.json``) equals ``labextension/bundle-sources.sha256``,
  which ``npm run build:prod`` writes (``write``) after each production build.  It fails when a source
  changed and the bundle was not rebuilt.
- ``rebuild``: builds the bundle again in place (``npm run build:prod``, about 10 s with ``node_modules``
  installed by ``npm ci``) and fails if git then sees any change under ``labextension/nothing_lab`` or in the
  digest: the bundle is byte for byte what these sources make.  Run it on a clean checkout (CI, or before a
  commit): on a difference it leaves the rebuilt bundle in place, which is then the one to commit.  Not in the
  test suite, because it needs ``node_modules`` (npm, the network) and rewrites tracked files.
  (Chunk names depend on the build's paths relative to the checkout, which are the same in every checkout
  with ``.venv`` and ``labextension/node_modules`` where the install scripts put them.)

    python scripts/labextension_bundle.py [check | write | rebuild]
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAB = REPO / "labextension"
STAMP = LAB / "bundle-sources.sha256"
SOURCES = ("package.json", "package-lock.json", "tsconfig.json", "src", "style")


def source_files() -> list[Path]:
    found = []
    for name in SOURCES:
        path = LAB / name
        found += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return found


def digest() -> str:
    """SHA-256 over each source's path and bytes, in a fixed order."""
    h = hashlib.sha256()
    for path in source_files():
        data = path.read_bytes()
        h.update(f"{path.relative_to(LAB).as_posix()}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def check() -> int:
    recorded = STAMP.read_text().split()[0] if STAMP.exists() else "(none)"
    if recorded == digest():
        return 0
    print(f"labextension/: the sources changed since the bundle was built (digest {digest()[:12]}, the bundle's "
          f"{recorded[:12]}); rebuild it: cd labextension && PATH=../.venv/bin:$PATH npm run build:prod",
          file=sys.stderr)
    return 1


def write() -> int:
    STAMP.write_text(f"{digest()}  sources of nothing_lab/labextension (scripts/labextension_bundle.py)\n")
    return 0


def rebuild() -> int:
    env = dict(os.environ, PATH=f"{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    subprocess.run(["npm", "run", "--silent", "build:prod"], cwd=LAB, env=env, check=True)
    changed = subprocess.run(["git", "status", "--porcelain", "--", "labextension/nothing_lab", str(STAMP)],
                             cwd=REPO, capture_output=True, text=True, check=True).stdout
    if changed:
        print("labextension/: the committed bundle is not what its sources build; the rebuilt one is in place:\n"
              + changed, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "check"
    sys.exit({"check": check, "write": write, "rebuild": rebuild}[command]())
