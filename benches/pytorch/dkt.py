#!/usr/bin/env python3
"""The knowledge-tracing example's model in PyTorch, trained the same way on the same files, for
comparing accuracy and time per epoch with `examples/knowledge_tracing` side by side.

    cargo run --release --example knowledge_tracing -- --save-data target/kt_data [options]
    python3 benches/pytorch/dkt.py target/kt_data [--threads 2] [same options]

The files are what the example trained on (train.txt, val.txt, test.txt: three lines per student,
after the split). The model: Embedding(2·items + 1, embed, padding_idx = 2·items) → LSTM(embed →
hidden) → Dropout → Linear(hidden → items), of which only the logit of the item answered next is
scored (binary cross-entropy over the real answers); Adam, gradient clipping at norm 1, batches of
sequences of similar length in a shuffled order, long histories cut into windows of `--window`
answers that share one answer (as `Histories::windows`), early stopping on the validation AUC with
the best epoch's weights kept. Prints one line per epoch and a final JSON line.

Needs: pip install torch numpy
"""
import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch


def roc_auc(y, p):
    """The area under the ROC curve by ranks (ties get their average rank)."""
    y, p = np.asarray(y, dtype=bool), np.asarray(p, dtype=np.float64)
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p))
    sorted_p = p[order]
    i = 0
    while i < len(p):
        j = i
        while j + 1 < len(p) and sorted_p[j + 1] == sorted_p[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    pos = y.sum()
    return (ranks[y].sum() - pos * (pos + 1) / 2) / (pos * (len(y) - pos))


def read_three_line(path):
    lines = [l.strip() for l in Path(path).read_text().splitlines() if l.strip()]
    students = []
    for i in range(0, len(lines), 3):
        items = [int(v) for v in lines[i + 1].rstrip(",").split(",")]
        correct = [int(v) for v in lines[i + 2].rstrip(",").split(",")]
        students.append((items, correct))
    return students


def windows(students, max_len):
    out = []
    for items, correct in students:
        start = 0
        while True:
            end = min(start + max_len, len(items))
            out.append((items[start:end], correct[start:end]))
            if end >= len(items):
                break
            start = end - 1
    return out


def tensors(seqs, items):
    """answers [N, T], next [N, T], targets [N, T] (NaN on padding), lengths [N]."""
    steps = max(len(s[0]) for s in seqs) - 1
    n = len(seqs)
    answers = torch.full((n, steps), 2 * items, dtype=torch.long)
    nxt = torch.zeros((n, steps), dtype=torch.long)
    targets = torch.full((n, steps), float("nan"))
    lengths = torch.zeros(n, dtype=torch.long)
    for s, (it, c) in enumerate(seqs):
        k = len(it) - 1
        answers[s, :k] = torch.tensor(it[:-1]) + items * torch.tensor(c[:-1])
        nxt[s, :k] = torch.tensor(it[1:])
        targets[s, :k] = torch.tensor(c[1:], dtype=torch.float)
        lengths[s] = k
    return answers, nxt, targets, lengths


class Dkt(torch.nn.Module):
    def __init__(self, items, embed, hidden, p):
        super().__init__()
        self.embedding = torch.nn.Embedding(2 * items + 1, embed, padding_idx=2 * items)
        self.lstm = torch.nn.LSTM(embed, hidden, batch_first=True)
        self.dropout = torch.nn.Dropout(p)
        self.head = torch.nn.Linear(hidden, items)

    def forward(self, answers, nxt, lengths):
        t_run = int(lengths.max())
        x = self.embedding(answers[:, :t_run])
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        h, _ = self.lstm(packed)
        h, _ = torch.nn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=t_run)
        h = self.dropout(h)
        # Only the next item's logit: gather the rows of the output layer.
        w = self.head.weight[nxt[:, :t_run]]  # [N, T, H]
        b = self.head.bias[nxt[:, :t_run]]
        return (h * w).sum(-1) + b


def predictions(model, data, batch=256):
    answers, nxt, targets, lengths = data
    model.eval()
    p, y = [], []
    with torch.no_grad():
        for s in range(0, len(lengths), batch):
            sl = slice(s, s + batch)
            logits = model(answers[sl], nxt[sl], lengths[sl])
            t = targets[sl, : logits.shape[1]]
            mask = ~torch.isnan(t)
            p.append(torch.sigmoid(logits[mask]))
            y.append(t[mask])
    return torch.cat(p).numpy(), torch.cat(y).numpy()


def bucketed(lengths, batch, rng):
    order = sorted(range(len(lengths)), key=lambda i: (int(lengths[i]), rng.random()))
    batches = [order[i:i + batch] for i in range(0, len(order), batch)]
    rng.shuffle(batches)
    return batches


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--patience", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=200)
    ap.add_argument("--embed", type=int, default=64)
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--window", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = random.Random(a.seed)
    folder = Path(a.folder)
    sets = {k: read_three_line(folder / f"{k}.txt") for k in ["train", "val", "test"]}
    items = 1 + max(i for s in sets.values() for it, _ in s for i in it)
    data = {k: tensors(windows(v, a.window), items) for k, v in sets.items() if v}
    model = Dkt(items, a.embed, a.hidden, a.dropout)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    answers, nxt, targets, lengths = data["train"]
    best = (-1.0, 0, None)
    times = []
    # Early stopping on the validation AUC as the Rust example does it: off without validation
    # students (their file empty: --val 0, fewer than 10 training students, or a share that rounds
    # to none), and off from the first epoch whose validation AUC is undefined (its answers all
    # right or all wrong); then the last epoch's weights are kept.
    early = "val" in data
    if not early:
        print("note: no validation students: early stopping is off and the last epoch's weights are kept")
    for epoch in range(1, a.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        for idx in bucketed(lengths, a.batch, rng):
            idx = torch.tensor(idx)
            logits = model(answers[idx], nxt[idx], lengths[idx])
            t = targets[idx, : logits.shape[1]]
            mask = ~torch.isnan(t)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[mask], t[mask])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        times.append(time.perf_counter() - t0)
        val_auc = roc_auc(*reversed(predictions(model, data["val"]))) if "val" in data else float("nan")
        test_auc = roc_auc(*reversed(predictions(model, data["test"])))
        print(f"epoch {epoch}: validation AUC {val_auc:.4f} | test AUC {test_auc:.4f} | {times[-1]:.2f} s", flush=True)
        if early and np.isnan(val_auc):
            print("note: the validation AUC is undefined: early stopping is off and the last epoch's weights are kept")
            early = False
        if not early:
            best = (val_auc, epoch, None)
            continue
        if val_auc > best[0]:
            best = (val_auc, epoch, {k: v.clone() for k, v in model.state_dict().items()})
        elif a.patience and epoch - best[1] >= a.patience:
            break
    if early:
        model.load_state_dict(best[2])
    test_auc = roc_auc(*reversed(predictions(model, data["test"])))
    print(json.dumps({"torch": torch.__version__, "threads": a.threads, "best_epoch": best[1],
                      "val_auc": best[0], "test_auc": test_auc, "epochs": len(times),
                      "seconds_per_epoch": float(np.median(times))}))


if __name__ == "__main__":
    main()
