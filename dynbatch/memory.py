"""A request's arena on transparent huge pages, and whether an array lies on them.

The arena (``graph.compiler.BufferPlan.allocate``) and the Deconvolution scratch come from
``zeroed_floats``. The kernels ask ``on_huge_pages`` where their choice depends on the TLB: a 1x1
convolution reads its input in place, each step of its micro-kernel another channel's row, for
more output channels where those rows lie on 2 MB pages (``kernels.convolution.reads_in_place``).
"""
import mmap
import weakref

import numpy as np

#: A transparent huge page, in bytes: arenas from this size on are laid on them (``zeroed_floats``).
HUGE_PAGE = 2 << 20

#: Where the system's setting is read: "always", "madvise" or "never", the chosen one in brackets.
_THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"

#: {start address: end address} of the memory ``zeroed_floats`` advised, while its array lives.
_advised: dict[int, int] = {}


def transparent_huge_pages() -> bool:
    """Whether memory advised with MADV_HUGEPAGE can get huge pages here: Linux, its setting not
    "never" (a system without the setting's file is taken to allow them)."""
    if not hasattr(mmap, "MADV_HUGEPAGE"):
        return False
    try:
        with open(_THP_SETTING) as handle:
            return "[never]" not in handle.read()
    except OSError:
        return True


def zeroed_floats(count: int) -> np.ndarray:
    """A zeroed float32 array of ``count`` elements. From HUGE_PAGE bytes on, where
    ``transparent_huge_pages``, it lies on private anonymous memory aligned to 2 MB and advised for
    transparent huge pages (MADV_HUGEPAGE: where the system's setting is "madvise", only such
    memory gets them). A kernel that walks a tensor across its rows or channels, such as a 1x1
    layer reading its input in place (each step of the micro-kernel another channel's row, 3 KB
    apart at 28x28), touches a new 4 KB page at almost every step and misses the TLB; a 2 MB page
    holds 640 such rows. Measured (``benchmarks/in_place_ab.py --what huge_pages``): ResNet
    0.973x-0.985x the time but for one 1.005x, the other networks 0.98x-1.01x."""
    size = count * 4
    if size < HUGE_PAGE or not transparent_huge_pages():
        return np.zeros(count, np.float32)
    # (Private: a shared mapping would be shared with a forked child too.)
    region = mmap.mmap(-1, size + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    start = -np.frombuffer(region, np.uint8, 1).ctypes.data % HUGE_PAGE
    try:
        region.madvise(mmap.MADV_HUGEPAGE, start, size)
    except OSError:  # refused: 4 KB pages, as np.zeros would give
        return np.zeros(count, np.float32)
    floats = np.frombuffer(region, np.float32, count, start)
    address = floats.ctypes.data
    _advised[address] = address + size
    weakref.finalize(floats, _advised.pop, address, None)
    return floats


def on_huge_pages(array: np.ndarray) -> bool:
    """Whether all of ``array``'s memory lies in memory that ``zeroed_floats`` advised for huge
    pages (a view of a request's arena: its tensors, from 2 MB of arena on)."""
    if not _advised or array.size == 0:
        return False
    steps = [(extent - 1) * stride for extent, stride in zip(array.shape, array.strides)]
    low = array.ctypes.data + sum(step for step in steps if step < 0)
    high = array.ctypes.data + sum(step for step in steps if step > 0) + array.itemsize
    # (A snapshot: another thread may free an arena, and with it its entry, between two steps.)
    return any(start <= low and high <= end for start, end in list(_advised.items()))
