#!/usr/bin/env python3
"""A/B of two builds of this crate's `examples/speed.rs`: runs the two binaries in alternation
(fresh processes, the order swapped every round) and prints the median of each figure, the
ratio of the medians B/A, and the median of the ratios of each round's two runs (run back to back,
so they share the machine's state of that moment: on a host whose speed drifts by tens of per cent
within minutes, the steadier of the two). Use it to measure a change against the commit before
it on a noisy machine: the two builds see the same noise, so their ratio is steadier than either
figure. Each figure comes with a `_best` companion (the speed binary's fastest single call, as a rate
or in µs): neighbours' noise only adds time, so the `_best` rows spread less (one binary against a
copy of itself, 4 rounds, one thread, on the Zen 4 of docs/benchmarks.md's twenty-fourth session:
LSTM inference 4,207-4,241 against 4,014-4,197 for the mean) — though the two copies' ratios still
came out 0.97-1.01 for both kinds of row, so a change of 2-3 % is not resolved either way. Keep the
number of rounds even: a host can favour whichever binary runs first in a pair
(5-10 % on the AMD host of docs/benchmarks.md's ninth session), and an even count lets each build
run first equally often.

Usage:
    git worktree add /tmp/before <commit> && (cd /tmp/before && cargo build --release --example speed)
    cargo build --release --example speed
    python3 benches/pytorch/ab.py /tmp/before/target/release/examples/speed target/release/examples/speed \
        [--repeats 8] [--threads 2] [--seconds 2] [--only convnet_train_b64,mlp_train_b64]
Standard library only.
"""
import argparse
import json
import statistics
import subprocess

# Fields of the speed binary's JSON line that are not figures.
META = {"framework", "version", "threads"}


def run(binary, threads, seconds, only):
    cmd = [binary, str(threads), str(seconds)] + ([only] if only else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads([l for l in out.stdout.splitlines() if l.startswith("{")][-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--repeats", type=int, default=8, help="rounds (even: each build runs first as often)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--only", help="comma-separated figures to measure (default: all)")
    args = ap.parse_args()
    results = {"a": [], "b": []}
    for r in range(args.repeats):
        for side in (["a", "b"] if r % 2 == 0 else ["b", "a"]):
            results[side].append(run(getattr(args, side), args.threads, args.seconds, args.only))
    print(f"A = {args.a}\nB = {args.b}\n{args.repeats} alternating rounds, {args.threads} threads, "
          f"{args.seconds} s per figure\n")
    print("| figure | A median (min–max) | B median (min–max) | B / A (medians) | B / A (median of rounds) |")
    print("|---|---|---|---|---|")
    keys = [k for k in results["a"][0] if k not in META]  # every figure, in the binary's order
    for k in keys:
        if any(k not in x for x in results["a"] + results["b"]):
            continue  # a build from before the figure existed
        a = [x[k] for x in results["a"]]
        b = [x[k] for x in results["b"]]
        fmt = lambda v: f"{statistics.median(v):,.0f} ({min(v):,.0f}–{max(v):,.0f})"
        rounds = statistics.median(y / x for x, y in zip(a, b))
        print(f"| {k} | {fmt(a)} | {fmt(b)} | {statistics.median(b) / statistics.median(a):.3f} | {rounds:.3f} |")


if __name__ == "__main__":
    main()
