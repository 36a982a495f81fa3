"""The examples in examples/ run to completion (host backend), so they cannot rot."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_engine_quickstart_runs_on_the_host_backend():
    env = dict(os.environ, KVPAGER_BACKEND="host")
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "engine_quickstart.py"), "--device", "cpu"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "trimmed:" in done.stdout and "layer 0 K:" in done.stdout
