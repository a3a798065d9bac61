#!/usr/bin/env python3
"""PyTorch side of the side-by-side benchmark (see README.md in this folder).

Measures, in one process, with a fixed number of threads:
  convnet training step (forward + cross-entropy + backward + Adam) at batch 64 and 256, images/s
  convnet inference at batch 256, images/s
  convnet single-image latency (batch 1 inference), microseconds
  mlp training step at batch 64, images/s; mlp single-input latency, microseconds
  LSTM / GRU (input 100, hidden 200, 50 steps) training step at batch 100, LSTM inference, sequences/s
  peak resident memory of the process, MiB
and prints one JSON object. Installs nothing; needs `torch` and `numpy`.
"""
import json
import sys
import time

import torch
import torch.nn as nn


def convnet():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(1600, 10),
    )


def mlp():
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))


class SeqNet(nn.Module):
    """An LSTM or GRU (input 100, hidden 200) over 50 steps, its last output into Linear(200, 10)."""

    def __init__(self, cell):
        super().__init__()
        self.rnn = cell(100, 200, batch_first=True)
        self.fc = nn.Linear(200, 10)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.fc(out[:, -1])


class EncoderNet(nn.Module):
    """Two pre-LN TransformerEncoderLayer(128, 4, 512, dropout 0) over 64 steps, flattened into
    Linear(64·128, 10)."""

    def __init__(self):
        super().__init__()
        block = lambda: nn.TransformerEncoderLayer(128, 4, 512, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.Sequential(block(), block())
        self.fc = nn.Linear(64 * 128, 10)

    def forward(self, x):
        return self.fc(self.blocks(x).flatten(1))


class Gpt(nn.Module):
    """A decoder-only Transformer as the crate's DecoderOnly(65, 128, 4, 2, 512, 64).tied(): token
    and position tables, two pre-LN GELU blocks with a causal mask, a final LayerNorm, the head
    tied to the token table; dropout 0."""

    def __init__(self, vocab=65, embed=128, heads=4, layers=2, ff=512, max_len=64):
        super().__init__()
        self.tok = nn.Embedding(vocab, embed)
        self.pos = nn.Embedding(max_len, embed)
        self.blocks = nn.ModuleList([
            nn.TransformerEncoderLayer(embed, heads, ff, dropout=0.0, activation="gelu", batch_first=True,
                                       norm_first=True) for _ in range(layers)])
        self.norm = nn.LayerNorm(embed)

    def forward(self, ids):
        t = ids.shape[1]
        h = self.tok(ids) + self.pos.weight[:t]
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
        for block in self.blocks:
            h = block(h, src_mask=causal, is_causal=True)
        return self.norm(h) @ self.tok.weight.T


def gpt_train_rate(batch, warmup, seconds):
    """Next-token training steps on random ids [batch, 64] (cross-entropy at every step)."""
    torch.manual_seed(0)
    net = Gpt()
    ids = torch.randint(0, 65, (batch, 64))
    targets = torch.randint(0, 65, (batch, 64))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss_fn(net(ids).reshape(-1, 65), targets.reshape(-1)).backward()
        opt.step()

    return batch / timed(step, warmup, seconds)


class Sakt(nn.Module):
    """The knowledge-tracing example's SAKT (examples/knowledge_tracing/sakt.rs): the next item's
    embedding attends (causally) to the answers so far plus learned positions; then
    LN(q + a), a position-wise feed-forward network, LN, and one logit per step."""

    def __init__(self, items=100, embed=64, heads=4, max_len=100):
        super().__init__()
        self.answers = nn.Embedding(2 * items + 1, embed, padding_idx=2 * items)
        self.items = nn.Embedding(items, embed)
        self.positions = nn.Parameter(torch.randn(max_len, embed))
        self.attention = nn.MultiheadAttention(embed, heads, batch_first=True)
        self.norm1 = nn.LayerNorm(embed)
        self.ff = nn.Sequential(nn.Linear(embed, embed), nn.ReLU(), nn.Linear(embed, embed))
        self.norm2 = nn.LayerNorm(embed)
        self.head = nn.Linear(embed, 1)

    def forward(self, answers, nxt):
        t = answers.shape[1]
        m = self.answers(answers) + self.positions[:t]
        q = self.items(nxt)
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
        a, _ = self.attention(q, m, m, attn_mask=causal, need_weights=False)
        h = self.norm1(q + a)
        z = self.norm2(h + self.ff(h))
        return self.head(z).squeeze(-1)


def sakt_train_rate(batch, warmup, seconds):
    """SAKT training steps on random histories [batch, 100] (100 items), BCE on every next answer."""
    torch.manual_seed(0)
    net = Sakt()
    answers = torch.randint(0, 200, (batch, 100))
    nxt = torch.randint(0, 100, (batch, 100))
    targets = torch.randint(0, 2, (batch, 100)).float()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()

    def step():
        opt.zero_grad()
        loss_fn(net(answers, nxt), targets).backward()
        opt.step()

    return batch / timed(step, warmup, seconds)


def timed(step, warmup, seconds):
    """Runs `step` `warmup` times, then repeatedly for at least `seconds`; returns seconds per call."""
    for _ in range(warmup):
        step()
    n, start = 0, time.perf_counter()
    while True:
        step()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and n >= 5:
            return elapsed / n


def train_rate(net, shape, batch, warmup, seconds):
    torch.manual_seed(0)
    x = torch.rand(batch, *shape)
    y = torch.randint(0, 10, (batch,))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss_fn(net(x), y).backward()
        opt.step()

    return batch / timed(step, warmup, seconds)


def peak_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
    # An optional third argument measures only the named figures (comma-separated), as the Rust
    # side's `speed` does: compare.py runs each figure in its own pair of processes.
    only = set(sys.argv[3].split(",")) if len(sys.argv) > 3 else None
    warmup = 10
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    out = {"framework": "pytorch", "version": torch.__version__, "threads": threads,
           "cpu_capability": torch.backends.cpu.get_cpu_capability()}

    def figure(name, measure):
        if only is None or name in only:
            out[name] = measure()

    figure("convnet_train_b64", lambda: train_rate(convnet(), (1, 28, 28), 64, warmup, seconds))
    figure("convnet_train_b256", lambda: train_rate(convnet(), (1, 28, 28), 256, warmup, seconds))
    net = convnet().eval()
    with torch.inference_mode():
        x = torch.rand(256, 1, 28, 28)
        figure("convnet_infer_b256", lambda: 256 / timed(lambda: net(x), warmup, seconds))
        x1 = torch.rand(1, 1, 28, 28)
        figure("convnet_latency_b1_us", lambda: 1e6 * timed(lambda: net(x1), warmup * 10, seconds))
    figure("mlp_train_b64", lambda: train_rate(mlp(), (784,), 64, warmup, seconds))
    small = mlp().eval()
    with torch.inference_mode():
        x1m = torch.rand(1, 784)
        figure("mlp_latency_b1_us", lambda: 1e6 * timed(lambda: small(x1m), warmup * 10, seconds))
    figure("lstm_train_b100", lambda: train_rate(SeqNet(nn.LSTM), (50, 100), 100, warmup, seconds))
    seq = SeqNet(nn.LSTM).eval()
    with torch.inference_mode():
        xs = torch.rand(100, 50, 100)
        figure("lstm_infer_b100", lambda: 100 / timed(lambda: seq(xs), warmup, seconds))
    figure("gru_train_b100", lambda: train_rate(SeqNet(nn.GRU), (50, 100), 100, warmup, seconds))
    figure("encoder_train_b32", lambda: train_rate(EncoderNet(), (64, 128), 32, warmup, seconds))
    enc = EncoderNet().eval()
    with torch.inference_mode():
        xe = torch.rand(32, 64, 128)
        figure("encoder_infer_b32", lambda: 32 / timed(lambda: enc(xe), warmup, seconds))
    figure("gpt_train_b32", lambda: gpt_train_rate(32, warmup, seconds))
    figure("sakt_train_b64", lambda: sakt_train_rate(64, warmup, seconds))
    out["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
