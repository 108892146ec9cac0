"""The two-stage scenario Dynamic Batching was made for, end to end.

A stream of frames, each holding a varying number of handwritten digits (the scikit-learn digits set,
upscaled and placed at random on a noisy canvas). A first stage finds the objects with a simple,
honest detector: threshold, close small gaps, connected components. The crops of one frame form a
batch of unknown size that a LeNet-style classifier (trained on the digits, shipped as ONNX) runs
with ``set_batch(len(crops))``. The same stream is then run padded to the maximum batch and with a
network re-loaded for each new batch size, and the costs are compared.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources

import numpy as np
from scipy import ndimage

CROP = 16  # the classifier's input side; digits are 8x8 upscaled twice
FRAME_SHAPE = (64, 96)
THRESHOLD = 0.35
MIN_PIXELS = 6


def data_path(name: str):
    return resources.files("dynbatch") / "data" / name


def load_test_digits() -> tuple[np.ndarray, np.ndarray]:
    """Held-out digits the classifier never saw in training: images (M, 8, 8) in [0, 1], labels (M,)."""
    with data_path("digits_test.npz").open("rb") as handle:
        data = np.load(handle)
        return data["images"].astype(np.float32), data["labels"].astype(np.int64)


def upscale(digit: np.ndarray) -> np.ndarray:
    return np.kron(digit, np.ones((2, 2), np.float32))


@dataclass
class Frame:
    image: np.ndarray          # (H, W) float32
    boxes: list[tuple[int, int]]  # top-left corner of each placed digit
    labels: list[int]


def make_frames(count: int, max_objects: int, seed: int = 0) -> list[Frame]:
    """Frames with 0..max_objects digits each (non-overlapping, 3 px apart at least) and noise."""
    images, labels = load_test_digits()
    rng = np.random.default_rng(seed)
    frames = []
    height, width = FRAME_SHAPE
    for _ in range(count):
        image = np.zeros(FRAME_SHAPE, np.float32)
        taken = np.zeros(FRAME_SHAPE, bool)
        boxes, frame_labels = [], []
        for _ in range(int(rng.integers(1, max_objects + 1))):
            for _attempt in range(50):
                top, left = int(rng.integers(0, height - CROP + 1)), int(rng.integers(0, width - CROP + 1))
                area = (slice(max(0, top - 3), top + CROP + 3), slice(max(0, left - 3), left + CROP + 3))
                if not taken[area].any():
                    taken[area] = True
                    index = int(rng.integers(len(images)))
                    image[top:top + CROP, left:left + CROP] = upscale(images[index])
                    boxes.append((top, left))
                    frame_labels.append(int(labels[index]))
                    break
        image += rng.normal(0.0, 0.05, FRAME_SHAPE).astype(np.float32)
        frames.append(Frame(image, boxes, frame_labels))
    return frames


def center_crop(image: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    """The object's bounding box, centred in a CROP x CROP patch (cut if larger)."""
    patch = np.zeros((CROP, CROP), np.float32)
    box = image[rows, cols][:CROP, :CROP]
    top, left = (CROP - box.shape[0]) // 2, (CROP - box.shape[1]) // 2
    patch[top:top + box.shape[0], left:left + box.shape[1]] = box
    return patch


