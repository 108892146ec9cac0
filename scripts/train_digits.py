"""Train the demo's LeNet-style digit classifier and write the package data the demo ships:
dynbatch/data/digits_lenet.onnx and dynbatch/data/digits_test.npz (held-out digits).

    pip install torch scikit-learn onnx && python scripts/train_digits.py

Dev-only: torch and scikit-learn are not dependencies of dynbatch. The classifier is trained on
crops made by the demo's own detector (dynbatch.demo.detect), so it sees what it will be fed.
"""
import pathlib

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

from dynbatch.demo import CROP, detect, upscale

DATA = pathlib.Path(__file__).resolve().parents[1] / "dynbatch" / "data"


class LeNet(nn.Module):
    """(N, 1, 16, 16) -> (N, 10) class probabilities."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):
        return torch.softmax(self.classifier(self.features(x)), dim=1)


def detector_crops(images, rng, copies):
    """Each digit placed alone on a noisy canvas and cut out by the demo's detector."""
    crops, keep = [], []
    for index, digit in enumerate(images):
        for _ in range(copies):
            canvas = np.zeros((CROP + 8, CROP + 8), np.float32)
            top, left = rng.integers(0, 9, size=2)
            canvas[top:top + CROP, left:left + CROP] = upscale(digit)
            canvas += rng.normal(0, 0.05, canvas.shape).astype(np.float32)
            found, _ = detect(canvas)
            if len(found):
                crops.append(found[0])
                keep.append(index)
    return np.stack(crops), np.array(keep)


def main():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    order = rng.permutation(len(images))
    test, train = order[:400], order[400:]
    x_train, kept = detector_crops(images[train], rng, copies=6)
    y_train = digits.target[train][kept]
    x_val, kept_val = detector_crops(images[test], rng, copies=1)
    y_val = digits.target[test][kept_val]

    model = LeNet()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    xs, ys = torch.from_numpy(x_train), torch.from_numpy(y_train)
    for epoch in range(12):
        permutation = torch.randperm(len(xs))
        for start in range(0, len(xs), 64):
            batch = permutation[start:start + 64]
            loss = nn.functional.nll_loss(torch.log(model(xs[batch]) + 1e-9), ys[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            accuracy = (model(torch.from_numpy(x_val)).argmax(1).numpy() == y_val).mean()
        print(f"epoch {epoch}: loss {loss.item():.3f}, held-out accuracy {accuracy:.3f}")

    DATA.mkdir(exist_ok=True)
    model.eval()
    torch.onnx.export(model, torch.zeros(1, 1, CROP, CROP), DATA / "digits_lenet.onnx", input_names=["crops"],
                      output_names=["prob"], dynamic_axes={"crops": {0: "N"}, "prob": {0: "N"}}, opset_version=13,
                      dynamo=False)
    np.savez_compressed(DATA / "digits_test.npz", images=images[test], labels=digits.target[test].astype(np.int8))
    print(f"wrote {DATA / 'digits_lenet.onnx'} and {DATA / 'digits_test.npz'}")


if __name__ == "__main__":
    main()
