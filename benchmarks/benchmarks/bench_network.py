"""Whole-network benchmarks over the runtime batch ``n`` (asv: each benchmark runs in
a fresh process, so kernels are compiled, or loaded from Numba's cache, in ``setup``)."""
import numpy as np

import dynbatch as db
from dynbatch.models import inception, lenet

MAX_BATCH = 16
BATCHES = [1, 2, 4, 8, 16]
NETWORKS = {"lenet": lenet, "inception": inception}


def _loaded(name, max_batch=MAX_BATCH, dynamic=True, device="CPU"):
    config = {db.KEY_DYN_BATCH_ENABLED: db.YES if dynamic else db.NO}
    return db.Core().load_network(NETWORKS[name](max_batch), device, config)


def _inputs(exe, n, seed=0):
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal((n,) + shape[1:]).astype(np.float32) for name, shape in exe.inputs.items()}


class WholeNetwork:
    """One inference of n rows on a network loaded once for MAX_BATCH."""

    params = (list(NETWORKS), BATCHES)
    param_names = ["network", "batch"]
    device = "CPU"

    def setup(self, network, batch):
        self.exe = _loaded(network, device=self.device)
        self.request = self.exe.create_infer_request()
        self.request.set_batch(batch)
        self.inputs = _inputs(self.exe, batch)
        self.request.infer(self.inputs)

    def time_infer(self, network, batch):
        self.request.infer(self.inputs)

    def track_ms_per_image(self, network, batch):
        import time
        start, repeats = time.perf_counter(), 20
        for _ in range(repeats):
            self.request.infer(self.inputs)
        return (time.perf_counter() - start) / repeats / batch * 1e3

    track_ms_per_image.unit = "ms/image"


class PaddedToMaxBatch:
    """What a static engine pays for n rows: the full MAX_BATCH inference."""

    params = [list(NETWORKS)]
    param_names = ["network"]

    def setup(self, network):
        self.exe = _loaded(network, dynamic=False)
        self.request = self.exe.create_infer_request()
        self.inputs = _inputs(self.exe, MAX_BATCH)
        self.request.infer(self.inputs)

    def time_infer_full_batch(self, network):
        self.request.infer(self.inputs)


class ChangingBatch:
    """A random sequence of batch sizes against the same calls grouped by size."""

    params = [list(NETWORKS)]
    param_names = ["network"]

    def setup(self, network):
        self.exe = _loaded(network)
        self.request = self.exe.create_infer_request()
        rng = np.random.default_rng(0)
        self.sequence = [int(n) for n in rng.integers(1, MAX_BATCH + 1, size=32)]
        self.inputs = {n: _inputs(self.exe, n) for n in set(self.sequence)}
        self._run(self.sequence)

    def _run(self, sequence):
        for n in sequence:
            self.request.set_batch(n)
            self.request.infer(self.inputs[n])

    def time_random_order(self, network):
        self._run(self.sequence)

    def time_grouped_by_size(self, network):
        self._run(sorted(self.sequence))

    def track_random_over_grouped(self, network):
        """Median over 15 rounds of (random order time) / (grouped time), the two interleaved in
        one process: one asv sample of each time_ above is too noisy to compare them (issue #5
        target: at most 1.05; benchmarks/batch_order.py measures it at length)."""
        import statistics
        import time

        ratios = []
        for round_ in range(15):
            orders = [self.sequence, sorted(self.sequence)]
            seconds = {}
            for index in ((0, 1) if round_ % 2 == 0 else (1, 0)):
                start = time.perf_counter()
                self._run(orders[index])
                seconds[index] = time.perf_counter() - start
            ratios.append(seconds[0] / seconds[1])
        return statistics.median(ratios)

    track_random_over_grouped.unit = "ratio"


class Load:
    params = [list(NETWORKS)]
    param_names = ["network"]

    def setup(self, network):
        _loaded(network)  # compiles, or fills Numba's on-disk cache

    def time_load_network(self, network):
        _loaded(network)


class CompiledSignatures:
    """Every kernel keeps exactly one compiled signature whatever batch sizes ran."""

    params = [list(NETWORKS)]
    param_names = ["network"]

    def setup(self, network):
        self.request = _loaded(network).create_infer_request()

    def track_max_signatures_per_kernel(self, network):
        for n in BATCHES + BATCHES[::-1]:
            self.request.set_batch(n)
            self.request.infer(_inputs(self.request._network, n))
        return max(len(step.kernel.signatures) for step in self.request._steps)


class Memory:
    """Activation bytes of one infer request (the arena every request allocates)."""

    params = [list(NETWORKS)]
    param_names = ["network"]

    def setup_cache(self):
        return {name: _loaded(name).memory for name in NETWORKS}

    def track_planned_activation_bytes(self, memory, network):
        return memory[network]["planned_bytes"]

    def track_naive_activation_bytes(self, memory, network):
        return memory[network]["naive_bytes"]

    def track_peak_live_activation_bytes(self, memory, network):
        """The most bytes of tensors alive at one step: the lower bound of any plan."""
        return memory[network]["peak_live_bytes"]

    def track_planned_over_peak(self, memory, network):
        """Planned arena / peak live bytes (1.0 is optimal; the target is at most 1.2)."""
        return memory[network]["planned_bytes"] / memory[network]["peak_live_bytes"]

    track_planned_over_peak.unit = "ratio"

    def peakmem_create_infer_request(self, memory, network):
        _loaded(network).create_infer_request()


class GpuWholeNetwork(WholeNetwork):
    """WholeNetwork on the "GPU" device: one inference of n rows, inputs copied in and outputs
    copied out on the request's stream. Skipped without a real CUDA GPU (the CUDA simulator would
    measure Python)."""

    device = "GPU"

    def setup(self, network, batch):
        from dynbatch import gpu

        if not gpu.is_available() or gpu.is_simulator():
            raise NotImplementedError("no CUDA GPU")
        super().setup(network, batch)
