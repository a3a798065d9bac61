#!/usr/bin/env python3
"""Continue training a model from this crate with PyTorch DistributedDataParallel, then hand the
weights back.

The walkthrough's CNN, trained by `cargo run --release --example image_classify`, is loaded into
the same PyTorch network (strict: every name and shape), trained further by 2 processes on this
machine with DDP (gloo backend, each process a shard of the data, gradients averaged by
all-reduce), saved with the crate's metadata, and loaded back by the crate, whose prediction for
a test digit must match PyTorch's. On a real cluster only the launch changes (torchrun across
hosts, nccl on GPUs); the files and the names stay the same.

    pip install torch safetensors numpy
    cargo run --release --features image --example image_classify   # writes target/image_classify/model.safetensors
    python3 examples/pytorch/continue_distributed.py [--epochs 2] [--processes 2]
"""
import argparse
import gzip
import os
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "data" / "digits"


def idx(name):
    with gzip.open(DIGITS / name) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data[4 + 4 * dims:], dtype=np.uint8).reshape(shape)


def cnn(classes=10):
    """The walkthrough's network, layer for layer (examples/image_classify/pipeline.rs)."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.5), nn.Linear(1600, classes),
    )


def load(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}


def data(meta):
    mean, std = float(meta["normalize_mean"]), float(meta["normalize_std"])
    norm = lambda a: torch.from_numpy((a.astype(np.float32)[:, None] / 255.0 - mean) / std)
    return (norm(idx("train-images-idx3-ubyte.gz")), torch.from_numpy(idx("train-labels-idx1-ubyte.gz").astype(np.int64)),
            norm(idx("t10k-images-idx3-ubyte.gz")), torch.from_numpy(idx("t10k-labels-idx1-ubyte.gz").astype(np.int64)))


def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def worker(rank, world, args, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    torch.manual_seed(rank)
    state, meta = load(args.weights)
    xs, ys, xt, yt = data(meta)
    model = cnn(int(meta["classes"]))
    model.load_state_dict(state, strict=True)  # the crate's names are nn.Sequential's
    if rank == 0:
        print(f"loaded {args.weights}: test accuracy {100 * accuracy(model, xt, yt):.2f}% (as the crate reported)")
    ddp = nn.parallel.DistributedDataParallel(model)
    sampler = torch.utils.data.distributed.DistributedSampler(torch.utils.data.TensorDataset(xs, ys), world, rank)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xs, ys), batch_size=32, sampler=sampler)
    opt = torch.optim.Adam(ddp.parameters(), lr=args.lr)
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        ddp.train()
        for x, y in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(ddp(x), y).backward()  # DDP all-reduces the gradients
            opt.step()
        if rank == 0:
            print(f"epoch {epoch + 1}/{args.epochs} on {world} processes: test accuracy {100 * accuracy(model, xt, yt):.2f}%")
    if rank == 0:
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(args.out), metadata=meta)  # same names, same metadata: the crate reads it
        print(f"wrote {args.out}")
    dist.destroy_process_group()


def png(path, pixels):
    """A minimal 8-bit greyscale PNG (so that no imaging library is needed)."""
    h, w = pixels.shape
    raw = b"".join(b"\0" + bytes(row) for row in pixels)
    chunk = lambda kind, body: struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", type=Path, default=ROOT / "target" / "image_classify" / "model.safetensors")
    ap.add_argument("--out", type=Path, default=ROOT / "target" / "image_classify" / "model_ddp.safetensors")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--lr", type=float, default=2e-4)
    args = ap.parse_args()
    if not args.weights.exists():
        raise SystemExit(f"{args.weights} not found: run "
                         "`cargo run --release --features image --example image_classify` first")
    mp.spawn(worker, args=(args.processes, args, 29500 + os.getpid() % 1000), nprocs=args.processes, join=True)

    # Hand-back: the crate loads the file and must predict what PyTorch predicts.
    state, meta = load(args.out)
    model = cnn(int(meta["classes"]))
    model.load_state_dict(state, strict=True)
    _, _, xt, _ = data(meta)
    digits = idx("t10k-images-idx3-ubyte.gz")
    model.eval()
    agree = 0
    for i in range(5):
        png(f"/tmp/ddp_digit_{i}.png", digits[i])
        with torch.no_grad():
            torch_class = model(xt[i:i + 1]).argmax(1).item()
        # `--features image`: the walkthrough needs it, and a crate downloaded from crates.io does not
        # turn it on by itself (this repository does, for its own examples).
        run = subprocess.run(["cargo", "run", "--release", "--quiet", "--features", "image", "--example",
                              "image_classify", "--", "--predict", f"/tmp/ddp_digit_{i}.png", "--model", str(args.out)],
                             cwd=ROOT, capture_output=True, text=True)
        if run.returncode != 0:
            raise SystemExit(f"the crate's --predict failed (exit {run.returncode}):\n{run.stderr}")
        out = run.stdout
        crate_class = int(out.strip().splitlines()[-1].split()[-1])
        agree += crate_class == torch_class
        print(f"test digit {i}: PyTorch predicts {torch_class}, the crate predicts {crate_class}")
    if agree != 5:
        raise SystemExit("the crate and PyTorch disagree on the handed-back model")
    print("handed back: the crate's predictions match PyTorch's")


if __name__ == "__main__":
    main()
