"""Serving many callers: requests of one network from several threads, AsyncInferQueue, and the
DynamicBatcher under a many-thread stress load and from asyncio."""
import asyncio
import importlib.metadata
import os
import random
import threading
import time

import numba
import numpy as np
import pytest

import dynbatch as db

from .reference_network import run_reference

MAX = 8
SAMPLE = (3, 8, 8)


def small_network(max_batch=MAX):
    """conv-relu-pool, fully connected, softmax; outputs "prob" and "fc" (two outputs, so results
    must come back per output name and in order)."""
    rng = np.random.default_rng(5)
    net = db.Network("serving")
    x = net.add_input("data", (max_batch,) + SAMPLE)
    y = net.add_layer("Convolution", [x], name="conv1", weights=rng.standard_normal((4, 3, 3, 3)) * 0.3,
                      biases=rng.standard_normal(4), strides=(1, 1), pads_begin=(1, 1), pads_end=(1, 1))
    y = net.add_layer("Activation", [y], name="relu1", type="relu")
    y = net.add_layer("Pooling", [y], name="pool1", pool_method="max", kernel=2, strides=2)
    y = net.add_layer("FullyConnected", [y], name="fc", weights=rng.standard_normal((5, 64)) * 0.1, biases=np.zeros(5))
    net.add_output(net.add_layer("SoftMax", [y], name="prob"))
    net.add_output(y)
    return net


@pytest.fixture(scope="module")
def network():
    return small_network()


@pytest.fixture(scope="module")
def executable(network):
    return db.Core().load_network(network, "CPU", config={db.KEY_DYN_BATCH_ENABLED: db.YES})


@pytest.fixture(scope="module")
def pool(network):
    """64 samples and their outputs from the naive reference network."""
    x = np.random.default_rng(11).standard_normal((64,) + SAMPLE).astype(np.float32)
    return x, run_reference(network, {"data": x})


def single_sample_reference(executable, x):
    """Each sample run alone, at batch 1, on the same network: what a batched sample must equal."""
    request = executable.create_infer_request()
    request.set_batch(1)
    return [request.infer({"data": x[i:i + 1]}) for i in range(len(x))]


def assert_same_outputs(got, want, tolerance=1e-4):
    assert list(got) == list(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=tolerance, atol=tolerance / 10, err_msg=name)


# -- several requests, several threads ----------------------------------------------------------------
def test_a_pip_installed_tbb_is_the_threading_layer(executable, pool):
    """Numba does not find pip's libtbb by itself and would quietly use OpenMP instead."""
    if "NUMBA_THREADING_LAYER" in os.environ:
        pytest.skip(f"NUMBA_THREADING_LAYER={os.environ['NUMBA_THREADING_LAYER']} chooses the layer")
    try:
        importlib.metadata.version("tbb")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the tbb package is not installed (it is a dependency on Linux x86-64 only)")
    request = executable.create_infer_request()
    request.infer(pool[0][:MAX])  # Numba picks its layer at the first parallel kernel
    assert numba.threading_layer() == "tbb"


def test_four_threads_with_own_requests_run_200_inferences_at_random_n(executable, pool):
    x, reference = pool
    failures, done = [], []

    def worker(seed):
        rng = np.random.default_rng(seed)
        request = executable.create_infer_request()
        for _ in range(50):
            n = int(rng.integers(1, MAX + 1))
            rows = rng.choice(len(x), size=n, replace=False)
            request.set_batch(n)
            got = request.infer({"data": x[rows]})
            for name in reference:
                if not np.allclose(got[name], reference[name][rows], rtol=1e-4, atol=1e-5):
                    failures.append((seed, n, name))
            done.append(n)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert len(done) == 200


