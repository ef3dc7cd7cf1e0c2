"""tools/setup.sh: a non-root user missing Debian packages gets the exact apt line."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_non_root_gets_apt_line_not_a_trace(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    # dpkg-query says nothing is installed; id says we are uid 1000.
    (fake / "dpkg-query").write_text("#!/bin/sh\nexit 1\n")
    (fake / "id").write_text("#!/bin/sh\necho 1000\n")
    for f in fake.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    r = subprocess.run(["bash", str(ROOT / "tools" / "setup.sh")], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 1
    assert ("run as root: apt-get update && apt-get install -y libturbojpeg0-dev "
            "libopencv-dev pkg-config dataset-fashion-mnist") in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "set -euo pipefail" in ci
    assert "make test" in (ROOT / "README.md").read_text()