def detect(image: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """First stage: threshold, close gaps of a pixel or two (digits have broken strokes),
    label 8-connected components, drop specks. Returns crops (k, 1, CROP, CROP) in reading order
    and the centre of each."""
    mask = image > THRESHOLD
    labelled, count = ndimage.label(ndimage.binary_closing(mask, iterations=2) | mask, structure=np.ones((3, 3)))
    objects = []
    for index, found in enumerate(ndimage.find_objects(labelled), start=1):
        if found is None or (labelled[found] == index).sum() < MIN_PIXELS:
            continue
        rows, cols = found
        objects.append(((rows.start + rows.stop) // 2, (cols.start + cols.stop) // 2, rows, cols))
    objects.sort(key=lambda o: (o[1], o[0]))
    crops = np.stack([center_crop(image, rows, cols) for _, _, rows, cols in objects]) if objects else np.zeros((0, CROP, CROP), np.float32)
    return crops[:, None], [(r, c) for r, c, _, _ in objects]


def match(frame: Frame, centres: list[tuple[int, int]], predictions: np.ndarray) -> tuple[int, int]:
    """(correct, total) against ground truth: each true digit is matched to a detection whose
    centre lies inside its box; an unmatched true digit counts as wrong."""
    correct = 0
    for (top, left), label in zip(frame.boxes, frame.labels):
        for (row, col), predicted in zip(centres, predictions):
            if top <= row < top + CROP and left <= col < left + CROP:
                correct += int(predicted == label)
                break
    return correct, len(frame.labels)


def run(frames: int = 100, max_batch: int = 8, device: str = "CPU", seed: int = 0, echo=print) -> dict:
    """Run the demo and return its summary (also printed through ``echo``)."""
    import dynbatch as db

    model = data_path("digits_lenet.onnx").read_bytes()
    stream = make_frames(frames, max_batch, seed)
    detections = [detect(frame.image) for frame in stream]
    # A detector can split or merge digits: never hand the classifier more than it was built for.
    detections = [(crops[:max_batch], centres[:max_batch]) for crops, centres in detections]
    core = db.Core()

    start = time.perf_counter()
    network = db.read_network(model, batch=max_batch)
    exe = core.load_network(network, device, {db.KEY_DYN_BATCH_ENABLED: db.YES})
    request = exe.create_infer_request()
    input_name, output_name = next(iter(exe.inputs)), next(iter(exe.outputs))
    warm_up = {input_name: np.zeros(exe.inputs[input_name], np.float32)}
    request.infer(warm_up)  # the first inference starts the thread pools: keep it out of the timings
    echo(f"classifier loaded for max batch {max_batch} on {device} in {time.perf_counter() - start:.2f} s")
    echo(f"{'frame':>5} {'objects':>7} {'found':>5} {'latency ms':>10}  predictions")

    dynamic_ms, correct, total = [], 0, 0
    for index, (frame, (crops, centres)) in enumerate(zip(stream, detections)):
        start = time.perf_counter()
        predictions = np.zeros(0, np.int64)
        if len(crops):
            request.set_batch(len(crops))
            predictions = request.infer({input_name: crops})[output_name].argmax(axis=1)
        dynamic_ms.append((time.perf_counter() - start) * 1e3)
        good, count = match(frame, centres, predictions)
        correct, total = correct + good, total + count
        if index < 10 or index == len(stream) - 1:
            echo(f"{index:5d} {len(frame.labels):7d} {len(crops):5d} {dynamic_ms[-1]:10.2f}  {predictions.tolist()}")
        elif index == 10:
            echo("  ...")

    padded = core.load_network(db.read_network(model, batch=max_batch), device).create_infer_request()
    padded.infer(warm_up)
    padded_ms = []
    for crops, _ in detections:
        start = time.perf_counter()
        if len(crops):
            batch = np.zeros((max_batch,) + crops.shape[1:], np.float32)
            batch[: len(crops)] = crops
            padded.infer({input_name: batch})
        padded_ms.append((time.perf_counter() - start) * 1e3)

    reload_ms, loaded_batch, static = [], None, None
    for crops, _ in detections:
        start = time.perf_counter()
        if len(crops):
            if len(crops) != loaded_batch:  # what a static engine must do when the size changes
                static = core.load_network(db.read_network(model, batch=len(crops)), device).create_infer_request()
                loaded_batch = len(crops)
            static.infer({input_name: crops})
        reload_ms.append((time.perf_counter() - start) * 1e3)

    summary = {
        "frames": len(stream), "objects": total, "accuracy": correct / max(total, 1),
        "dynamic_ms": sum(dynamic_ms), "padded_ms": sum(padded_ms), "reload_ms": sum(reload_ms),
    }
    echo(f"\n{len(stream)} frames, {total} digits, accuracy {summary['accuracy']:.1%} (detector + classifier vs ground truth)")
    for label, key in (("dynamic batch (set_batch)", "dynamic_ms"), ("padded to max batch", "padded_ms"),
                       ("re-load per new batch size", "reload_ms")):
        echo(f"  {label:28s} {summary[key]:9.1f} ms total, {summary[key] / len(stream):7.3f} ms/frame")
    echo(f"speed-up of dynamic batch: {summary['padded_ms'] / summary['dynamic_ms']:.2f}x over padding, "
         f"{summary['reload_ms'] / summary['dynamic_ms']:.2f}x over re-loading")
    return summary
