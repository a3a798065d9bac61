#!/usr/bin/env python3
"""Round trip of every layer type between this crate and PyTorch, both directions.

1. `cargo run --release --example pytorch_round_trip -- export DIR`: the crate's weights, an input
   and the crate's output for each model of the zoo (`examples/common/zoo.rs`);
2. here: the same models built in PyTorch load the crate's weights (`strict=True`) and must give
   the crate's output; then fresh PyTorch weights (and batch-norm statistics) are saved with
   PyTorch's output;
3. `cargo run --release --example pytorch_round_trip -- check DIR`: the crate loads PyTorch's
   weights and must give PyTorch's output.

Prints a Markdown table of the largest absolute differences (docs/pytorch.md).

    pip install torch safetensors numpy
    python3 examples/pytorch/round_trip.py [DIR]
"""
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-5


class Residual(nn.Sequential):
    """x + body(x): the crate's Residual, named like a plain nn.Sequential body."""

    def forward(self, x):
        return x + super().forward(x)


def sequence(cls, last_step=False):
    """A batch-first recurrent layer that returns its outputs (or last hidden state) only, keeping
    PyTorch's parameter names."""

    class Layer(cls):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, batch_first=True, **kwargs)

        def forward(self, x):
            out, state = super().forward(x)
            if not last_step:
                return out
            h = state[0] if isinstance(state, tuple) else state
            return h[-1]

    return Layer


class Embedding(nn.Embedding):
    def forward(self, x):
        return super().forward(x.long())  # the crate passes ids as floats


class SinusoidalPositions(nn.Module):
    """x + the "Attention Is All You Need" table (sin at even, cos at odd columns); no parameters."""

    def __init__(self, embed):
        super().__init__()
        self.embed = embed

    def forward(self, x):
        t = torch.arange(x.shape[1], dtype=torch.float64)[:, None]
        pair = (torch.arange(self.embed) // 2 * 2).double()
        angle = t / 10000.0 ** (pair / self.embed)
        table = torch.where(torch.arange(self.embed) % 2 == 0, angle.sin(), angle.cos())
        return x + table.float()


class PositionEmbedding(nn.Module):
    """x + a learned table's first T rows, under the crate's name `weight`."""

    def __init__(self, max_len, embed):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(max_len, embed))

    def forward(self, x):
        return x + self.weight[:x.shape[1]]


class CausalSelfAttention(nn.MultiheadAttention):
    """Self-attention with a causal mask, returning the output only (PyTorch's names)."""

    def __init__(self, embed, heads):
        super().__init__(embed, heads, batch_first=True)

    def forward(self, x):
        t = x.shape[1]
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)  # True: not allowed
        return super().forward(x, x, x, attn_mask=causal, need_weights=False)[0]


def encoder_layer(embed, heads, ff, **kwargs):
    return nn.TransformerEncoderLayer(embed, heads, ff, batch_first=True, **kwargs)


class Gpt(nn.Module):
    """The crate's DecoderOnly (pre-LN GELU blocks, causal, tied head) from PyTorch's modules."""

    def __init__(self, vocab, embed, heads, layers, ff, max_len):
        super().__init__()
        self.tok = nn.Embedding(vocab, embed)
        self.pos = nn.Embedding(max_len, embed)
        self.blocks = nn.ModuleList([encoder_layer(embed, heads, ff, activation="gelu", norm_first=True)
                                     for _ in range(layers)])
        self.norm = nn.LayerNorm(embed)

    def forward(self, ids):
        ids = ids.long()
        t = ids.shape[1]
        h = self.tok(ids) + self.pos.weight[:t]
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
        for block in self.blocks:
            h = block(h, src_mask=causal)
        return self.norm(h) @ self.tok.weight.T


