"""tools/setup.sh: a non-root user missing Debian packages gets the exact apt line."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_non_root_gets_apt_line_not_a_trace(tmp_path):
    """Nothing installed (dpkg-query says so), uid 1000: the exact apt line; the build packages only
    while the .venv is to be installed, the demo data only for the demo."""
    import hashlib
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "dpkg-query").write_text("#!/bin/sh\nexit 1\n")
    (fake / "id").write_text("#!/bin/sh\necho 1000\n")
    for f in fake.iterdir():
        f.chmod(0o755)
    venv = tmp_path / "venv"
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "VITDAY_VENV": str(venv)}

    def setup(*args):
        return subprocess.run(["bash", str(ROOT / "tools" / "setup.sh"), *args], capture_output=True,
                              text=True, env=env, timeout=60)
    build = "g++ python3-dev python3-venv libturbojpeg0-dev libopencv-dev pkg-config"
    for args, extra in (([], ""), (["--demo"], " dataset-fashion-mnist")):
        r = setup(*args)
        assert r.returncode == 1
        assert r.stderr.splitlines()[-1] == f"setup: run as root: apt-get update && apt-get install -y {build}{extra}"
        assert "Traceback" not in r.stderr and r.stdout == ""
    # an installed .venv (its stamp matches): make test needs no package, make demo only the data
    venv.mkdir()
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + (ROOT / "tools" / "setup.sh").read_bytes())
    (venv / ".vitday-installed").write_text(digest.hexdigest() + "\n")
    r = setup()
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    r = setup("--demo")
    assert r.returncode == 1 and r.stderr.splitlines()[-1].endswith("apt-get install -y dataset-fashion-mnist")


def test_a_venv_without_pip_is_made_again_or_explained(tmp_path):
    """Debian's python3 without python3-venv: `python3 -m venv` fails and leaves a venv with no pip,
    which every later run took for a good one. Now it is removed, with the apt line to run."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "dpkg-query").write_text("#!/bin/sh\necho 'install ok installed'\n")
    (fake / "python3").write_text(  # makes DIR/bin/python (no pip) and fails, as ensurepip's absence does
        '#!/bin/sh\nmkdir -p "$3/bin" && printf "#!/bin/sh\\nexit 1\\n" > "$3/bin/python" && '
        'chmod +x "$3/bin/python"\necho "The virtual environment was not created successfully" >&2\nexit 1\n')
    for f in fake.iterdir():
        f.chmod(0o755)
    venv = tmp_path / "venv"
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "PYTHON": str(fake / "python3"), "VITDAY_VENV": str(venv)}
    for _ in range(2):  # the second run meets the first one's leftovers, if any
        r = subprocess.run(["bash", str(ROOT / "tools" / "setup.sh")], capture_output=True, text=True,
                           env=env, timeout=60)
        assert r.returncode == 1 and "apt-get install python3-venv" in r.stderr.splitlines()[-1]
        assert not venv.exists()


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "set -euo pipefail" in ci
    assert "make test" in (ROOT / "README.md").read_text()