# -- AsyncInferQueue -----------------------------------------------------------------------------------
def test_async_queue_runs_every_job_and_calls_back_with_its_userdata(executable, pool):
    x, reference = pool
    queue = db.AsyncInferQueue(executable, jobs=3)
    assert len(queue) == 3 and all(isinstance(r, db.InferRequest) for r in queue)
    results, lock = {}, threading.Lock()

    def callback(request, userdata):
        with lock:  # callbacks of different requests run in different threads
            assert userdata not in results, f"job {userdata} called back twice"
            results[userdata] = (request.batch, {name: view.copy() for name, view in request.outputs.items()})

    queue.set_callback(callback)
    rng = np.random.default_rng(3)
    jobs = {}
    for job in range(40):
        n = int(rng.integers(1, MAX + 1))
        rows = rng.choice(len(x), size=n, replace=False)
        jobs[job] = rows
        inputs = x[rows] if job % 2 else {"data": x[rows]}  # a bare array for a one-input network, or a dict
        queue.start_async(inputs, userdata=job)  # the batch is the rows of the inputs
    assert queue.wait_all() is True
    assert sorted(results) == list(range(40))
    for job, rows in jobs.items():
        batch, outputs = results[job]
        assert batch == len(rows)
        assert_same_outputs(outputs, {name: reference[name][rows] for name in reference})
    assert queue.is_ready()
    assert queue.get_idle_request_id() in range(3)


def test_async_queue_explicit_batch_reads_the_first_rows(executable, pool):
    x, reference = pool
    queue = db.AsyncInferQueue(executable, jobs=2)
    got = {}
    queue.set_callback(lambda request, n: got.setdefault(n, request.outputs["prob"].copy()))
    for n in (1, 5, MAX):
        queue.start_async({"data": x[:MAX]}, userdata=n, batch=n)
    queue.wait_all()
    for n in (1, 5, MAX):
        np.testing.assert_allclose(got[n], reference["prob"][:n], rtol=1e-4, atol=1e-5)
    assert set(queue.userdata) <= {1, 5, MAX}


def test_async_queue_bad_job_raises_at_start_and_leaves_the_request_idle(executable, pool):
    x, reference = pool
    queue = db.AsyncInferQueue(executable, jobs=1)
    with pytest.raises(db.InputError, match=r"input 'data' has shape \(2, 3, 9, 9\)"):
        queue.start_async(np.zeros((2, 3, 9, 9), np.float32))
    with pytest.raises(db.InputError, match="dtype int64"):
        queue.start_async(np.zeros((2,) + SAMPLE, np.int64))
    with pytest.raises(db.BatchSizeError, match="expected 1 to 8"):
        queue.start_async(np.zeros((MAX + 1,) + SAMPLE, np.float32))
    with pytest.raises(db.InputError, match="missing"):
        queue.start_async({})
    assert queue.is_ready()
    got = []
    queue.set_callback(lambda request, _: got.append(request.outputs["prob"].copy()))
    queue.start_async(x[:2])
    queue.wait_all()
    np.testing.assert_allclose(got[0], reference["prob"][:2], rtol=1e-4, atol=1e-5)


def test_async_queue_reraises_a_callback_error_from_wait_all(executable, pool):
    x, _ = pool
    queue = db.AsyncInferQueue(executable, jobs=2)

    def callback(request, userdata):
        if userdata % 2:
            raise RuntimeError(f"callback of job {userdata} failed")

    queue.set_callback(callback)
    for job in range(4):
        queue.start_async(x[:1], userdata=job)
    with pytest.raises(RuntimeError, match=r"callback of job [13] failed") as caught:
        queue.wait_all()
    assert "1 more job(s) failed" in "".join(getattr(caught.value, "__notes__", []))
    assert queue.wait_all() is True  # the errors were reported once


def test_async_queue_start_blocks_until_a_request_is_idle(executable, pool):
    x, _ = pool
    queue = db.AsyncInferQueue(executable, jobs=1)
    release, order = threading.Event(), []
    queue.set_callback(lambda request, job: (release.wait(5) if job == 0 else None, order.append(job)))
    queue.start_async(x[:1], userdata=0)
    assert not queue.is_ready()  # job 0's callback holds the only request
    assert queue.wait_all(timeout=0.05) is False
    starter = threading.Thread(target=queue.start_async, args=(x[:1], 1))
    starter.start()
    starter.join(0.1)
    assert starter.is_alive(), "start_async did not wait for an idle request"
    release.set()
    starter.join(5)
    queue.wait_all()
    assert order == [0, 1]


