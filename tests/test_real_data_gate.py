"""Real-data tests never skip silently under CI: a missing shared folder fails the run there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, ci: bool) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text((REPO / "tests" / "conftest.py").read_text())
    test = tmp_path / "test_needs_real.py"
    test.write_text("def test_it(real_data):\n    assert real_data.is_dir()\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["SIGNMAE_REAL_DATA"] = str(tmp_path / "no-such-folder")
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
         str(tmp_path), str(test)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )


def test_missing_real_data_skips_locally_and_fails_under_ci(tmp_path: Path) -> None:
    local = _run(tmp_path, ci=False)
    assert local.returncode == 0 and "1 skipped" in local.stdout, local.stdout
    ci = _run(tmp_path, ci=True)
    assert ci.returncode != 0 and "CI must run the real-data tests" in ci.stdout, ci.stdout
