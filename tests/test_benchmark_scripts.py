"""Every script in benchmarks/ still starts: ``--help`` imports it and builds its arguments, so a
name that moved out of the package or a bad choice fails here and not at the next measurement
(``in_place_ab.py`` once stopped starting at all, its choices naming a moved constant)."""
import pathlib
import subprocess
import sys

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(path.name for path in BENCHMARKS.glob("*.py"))


def test_the_scripts_are_found():
    assert {"compare.py", "in_place_ab.py", "convolution_ab.py", "network_ab.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_script_starts(script):
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"], capture_output=True, text=True,
                            timeout=120, cwd=BENCHMARKS.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage:"), result.stdout[:200]