def test_async_queue_refuses_bad_arguments(executable):
    with pytest.raises(db.ConfigError, match="jobs must be an int >= 0"):
        db.AsyncInferQueue(executable, jobs=-1)
    with pytest.raises(db.ConfigError, match="expects a dynbatch.ExecutableNetwork"):
        db.AsyncInferQueue("lenet")
    with pytest.raises(TypeError, match="callable"):
        db.AsyncInferQueue(executable, jobs=1).set_callback(42)
    assert len(db.AsyncInferQueue(executable)) == 2


# -- DynamicBatcher ------------------------------------------------------------------------------------
MALFORMED = [
    np.zeros((1,) + SAMPLE, np.float32),          # a batch axis
    np.zeros((3, 8, 9), np.float32),              # wrong shape
    np.zeros(SAMPLE, np.int32),                   # integer dtype
    {"image": np.zeros(SAMPLE, np.float32)},      # unknown input name
    [[1.0, 2.0], [3.0]],                          # ragged: not an array
]


@pytest.mark.parametrize("workers", [1, 2])
def test_stress_32_threads_2000_samples_each_result_is_its_own(executable, workers):
    """32 threads submit 2,000 single samples with random delays through one batcher, with
    malformed samples mixed in: every good sample gets exactly its own batch-1 outputs, every
    malformed one fails alone, and batches larger than 1 form."""
    count, threads = 2000, 32
    x = np.random.default_rng(2).standard_normal((count,) + SAMPLE).astype(np.float32)
    reference = single_sample_reference(executable, x)
    futures = [None] * count
    bad = {}  # {index of the good sample it follows: the malformed sample's future}
    barrier = threading.Barrier(threads)

    def submitter(t, batcher):
        rng = random.Random(t)
        barrier.wait()
        for i in range(t, count, threads):
            time.sleep(rng.random() * 0.002)
            futures[i] = batcher.submit(x[i])
            if i % 97 == 0:  # 21 malformed samples among the good ones, from many threads
                bad[i] = batcher.submit(MALFORMED[i % len(MALFORMED)])

    with db.DynamicBatcher(executable, max_delay_ms=2.0, workers=workers) as batcher:
        callers = [threading.Thread(target=submitter, args=(t, batcher)) for t in range(threads)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join()
        results = [future.result(timeout=30) for future in futures]
    stats = batcher.statistics
    for i, (got, want) in enumerate(zip(results, reference)):
        # Equal up to float32 rounding: a batch of k may sum in another order than a batch of 1
        # (BLAS blocking), while a mixed-up sample would differ by far more.
        assert list(got) == ["prob", "fc"], i
        for name in want:
            assert got[name].shape == (5,), (i, name)
            np.testing.assert_allclose(got[name], want[name][0], rtol=1e-5, atol=1e-6, err_msg=f"sample {i} {name}")
    for i, future in bad.items():
        with pytest.raises(db.InputError, match="sample"):
            future.result(timeout=0)
    assert len(bad) == 21
    assert stats.samples == count and stats.rejected == len(bad) and stats.failed == 0 and stats.pending == 0
    assert sum(size * times for size, times in stats.batch_sizes.items()) == count  # none lost, none twice
    assert max(stats.batch_sizes) > 1 and stats.mean_batch_size > 1, stats
    assert max(stats.batch_sizes) <= MAX
    assert stats.batches == sum(stats.batch_sizes.values())
    assert 0 <= stats.mean_queue_wait_ms <= stats.max_queue_wait_ms


def test_asyncio_callers_await_their_own_outputs(executable, pool):
    x, reference = pool

    async def main(batcher):
        results = await asyncio.gather(*(batcher.infer(x[i]) for i in range(len(x))))
        with pytest.raises(db.InputError, match=r"shape \(1, 3, 8, 8\); expected \(3, 8, 8\) \(a sample has no batch axis\)"):
            await batcher.infer(x[:1])
        return results

    with db.DynamicBatcher(executable, max_delay_ms=5.0) as batcher:
        results = asyncio.run(main(batcher))
    for i, got in enumerate(results):
        assert_same_outputs(got, {name: reference[name][i] for name in reference})
    assert batcher.statistics.mean_batch_size > 1


def test_a_full_batch_runs_at_once_and_a_lone_sample_after_max_delay(executable, pool):
    x, _ = pool
    with db.DynamicBatcher(executable, max_delay_ms=60_000.0) as batcher:
        start = time.perf_counter()
        futures = [batcher.submit(x[i]) for i in range(MAX)]
        for future in futures:
            future.result(timeout=10)
        assert time.perf_counter() - start < 10  # the full batch did not wait for max_delay_ms
    assert batcher.statistics.batch_sizes == {MAX: 1}

    with db.DynamicBatcher(executable, max_delay_ms=50.0) as batcher:
        start = time.perf_counter()
        batcher.submit(x[0]).result(timeout=10)
        assert time.perf_counter() - start >= 0.045
    assert batcher.statistics.batch_sizes == {1: 1}


def test_close_drains_pending_samples_and_refuses_new_ones(executable, pool):
    x, reference = pool
    batcher = db.DynamicBatcher(executable, max_delay_ms=60_000.0)
    futures = [batcher.submit(x[i]) for i in range(3)]
    cancelled = batcher.submit(x[3])
    assert cancelled.cancel()
    start = time.perf_counter()
    batcher.close()
    assert time.perf_counter() - start < 10  # close did not wait for max_delay_ms
    for i, future in enumerate(futures):
        assert_same_outputs(future.result(timeout=0), {name: reference[name][i] for name in reference})
    assert cancelled.cancelled()
    assert batcher.statistics.samples == 3 and batcher.statistics.batch_sizes == {3: 1}
    assert batcher.closed
    with pytest.raises(db.BatcherClosedError, match="closed"):
        batcher.submit(x[0])
    batcher.close()  # idempotent


def test_batcher_with_two_inputs_takes_dict_samples():
    rng = np.random.default_rng(4)
    net = db.Network("two_inputs")
    a = net.add_input("a", (4, 6))
    b = net.add_input("b", (4, 6))
    y = net.add_layer("Eltwise", [a, b], name="sum", operation="sum")
    net.add_output(net.add_layer("FullyConnected", [y], name="fc", weights=rng.standard_normal((3, 6)), biases=np.ones(3)))
    exe = db.Core().load_network(net, "CPU", config={db.KEY_DYN_BATCH_ENABLED: db.YES})
    xa, xb = rng.standard_normal((2, 10, 6)).astype(np.float32)
    with db.DynamicBatcher(exe, max_delay_ms=1.0) as batcher:
        futures = [batcher.submit({"a": xa[i], "b": xb[i]}) for i in range(10)]
        lone_array = batcher.submit(xa[0])
        missing = batcher.submit({"a": xa[0]})
        results = [future.result(timeout=10) for future in futures]
    reference = run_reference(net, {"a": xa, "b": xb})
    for i, got in enumerate(results):
        np.testing.assert_allclose(got["fc"], reference["fc"][i], rtol=1e-5, atol=1e-6)
    with pytest.raises(db.InputError, match=r"has inputs \['a', 'b'\]: a sample must be a dict"):
        lone_array.result(timeout=0)
    with pytest.raises(db.InputError, match=r"sample inputs \['a'\] do not match the network's inputs \['a', 'b'\]"):
        missing.result(timeout=0)


def test_batcher_refuses_bad_configuration(network, executable):
    static = db.Core().load_network(network, "CPU")
    with pytest.raises(db.ConfigError, match="DYN_BATCH_ENABLED"):
        db.DynamicBatcher(static)
    with pytest.raises(db.ConfigError, match="max_delay_ms must be a number >= 0"):
        db.DynamicBatcher(executable, max_delay_ms=-1)
    with pytest.raises(db.ConfigError, match="max_batch must be an int from 1 to 8"):
        db.DynamicBatcher(executable, max_batch=9)
    with pytest.raises(db.ConfigError, match="workers must be an int >= 1"):
        db.DynamicBatcher(executable, workers=0)
    with pytest.raises(db.ConfigError, match="expects a dynbatch.ExecutableNetwork"):
        db.DynamicBatcher(network)
