"""The output poison of the kernel tests: every output buffer starts as a quiet NaN whose payload
no arithmetic produces and no input holds, so that a row >= n written, even from an input's NaN
rows (which pool, sum and multiply into the plain NaN), shows."""
import numpy as np

OUTPUT_POISON_BITS = np.uint32(0x7FC0DEAD)


def poison(buffer: np.ndarray) -> None:
    """Every float32 of ``buffer`` set to the output poison."""
    buffer.view(np.uint32)[...] = OUTPUT_POISON_BITS


def poisoned_output(shape) -> np.ndarray:
    return np.full(shape, OUTPUT_POISON_BITS, dtype=np.uint32).view(np.float32)


def untouched(rows: np.ndarray) -> bool:
    """Whether every element of ``rows`` still holds the output poison."""
    return bool((rows.view(np.uint32) == OUTPUT_POISON_BITS).all())