def zoo():
    """The models of examples/common/zoo.rs, in PyTorch."""
    return {
        "dense_activations": nn.Sequential(
            nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 5), nn.Sigmoid(), nn.Linear(5, 4, bias=False), nn.Tanh(),
            nn.Linear(4, 3), nn.Softmax(dim=1)),
        "leaky_gelu_logsoftmax": nn.Sequential(
            nn.Linear(6, 5), nn.LeakyReLU(0.2), nn.Linear(5, 5), nn.GELU(), nn.Linear(5, 4),
            nn.GELU(approximate="tanh"), nn.Linear(4, 3), nn.LogSoftmax(dim=1)),
        "conv_batchnorm_pools": nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1, stride=2), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(4, 4, 2, padding=1, bias=False), nn.AvgPool2d(2, padding=1), nn.Flatten(), nn.Dropout(0.5),
            nn.Linear(36, 3)),
        "residual_global_pool": nn.Sequential(
            nn.Conv2d(1, 3, 3, padding=1),
            Residual(nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU()),
            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),  # the crate's GlobalAvgPool: one index
            nn.BatchNorm1d(3), nn.Linear(3, 2)),
        "lstm": nn.Sequential(sequence(nn.LSTM)(3, 5), nn.Linear(5, 2)),
        "gru_last_step": nn.Sequential(sequence(nn.GRU, last_step=True)(3, 5), nn.Linear(5, 2)),
        "rnn_tanh_relu": nn.Sequential(sequence(nn.RNN)(3, 4), sequence(nn.RNN, last_step=True)(4, 4, nonlinearity="relu")),
        "embedding_lstm": nn.Sequential(Embedding(7, 3), sequence(nn.LSTM)(3, 4), nn.Linear(4, 1)),
        "layernorm_sequence": nn.Sequential(
            nn.Linear(6, 8), nn.LayerNorm(8), nn.GELU(), nn.Linear(8, 3),
            nn.LayerNorm(3, eps=1e-3, elementwise_affine=False)),
        "transformer_blocks": nn.Sequential(
            encoder_layer(8, 2, 16, norm_first=True), encoder_layer(8, 2, 16, activation="gelu"), nn.Linear(8, 3)),
        "attention_positions": nn.Sequential(
            Embedding(7, 8), SinusoidalPositions(8), PositionEmbedding(6, 8), CausalSelfAttention(8, 2),
            nn.Linear(8, 2)),
        "gpt_tied": nn.Sequential(Gpt(11, 8, 2, 2, 16, 6)),
    }


def crate(mode, folder):
    """Runs the crate's half (`export` or `check`); returns what it printed."""
    return subprocess.run(["cargo", "run", "--release", "--quiet", "--example", "pytorch_round_trip", "--", mode,
                           str(folder)], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def main():
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "target" / "round_trip").resolve()
    crate("export", folder)
    torch.manual_seed(0)
    to_torch = {}
    for name, net in zoo().items():
        io = load_file(str(folder / f"{name}.io.safetensors"))
        net.load_state_dict(load_file(str(folder / f"{name}.crate.safetensors")), strict=True)
        net.eval()
        with torch.no_grad():
            got = net(io["input"])
        to_torch[name] = (got - io["output"]).abs().max().item() if got.shape == io["output"].shape else float("inf")
        # Fresh PyTorch weights, and batch-norm statistics from a few training passes.
        fresh = zoo()[name]
        fresh.train()
        with torch.no_grad():
            for _ in range(3):
                fresh(io["input"].repeat(2, *([1] * (io["input"].dim() - 1))))
        fresh.eval()
        with torch.no_grad():
            out = fresh(io["input"])
        save_file({k: v.contiguous() for k, v in fresh.state_dict().items()}, str(folder / f"{name}.torch.safetensors"))
        save_file({"output": out.contiguous()}, str(folder / f"{name}.torch_out.safetensors"))
    out = crate("check", folder)
    to_crate = {line.split()[0]: float(line.split()[1]) for line in out.splitlines() if line.strip()}
    print(f"PyTorch {torch.__version__}\n")
    print("| model | crate → PyTorch: max abs difference | PyTorch → crate: max abs difference | ok |")
    print("|---|---|---|---|")
    bad = 0
    for name in zoo():
        a, b = to_torch[name], to_crate.get(name, float("inf"))
        ok = a <= TOLERANCE and b <= TOLERANCE
        bad += not ok
        print(f"| {name} | {a:.1e} | {b:.1e} | {'yes' if ok else '**no**'} |")
    if bad:
        sys.exit(f"{bad} model(s) disagree beyond {TOLERANCE}")


if __name__ == "__main__":
    main()
