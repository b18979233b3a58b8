"""The checkout's own tooling: what the linter looks at."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("venv_name", ["env", "my-venv", "py311"])
def test_ruff_never_lints_a_virtual_environment_in_the_checkout(tmp_path: Path, venv_name: str) -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    (tmp_path / "wsgisession").mkdir()
    (tmp_path / "wsgisession" / "ok.py").write_text("x = 1\n")
    venv = tmp_path / venv_name
    (venv / "src" / "somedep").mkdir(parents=True)  # where pip puts editable VCS installs
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (venv / "src" / "somedep" / "bad.py").write_text("import os\nx=1\n")
    listed = subprocess.run(
        [ruff, "check", "--show-files", "."], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    assert "ok.py" in listed
    assert venv_name not in listed
    subprocess.run([ruff, "check", "."], cwd=tmp_path, check=True, capture_output=True)
    subprocess.run([ruff, "format", "--check", "."], cwd=tmp_path, check=True, capture_output=True)
