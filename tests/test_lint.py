"""The code passes the linters configured in pyproject.toml: ruff (pyflakes, pycodestyle, bugbear, pyupgrade) everywhere,
mypy on the pure policy and the REST API; the pre-commit hooks run the same."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is part of the test extra: scripts/install.sh test installs it"
    result = subprocess.run([ruff, "check", "--output-format", "concise", "."], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing_in_the_policy_and_the_api():
    """``[tool.mypy]`` lists what is checked; scripts/typecheck.py maps ``nothing.<folder>`` for mypy."""
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "typecheck.py"), "--no-error-summary"],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_pre_commit_config_is_valid_and_runs_the_same_linters():
    config = REPO / ".pre-commit-config.yaml"
    result = subprocess.run([sys.executable, "-m", "pre_commit", "validate-config", str(config)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    text = config.read_text()
    assert ".venv/bin/ruff check" in text and "scripts/typecheck.py" in text and "trailing-whitespace" in text
