"""Compiling at load with a helper process (``dynbatch.compile_helper``): the jobs it is given, a
kernel it compiles being loaded from the cache by another process, and a load that starts it."""
import os
import pickle
import subprocess
import sys
import textwrap
import threading

import numpy as np

import dynbatch as db
from dynbatch import compile_helper, models
from dynbatch.kernels import chain

from .reference_network import run_reference


def test_jobs_list_each_kernel_and_signature_once_task_functions_first():
    network = models.inception(4, size=12)
    compiled = db.Core().load_network(network, "CPU", {db.KEY_DYN_BATCH_ENABLED: db.YES})._compiled
    steps = compiled.bind(compiled.plan.allocate(), link_tasks=False)
    jobs = compile_helper.compile_jobs(steps)
    descriptions = [description for _, description in jobs]
    kinds = sorted({kind for step in steps if step.kernel is chain.convolution_chain_cpu
                    for kind in chain.task_kinds(step.args)})
    assert kinds and descriptions[:len(kinds)] == [("task", kind) for kind in kinds]
    kernels = descriptions[len(kinds):]
    assert all(d[0] == "kernel" for d in kernels) and len(set(kernels)) == len(kernels)
    names = {(step.kernel.py_func.__module__, step.kernel.__name__) for step in steps}
    assert {(d[1], d[2]) for d in kernels} == names
    assert len(kernels) < len(steps)  # (inception repeats kernels and signatures)
    assert pickle.loads(pickle.dumps(descriptions)) == descriptions


def test_a_kernel_the_helper_compiled_is_loaded_from_the_cache(tmp_path):
    """helper_main, in its own process, compiles a cached kernel of a fresh module; this process
    then loads that kernel from the cache instead of compiling it."""
    (tmp_path / "helper_kernel.py").write_text(textwrap.dedent("""
        from numba import njit

        @njit(cache=True)
        def double(n, x):
            for i in range(n):
                x[i] *= 2.0
    """))
    from numba import types
    signature = (types.int64, types.Array(types.float32, 1, "C"))
    jobs = [("kernel", "helper_kernel", "double", signature), ("kernel", "no_such_module", "f", signature)]
    subprocess.run([sys.executable, "-c", compile_helper.HELPER_COMMAND],
                   input=pickle.dumps([str(tmp_path), *sys.path]) + pickle.dumps(jobs), check=True, timeout=300)
    sys.path.insert(0, str(tmp_path))
    try:
        import helper_kernel
        x = np.arange(4, dtype=np.float32)
        helper_kernel.double(3, x)
        np.testing.assert_array_equal(x, [0, 2, 4, 3])
        assert helper_kernel.double.stats.cache_hits[signature] == 1
        assert helper_kernel.double.stats.cache_misses[signature] == 0
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("helper_kernel", None)


def test_a_load_that_starts_the_helper_at_once_stops_it_and_runs_right(monkeypatch):
    helpers, started = [], threading.Event()

    class RecordedHelper(compile_helper._Helper):
        def __init__(self, jobs):
            super().__init__(jobs)
            helpers.append(self)

        def start(self):
            super().start()
            started.set()

    monkeypatch.setattr(compile_helper, "_Helper", RecordedHelper)
    monkeypatch.setattr(compile_helper, "HELPER_AFTER_SECONDS", 0.0)
    monkeypatch.setattr(RecordedHelper, "allowed", lambda self: True)
    # The loading process's first job waits for the helper to start, as a cold compile would.
    real_jobs = compile_helper.compile_jobs

    def waiting_jobs(steps):
        jobs = real_jobs(steps)
        first, description = jobs[0]
        return [(lambda: (started.wait(60), first()), description)] + jobs[1:]

    monkeypatch.setattr(compile_helper, "compile_jobs", waiting_jobs)
    network = models.lenet(4)
    request = db.Core().load_network(network, "CPU", {db.KEY_DYN_BATCH_ENABLED: db.YES}).create_infer_request()
    assert len(helpers) == 1 and helpers[0]._process is not None
    assert helpers[0]._process.returncode is not None  # stopped and reaped
    request.set_batch(3)
    x = np.random.default_rng(0).standard_normal((3, *network.inputs["crops"][1:])).astype(np.float32)
    ours, reference = request.infer({"crops": x}), run_reference(network, {"crops": x})
    for name in reference:
        np.testing.assert_allclose(ours[name], reference[name], rtol=1e-4, atol=1e-5)


def test_no_helper_when_turned_off_or_on_one_core(monkeypatch):
    monkeypatch.delenv(compile_helper.HELPER_VARIABLE, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert compile_helper._Helper([("task", 0)]).allowed()
    assert not compile_helper._Helper([]).allowed()
    monkeypatch.setenv(compile_helper.HELPER_VARIABLE, "0")
    assert not compile_helper._Helper([("task", 0)]).allowed()
    monkeypatch.delenv(compile_helper.HELPER_VARIABLE)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert not compile_helper._Helper([("task", 0)]).allowed()
