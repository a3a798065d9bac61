#!/usr/bin/env python3
"""Where a two-thread run leaves one thread idle: splits a `perf` recording into short windows of
time and, over the windows in which only one of the two busiest threads has samples, counts the
symbols that thread was in — the serial sections and the uneven ends of split work that keep a
second core from helping.

Usage (a two-thread figure of the speed binary, sampled often enough for the window):
    perf record -F 10000 -o /tmp/run.data target/release/examples/speed 2 2 gpt_train_b32
    perf script -i /tmp/run.data -F tid,time,ip,sym > /tmp/run.txt
    python3 benches/tools/serial_windows.py /tmp/run.txt [--window 0.0005]

Prints the two threads' sample counts, how many windows had both threads, one, or none, and the
symbols of the one-thread windows. A window should hold several sampling periods (at 10 kHz, 0.5 ms
is five); with few, sampling jitter alone makes some one-thread windows, so compare two window
sizes (`--window 0.001`) before reading much into a few per cent. Standard library only.
"""
import argparse
import collections


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("script", help="output of `perf script -F tid,time,ip,sym`")
    ap.add_argument("--window", type=float, default=0.0005, help="seconds per window")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    samples = []
    for line in open(args.script):
        parts = line.split()
        if len(parts) < 3 or not parts[1].endswith(":"):
            continue
        symbol = " ".join(parts[3:]) or parts[2]
        samples.append((float(parts[1].rstrip(":")), int(parts[0]), symbol))
    threads = collections.Counter(tid for _, tid, _ in samples)
    busiest = [tid for tid, _ in threads.most_common(2)]
    if len(busiest) < 2:
        raise SystemExit("fewer than two threads in the recording")
    print("samples per thread:", dict(threads.most_common(4)))
    # From the moment both threads run (the set-up before is one thread by design).
    start = min(t for t, tid, _ in samples if tid == busiest[1])
    end = max(t for t, _, _ in samples)
    windows = [collections.defaultdict(list) for _ in range(int((end - start) / args.window) + 1)]
    for t, tid, symbol in samples:
        if t >= start and tid in busiest:
            windows[int((t - start) / args.window)][tid].append(symbol)
    alone = collections.Counter()
    counts = {"both": 0, "one": 0, "none": 0}
    for w in windows:
        present = [tid for tid in busiest if w.get(tid)]
        counts[["none", "one", "both"][len(present)]] += 1
        if len(present) == 1:
            alone.update(w[present[0]])
    total = sum(counts.values())
    print(", ".join(f"{k}: {v} windows ({100 * v / total:.1f} %)" for k, v in counts.items()))
    n = sum(alone.values())
    print(f"symbols in the one-thread windows ({n} samples):")
    for symbol, c in alone.most_common(args.top):
        print(f"{100 * c / n:5.1f} %  {symbol[:120]}")


if __name__ == "__main__":
    main()
