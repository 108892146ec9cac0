"""Hypothesis profiles, registered once: the first example of a kernel pays JIT compilation, so no
deadline. ``HYPOTHESIS_PROFILE=thorough`` runs more examples.

The ``device`` fixture runs a test module on "CPU" and, where numba.cuda finds a GPU or runs its
simulator (``NUMBA_ENABLE_CUDASIM=1``, how CI tests the GPU path), on "GPU" with tiny launch sizes.
"""
import contextlib
import os
import sys

import pytest
from hypothesis import HealthCheck, settings

from dynbatch import config, gpu

settings.register_profile(
    "default",
    deadline=None,
    max_examples=30,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=300)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


#: Why the GPU tests skip here (None: they run).
GPU_SKIP_REASON = gpu.unavailable_reason()
if GPU_SKIP_REASON is not None:
    GPU_SKIP_REASON = f"no GPU device: {GPU_SKIP_REASON}"
requires_gpu = pytest.mark.skipif(GPU_SKIP_REASON is not None, reason=GPU_SKIP_REASON or "")


@contextlib.contextmanager
def gpu_test_launches():
    """Launch sizes small enough that even a test's tiny tensors run several blocks and several
    grid-stride rounds. Under the simulator, whose threads hand the GIL to each other at every
    syncthreads, a short switch interval also makes the tiled kernels several times faster."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(config, "THREADS_PER_BLOCK", 12)  # not a power of two: the general reductions
        patch.setattr(config, "TILE", 4)
        patch.setattr(config, "MAX_BLOCKS", 5)
        patch.setattr(config, "MIN_BLOCKS", 4)  # small batches run the one-output-per-thread variant
        interval = sys.getswitchinterval()
        if gpu.is_simulator():
            sys.setswitchinterval(5e-5)
        try:
            yield
        finally:
            sys.setswitchinterval(interval)


@pytest.fixture(scope="module", params=["CPU", pytest.param("GPU", marks=requires_gpu)])
def device(request):
    """The device a test module's networks load on: every test runs once per device."""
    if request.param == "GPU":
        with gpu_test_launches():
            yield "GPU"
    else:
        yield "CPU"
