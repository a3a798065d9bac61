#!/usr/bin/env python3
"""DP-SGD side by side: Opacus and this crate train the walkthrough's CNN on the bundled digits with
the same noise multiplier, clipping norm, sampling rate, epochs, optimizer and learning rate.
Reports test accuracy (mean of the seeds) and training throughput (images/s) for both.

    pip install torch opacus numpy
    cargo build --release --example image_classify
    python3 benches/opacus/compare_dp.py [--epsilon 3] [--epochs 10] [--seeds 1 2 3] [--threads 2]

The noise multiplier is the one this crate's accountant finds for --epsilon (printed by the
walkthrough), passed to Opacus explicitly so both add the same noise.
"""
import argparse
import gzip
import re
import subprocess
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "data" / "digits"
warnings.filterwarnings("ignore")


def idx(name):
    with gzip.open(DIGITS / name) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data[4 + 4 * dims:], dtype=np.uint8).reshape(shape)


def load():
    xs = idx("train-images-idx3-ubyte.gz").astype(np.float32)[:, None] / 255.0
    xt = idx("t10k-images-idx3-ubyte.gz").astype(np.float32)[:, None] / 255.0
    # MNIST's published statistics, as the crate's private run uses (the private training set's own
    # would be released without noise), and as Opacus's MNIST example uses.
    mean, std = 0.1307, 0.3081
    return ((xs - mean) / std, idx("train-labels-idx1-ubyte.gz").astype(np.int64),
            (xt - mean) / std, idx("t10k-labels-idx1-ubyte.gz").astype(np.int64))


def cnn():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.5), nn.Linear(1600, 10),
    )


def opacus_run(seed, sigma, clip, q, epochs, lr, data):
    from opacus import PrivacyEngine
    torch.manual_seed(seed)
    xs, ys, xt, yt = data
    model = cnn()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    ds = torch.utils.data.TensorDataset(torch.from_numpy(xs), torch.from_numpy(ys))
    loader = torch.utils.data.DataLoader(ds, batch_size=int(round(q * len(ds))))
    engine = PrivacyEngine(accountant="rdp")
    model, opt, loader = engine.make_private(module=model, optimizer=opt, data_loader=loader,
                                             noise_multiplier=sigma, max_grad_norm=clip, poisson_sampling=True)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            if len(x) == 0:
                continue
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        acc = (model(torch.from_numpy(xt)).argmax(1).numpy() == yt).mean()
    return 100.0 * acc, epochs * len(ds) / seconds, engine.get_epsilon(1e-5)


def ours(seed, epsilon, epochs, threads):
    bin_ = ROOT / "target" / "release" / "examples" / "image_classify"
    out = subprocess.run([str(bin_), "--dp-epsilon", str(epsilon), "--epochs", str(epochs), "--seed", str(seed),
                          "--threads", str(threads), "--out", "/tmp/dp_compare"], capture_output=True, text=True, check=True).stdout
    sigma = float(re.search(r"noise multiplier σ = ([0-9.]+)", out).group(1))
    rate = float(re.search(r"private training: \d+ images in [0-9.]+ s \(([0-9.]+) images/s", out).group(1))
    acc = float(re.search(r"test accuracy: ([0-9.]+)%", out).group(1))
    spent = float(re.search(r"privacy spent: ε = ([0-9.]+)", out).group(1))
    return acc, rate, spent, sigma


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epsilon", type=float, default=3.0)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load()
    q, clip, lr = 64 / 8000, 1.0, 2e-3
    rows = {"backprop": [], "opacus": []}
    sigma = None
    for seed in args.seeds:
        acc, rate, spent, sigma = ours(seed, args.epsilon, args.epochs, args.threads)
        rows["backprop"].append((acc, rate, spent))
        print(f"backprop seed {seed}: {acc:.2f} %, {rate:.0f} images/s, ε {spent:.3f} (σ {sigma})", flush=True)
        acc, rate, spent = opacus_run(seed, sigma, clip, q, args.epochs, lr, data)
        rows["opacus"].append((acc, rate, spent))
        print(f"opacus   seed {seed}: {acc:.2f} %, {rate:.0f} images/s, ε {spent:.3f}", flush=True)
    print(f"\nDP-SGD, σ = {sigma}, C = {clip}, q = {q}, {args.epochs} epochs, Adam {lr}, {args.threads} threads, "
          f"seeds {args.seeds}; torch {torch.__version__}")
    print("\n| framework | test accuracy (mean, min–max) | training images/s (mean) | ε spent |\n|---|---|---|---|")
    for name, r in rows.items():
        accs = [a for a, _, _ in r]
        print(f"| {name} | {np.mean(accs):.2f} % ({min(accs):.2f}–{max(accs):.2f}) | {np.mean([x for _, x, _ in r]):,.0f} | {r[0][2]:.3f} |")


if __name__ == "__main__":
    main()
