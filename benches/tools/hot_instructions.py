#!/usr/bin/env python3
"""The hottest machine instructions of a `perf` recording, each with its function, and the
narrow floating-point ones marked: scalar arithmetic (`vaddss`, `vmaxss`, `vcvtss2sd`, ...) or
packed operations on 128-bit registers only. In a loop that should run on whole AVX-512 or AVX2
registers, a hot narrow instruction is the compiler having given up on vectors — the kind of
fault that `fold_halves` was (a loop over `[8, 4, 2, 1]` kept as scalar loads and stores: a
quarter of the softmax's time, see docs/benchmarks.md, twenty-fifth session).

Usage (any figure of the speed binary; the symbols come from the binary itself, so keep it):
    perf record -o /tmp/run.data target/release/examples/speed 1 3 sakt_train_b64
    python3 benches/tools/hot_instructions.py /tmp/run.data target/release/examples/speed [--top 40]

Prints each function's share of the samples and the share spent on its narrow instructions,
then the hottest instructions (`*` marks a narrow one). Functions are told apart by their
mangled names, so the many `simd::with_avx512` closures each get a line of their own; find which
is which from their instructions (or `objdump -d` around the address). A sample lands on the
instruction after the one that stalled as often as on the stalled one itself: read the
neighbours too. Needs `perf`, `nm` and `objdump`; standard library only.
"""
import argparse
import collections
import re
import subprocess


def run(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def is_narrow(instruction):
    """Scalar floating-point arithmetic, or a packed operation on xmm registers only."""
    if not instruction:
        return False
    op = instruction.split()[0]
    if re.match(r"^v?(add|sub|mul|div|max|min|sqrt|fn?madd\d+|fn?msub\d+|cvt\w+)(ss|sd)$", op):
        return True
    registers = re.findall(r"%([xyz])mm", instruction)
    return bool(registers) and all(r == "x" for r in registers) and not op.startswith(
        ("vbroadcast", "vmovss", "vmovsd", "movss", "movsd", "vxorps", "vxorpd")
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data", help="a perf.data file")
    ap.add_argument("binary", help="the binary that was recorded")
    ap.add_argument("--top", type=int, default=40, help="instructions to list")
    args = ap.parse_args()
    starts = collections.defaultdict(list)
    for line in run("nm", args.binary).splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tTwW":
            starts[parts[2]].append(int(parts[0], 16))
    code = {}
    for line in run("objdump", "-d", "--no-show-raw-insn", args.binary).splitlines():
        m = re.match(r"\s+([0-9a-f]+):\s+(.*)", line)
        if m:
            code[int(m.group(1), 16)] = m.group(2).strip()
    samples = collections.Counter()
    total = 0
    # One line per sample (`-G`: without its call chain, if it was recorded with `-g`).
    script = run("perf", "script", "-G", "-i", args.data, "-F", "ip,sym,symoff", "--no-demangle")
    for line in script.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        total += 1
        m = re.match(r"(.*)\+0x([0-9a-f]+)$", parts[1])
        if m and m.group(1) in starts:
            samples[(m.group(1), starts[m.group(1)][0] + int(m.group(2), 16))] += 1
        else:
            samples[(parts[1].split("+")[0], None)] += 1
    if total == 0:
        raise SystemExit("no samples in the recording")
    per_function = collections.Counter()
    narrow = collections.Counter()
    for (function, address), count in samples.items():
        per_function[function] += count
        if address is not None and is_narrow(code.get(address, "")):
            narrow[function] += count
    print(f"{total} samples")
    print("share   narrow  function")
    for function, count in per_function.most_common(20):
        print(f"{100 * count / total:5.2f}%  {100 * narrow[function] / total:5.2f}%  {function}")
    print()
    print("share    address  instruction                                          function")
    for (function, address), count in samples.most_common(args.top):
        instruction = code.get(address, "?") if address is not None else "?"
        mark = "*" if is_narrow(instruction) else " "
        where = hex(address) if address is not None else "?"
        print(f"{100 * count / total:5.2f}% {mark} {where:>9}  {instruction[:52]:52} {function[-60:]}")


if __name__ == "__main__":
    main()
