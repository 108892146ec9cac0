"""Process-wide settings dynbatch makes at import (dynbatch/config.py), checked in fresh processes."""
import os
import subprocess
import sys

import pytest

SHOW = "import os, sys, dynbatch; print(os.environ['OPENBLAS_THREAD_TIMEOUT'], 'scipy.linalg' in sys.modules)"


@pytest.mark.parametrize("preset, expected", [(None, "4"), ("28", "28")])
def test_openblas_workers_sleep_between_calls_unless_the_user_chose(preset, expected):
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if preset is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = preset
    shown = subprocess.run([sys.executable, "-c", SHOW], env=env, capture_output=True, text=True, check=True)
    # The setting only reaches SciPy's OpenBLAS if importing dynbatch has not loaded it already.
    assert shown.stdout.split() == [expected, "False"]
