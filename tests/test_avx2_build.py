"""The kernels as Numba compiles them for a CPU with AVX2 and no AVX-512, tested on whatever x86
CPU runs the suite. With AVX-512 (``gemm.WIDE_VECTORS``) the GEMM takes two or four A panels a
call, the stem 32 output channels and the Winograd transforms 16 tiles a vector; without it, one
panel, 16 channels and two 8-wide passes. The rest of the suite runs only the paths of the CPU it
runs on, so here a child process compiles for Haswell's features (``NUMBA_CPU_NAME`` and
``NUMBA_CPU_FEATURES``, which Numba's code generation and ``WIDE_VECTORS`` both read) and runs
the tests of those paths."""
import os
import platform
import subprocess
import sys

import llvmlite.binding as binding
import pytest

#: Haswell's features, as LLVM names them: AVX2 and FMA, no AVX-512.
HASWELL_FEATURES = ("+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+cx8,+f16c,+fma,+fsgsbase,+fxsr,+lzcnt,+mmx,+movbe,"
                    "+pclmul,+popcnt,+rdrnd,+sahf,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave,+xsaveopt")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64")
    or not binding.get_host_cpu_features().get("avx2", False),
    reason="needs an x86-64 CPU with AVX2 to run code compiled for Haswell")


def run_for_haswell(arguments, timeout):
    environment = dict(os.environ, NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES=HASWELL_FEATURES)
    return subprocess.run([sys.executable, *arguments], cwd=ROOT, env=environment, capture_output=True, text=True,
                          timeout=timeout)


def test_compiled_for_avx2_the_kernels_take_their_narrow_paths():
    done = run_for_haswell(["-c", "from dynbatch.kernels import gemm, stem, winograd; "
                                  "print(gemm.WIDE_VECTORS, gemm.PANELS_PER_CALL, stem.STEM_CHANNELS, winograd.WIDTH)"],
                           timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "1", "16", "8"]


def test_the_avx2_paths_match_their_references():
    """The micro-kernels (every height and store option), the panel dispatch, the stem and the
    Winograd kernels, compiled for Haswell, against the same references as on this CPU."""
    done = run_for_haswell(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_gemm.py",
                            "tests/test_winograd.py", "tests/test_kernels_spatial.py", "-k",
                            "micro_kernel or panel or output_channel_vectors or inograd"], timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
