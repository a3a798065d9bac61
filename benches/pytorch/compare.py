#!/usr/bin/env python3
"""Runs the PyTorch and backprop benchmarks side by side, in alternation, and writes the results
into docs/benchmarks.md, into the table of the machine's instruction set (between the markers
<!-- compare:avx512:begin --> and <!-- compare:avx512:end -->, or avx2, or baseline): each kind of
machine keeps its latest table, and a run on one does not replace the other's.

Usage: python3 benches/pytorch/compare.py [--repeats 5] [--threads 2,1] [--seconds 2]
                                          [--python python3] [--no-write] [--only FIGURE,...]
                                          [--cap-isa avx2] [--no-roof]

With --cap-isa avx2 on a machine with AVX-512, both frameworks are held to AVX2 + FMA — the crate
by BACKPROP_ISA (its own kernels) and by a build of its own with MMTEST_FEATURE set (the
`matrixmultiply` crate, which the crate's GEMM still calls for the shapes its own kernels do not
take, reads that variable when compiled, not when run), PyTorch by ATEN_CPU_CAPABILITY,
ONEDNN_MAX_CPU_ISA and MKL_ENABLE_INSTRUCTIONS — and the table goes under a marker of its own
(`avx2-capped-amd` on an AMD host), never over a real AVX2 machine's.

Each figure is measured by a pair of fresh processes, one per framework, back to back, so that
both sides of a ratio see the same few seconds of a shared, noisy machine (a round of the whole
suite per framework left minutes between the two sides of a ratio).
Standard library only; PyTorch must already be installed for the interpreter given by --python.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "benchmarks.md"


def isa(cap):
    """The widest vector instruction set the crate's kernels use on this machine, at most `cap`:
    its table's tag and name (the crate itself decides at run time in src/tensor/simd.rs, by the
    same flags)."""
    flags, vendor = set(), ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("vendor_id"):
                vendor = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    order = ["baseline", "avx2", "avx512"]
    widest = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "baseline"
    tag = order[min(order.index(widest), order.index(cap))]
    if tag != widest:
        # Both frameworks held below what the CPU has: not the same kind of machine as one whose
        # widest set this is (a Zen 4 capped at AVX2 is not a Zen 3), so a table of its own.
        maker = {"AuthenticAMD": "amd", "GenuineIntel": "intel"}.get(vendor, "cpu")
        names = {"avx2": "AVX2 + FMA", "baseline": "no AVX2"}
        return f"{tag}-capped-{maker}", f"{names[tag]}, both frameworks capped, on a CPU with {names.get(widest, 'AVX-512')}"
    if tag == "avx512" and vendor == "AuthenticAMD":
        # AMD's AVX-512 (Zen 4) runs a 512-bit instruction as two 256-bit halves: the same FMA
        # roof as AVX2, a machine of its own kind, with its own table beside the Xeon's.
        return "avx512-amd", "AVX-512 on AMD"
    return tag, {"avx512": "AVX-512", "avx2": "AVX2 + FMA", "baseline": "no AVX2"}[tag]


# What holds each framework to an instruction set (`--cap-isa`): the crate's own variable, and
# PyTorch's three (ATen's kernels, oneDNN's, MKL's).
CAP_ENV = {
    "avx2": {"BACKPROP_ISA": "avx2", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "baseline": {"BACKPROP_ISA": "baseline", "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
                 "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
}


# `matrixmultiply`'s kernels allowed under each cap: its compile-time MMTEST_FEATURE (a build of
# the speed binary in a target directory of its own, so the normal build is left as it was).
CAP_MATRIXMULTIPLY = {"avx2": "sse2,avx,avx2,fma", "baseline": "sse2"}


def markers(tag):
    return f"<!-- compare:{tag}:begin -->", f"<!-- compare:{tag}:end -->"

# (key, label, unit, target: backprop ≥ x × PyTorch for rates, ≤ x × for times/memory). The recurrent
# and MLP targets are issue 25's (performance 3); the convnet ones are the earlier rounds'.
FIGURES = [
    ("convnet_train_b64", "convnet training step, batch 64", "images/s", 2.0),
    ("convnet_train_b256", "convnet training step, batch 256", "images/s", 2.0),
    ("convnet_infer_b256", "convnet inference, batch 256", "images/s", 2.0),
    ("convnet_latency_b1_us", "convnet single-image latency (batch 1)", "µs", 0.33),
    ("mlp_train_b64", "mlp training step, batch 64", "images/s", 2.0),
    ("mlp_latency_b1_us", "mlp single-input latency (batch 1)", "µs", 0.5),
    ("lstm_train_b100", "LSTM training step (input 100, hidden 200, T 50), batch 100", "sequences/s", 1.5),
    ("lstm_infer_b100", "LSTM inference (input 100, hidden 200, T 50), batch 100", "sequences/s", 1.2),
    ("gru_train_b100", "GRU training step (input 100, hidden 200, T 50), batch 100", "sequences/s", 1.5),
    ("encoder_train_b32", "Transformer encoder training step (2 pre-LN blocks, E 128, 4 heads, T 64), batch 32", "sequences/s", 1.0),
    ("encoder_infer_b32", "Transformer encoder inference, same shape", "sequences/s", 1.0),
    ("gpt_train_b32", "GPT training step (2 pre-LN GELU blocks, E 128, 4 heads, T 64, vocab 65, tied head), batch 32",
     "sequences/s", 1.5),
    ("sakt_train_b64", "SAKT training step (100 items, E 64, 4 heads, 100 answers), batch 64", "students/s", 1.5),
    ("peak_rss_mib", "peak resident memory of the benchmark process", "MiB", 0.1),
]
# The unavoidable work of one sample (sequence, image, student) of each figure whose target may be
# replaced by issue 25's roof clause ("where a target would need more than 85 % of that ISA's
# measured FMA roof on the unavoidable products, 85 % of the roof instead"), in FLOPs: the products
# that neither framework can skip, 2 FLOPs per multiply-add.
#   MLP 784-256-10: forward 2·(784·256 + 256·10), the weight gradients as much again, dx of the
#     second layer 2·256·10 (the first layer's dx is needed by no one) = 818,176.
#   LSTM and GRU (T 50, F 100, H 200, G 4 or 3 gates): forward 2·T·(F + H)·G·H, the recurrence's
#     backward 2·T·H·G·H, the weight gradients 2·T·(F + H)·G·H (the first layer's dx skipped):
#     64 M and 48 M for training, 24 M for LSTM inference (the Dense head's 4 k left out).
#   Encoder (2 blocks, E 128, T 64, feed-forward 512): forward per block 2·T·E·3E + 2·T·E·E
#     + 2·(2·T·T·E) + 2·(2·T·E·4E) = 27.3 M, 54 M for two; training about three times that, 163 M.
#   GPT (the encoder's blocks, causal, vocabulary 65, tied head): 166 M; SAKT (E 64, 100 answers,
#     37 k multiply-adds per answer forward): 22.5 M per student (docs/benchmarks.md, "Wave 3,
#     fourth session", derives both).
WORK = {
    "mlp_train_b64": 818_176,
    "lstm_train_b100": 64e6,
    "lstm_infer_b100": 24e6,
    "gru_train_b100": 48e6,
    "encoder_train_b32": 163e6,
    "encoder_infer_b32": 54e6,
    "gpt_train_b32": 166e6,
    "sakt_train_b64": 22.5e6,
}
# The roof clause's line: 85 % of the measured FMA roof.
ROOF_LINE = 0.85

HIGHER_IS_BETTER = {"convnet_train_b64", "convnet_train_b256", "convnet_infer_b256", "mlp_train_b64",
                    "lstm_train_b100", "lstm_infer_b100", "gru_train_b100", "encoder_train_b32", "encoder_infer_b32",
                    "gpt_train_b32", "sakt_train_b64"}


def run_json(cmd, env=None):
    """Runs one measuring process and returns its JSON line; exits with its error output if it
    failed (PyTorch missing for the interpreter given by --python, say) or printed no JSON."""
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if out.returncode != 0 or not lines:
        sys.exit(f"compare.py: `{' '.join(map(str, cmd))}` failed (exit {out.returncode}):\n{out.stderr.strip()}")
    return json.loads(lines[-1])


def cpu_model():
    """The model name, with family and model numbers (a bare "AMD EPYC" names several generations)."""
    fields = {}
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
            if key.strip() == "flags":
                break
        if "model name" in fields:
            return f"{fields['model name']} (family {fields.get('cpu family', '?')} model {fields.get('model', '?')})"
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def fma_roof(isa_tag):
    """The FMA roof of the crate's instruction set, in GFLOP/s, by thread count (1 and every
    vCPU): `cargo bench --bench roofline -- fma_peak`, right after the side-by-side run, read from
    criterion's own records (FLOPs per iteration over the median time). Empty where the crate runs
    no FMA kernel (baseline)."""
    name = {"avx512": "avx512_fma", "avx2": "avx2_fma"}.get(isa_tag)
    if name is None:
        return {}
    out = subprocess.run(["cargo", "bench", "--bench", "roofline", "--", f"fma_peak/{name}"], cwd=ROOT,
                         capture_output=True, text=True)
    if out.returncode != 0:
        # The side-by-side figures are not lost for want of a roof: the table goes without it.
        print(f"compare.py: the roofline bench failed, no roof columns:\n{out.stderr.strip()[-2000:]}", file=sys.stderr)
        return {}
    roof = {}
    # This machine's two runs only (a target directory carried from a machine with more cores
    # would also hold an older `_all_N_cores`).
    for run in (ROOT / "target" / "criterion" / "fma_peak").glob(f"{name}_*"):
        threads = 1 if run.name.endswith("_one_core") else int(run.name.split("_all_")[1].split("_")[0])
        if threads not in (1, len(os.sched_getaffinity(0))):
            continue
        try:
            elements = json.loads((run / "new" / "benchmark.json").read_text())["throughput"]["Elements"]
            median_ns = json.loads((run / "new" / "estimates.json").read_text())["median"]["point_estimate"]
        except (OSError, KeyError, ValueError) as e:
            print(f"compare.py: criterion's record of {run.name} unreadable ({e}), no roof columns", file=sys.stderr)
            return {}
        roof[threads] = elements / median_ns
    return roof


def pct(share, digits=1):
    """A share as the docs write it: `84.9 %`."""
    return f"{100 * share:.{digits}f} %"


def fmt(v, key):
    if key == "peak_rss_mib":
        return f"{v:,.0f}"
    if key.endswith("_us"):
        return f"{v:,.0f}"
    return f"{v:,.0f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", default="2",
                    help="thread counts, comma-separated (e.g. 2,1): every figure is measured at each")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--python", default="python3")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--only", help="comma-separated figures to measure (default: all); the partial table is "
                    "printed, never written")
    ap.add_argument("--cap-isa", choices=sorted(CAP_ENV), help="hold both frameworks to this instruction set")
    ap.add_argument("--no-roof", action="store_true", help="skip the FMA roof measured after the run (and the "
                    "roof clause's columns)")
    args = ap.parse_args()
    if "BACKPROP_ISA" in os.environ:
        sys.exit("compare.py: BACKPROP_ISA would cap the crate alone; use --cap-isa, which caps both frameworks")
    cap_env = CAP_ENV.get(args.cap_isa, {})
    thread_counts = [int(t) for t in args.threads.split(",")]

    target = ROOT / "target" / (f"cap-{args.cap_isa}" if args.cap_isa else "")
    build_env = dict(os.environ, CARGO_TARGET_DIR=str(target))
    if args.cap_isa:
        build_env["MMTEST_FEATURE"] = CAP_MATRIXMULTIPLY[args.cap_isa]
    subprocess.run(["cargo", "build", "--release", "--example", "speed"], cwd=ROOT, check=True, env=build_env)
    rust_bin = target / "release" / "examples" / "speed"
    only = args.only.split(",") if args.only else [key for key, *_ in FIGURES if key != "peak_rss_mib"]
    # results[(framework, threads)][figure]: one value per round. Each figure is measured by a pair
    # of fresh processes, one per framework, back to back (which goes first alternates from pair
    # to pair), so both sides of a ratio see the same few seconds of a shared machine; a
    # framework's peak memory is the largest of its processes in a round.
    results = {(fw, t): {key: [] for key, *_ in FIGURES} for fw in ("pytorch", "backprop") for t in thread_counts}
    pair, version = 0, {}
    for r in range(args.repeats):
        for t in thread_counts:
            env = dict(os.environ, OMP_NUM_THREADS=str(t), MKL_NUM_THREADS=str(t), **cap_env)
            rss = {"pytorch": 0.0, "backprop": 0.0}
            for key in only:
                order = ["pytorch", "backprop"] if pair % 2 == 0 else ["backprop", "pytorch"]
                pair += 1
                for fw in order:
                    if fw == "pytorch":
                        cmd = [args.python, str(ROOT / "benches/pytorch/convnet.py"), str(t), str(args.seconds), key]
                    else:
                        cmd = [str(rust_bin), str(t), str(args.seconds), key]
                    res = run_json(cmd, env)
                    results[(fw, t)][key].append(res[key])
                    version[fw] = res["version"]
                    if fw == "pytorch" and args.cap_isa == "avx2" and res.get("cpu_capability") != "AVX2":
                        sys.exit(f"compare.py: PyTorch ran with {res.get('cpu_capability')}, not capped at AVX2")
                    rss[fw] = max(rss[fw], res["peak_rss_mib"])
                line = ", ".join(f"{fw} {results[(fw, t)][key][-1]:.1f}" for fw in ("pytorch", "backprop"))
                print(f"round {r + 1}/{args.repeats}, {t} threads, {key}: {line}", file=sys.stderr)
            for fw, peak in rss.items():
                results[(fw, t)]["peak_rss_mib"].append(peak)
    rust_version = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    counts = " and ".join(str(t) for t in thread_counts)
    only_arg = f" --only {args.only}" if args.only else ""
    only_arg += f" --cap-isa {args.cap_isa}" if args.cap_isa else ""
    tag, isa_name = isa(args.cap_isa or "avx512")
    begin, end = markers(tag)
    roof = {} if args.no_roof else fma_roof(tag.split("-")[0])
    roof_text = ""
    if roof:
        per = " / ".join(f"{roof[t]:.1f}" for t in sorted(roof))
        on = " / ".join("one vCPU" if t == 1 else f"{t} vCPUs" for t in sorted(roof))
        roof_text = (
            f" FMA roof right after the run (`cargo bench --bench roofline -- fma_peak`): {per} GFLOP/s on {on}. "
            f"Roof columns: the unavoidable work of a sample (`WORK` in this script: MLP 0.82 MFLOP, LSTM 64 / 24 "
            f"training / inference, GRU 48, encoder 163 / 54, GPT 166, SAKT 22.5) at the rate the target asks for, "
            f"and at ours, as shares of that roof; where the target would need more than "
            f"{pct(ROOF_LINE, 0)} of it, {pct(ROOF_LINE, 0)} of the roof is the row's line (issue 25's roof clause)."
        )
    lines = [
        begin,
        f"Measured {datetime.date.today().isoformat()} on {cpu_model()} ({os.cpu_count()} logical cores, "
        f"{isa_name}), "
        f"{counts} threads each, {args.repeats} rounds; in each round every figure is measured by a fresh "
        f"PyTorch process and a fresh backprop process back to back (which goes first alternates), "
        f"≥ {args.seconds:g} s per figure after 10 warm-up iterations. PyTorch {version['pytorch']} "
        f"(`{Path(args.python).name}`); backprop {version['backprop']} built by {rust_version}. "
        f"Command: `python3 benches/pytorch/compare.py --repeats {args.repeats} --threads {args.threads} "
        f"--seconds {args.seconds:g}{only_arg}`. Ratio: the median over rounds of each pair's ratio "
        f"(backprop / PyTorch), the two measured within seconds of each other; the medians' ratio beside it."
        f"{roof_text}",
        "",
        "| figure | threads | PyTorch median (min–max) | backprop median (min–max) | ratio (medians' ratio) "
        "| target | met |" + (" target needs, of the roof | ours, of the roof |" if roof else ""),
        "|---|---|---|---|---|---|---|" + ("---|---|" if roof else ""),
    ]
    for key, label, unit, target in FIGURES:
        for t in thread_counts:
            if key == "peak_rss_mib" and t != thread_counts[0]:
                continue  # one memory row: the first thread count's
            tt, b = results[("pytorch", t)][key], results[("backprop", t)][key]
            if not tt:
                continue  # not measured (--only)
            tm, bm = statistics.median(tt), statistics.median(b)
            ratio = statistics.median(bv / tv for bv, tv in zip(b, tt))
            higher = key in HIGHER_IS_BETTER
            met = ratio >= target if higher else ratio <= target
            met_text = "yes" if met else "**no**"
            target_text = f"≥ {target}×" if higher else f"≤ {target}×"
            roof_cells = ""
            if roof:
                roof_cells = " — | — |"
                if key in WORK and t in roof:
                    # GFLOP/s over GFLOP/s: samples per second × FLOPs per sample / 1e9 / roof.
                    needs = target * tm * WORK[key] / 1e9 / roof[t]
                    ours = bm * WORK[key] / 1e9 / roof[t]
                    roof_cells = f" {pct(needs)} | {pct(ours)} |"
                    if not met and needs > ROOF_LINE and ours >= ROOF_LINE:
                        met_text = f"yes, at the {pct(ROOF_LINE, 0)} line"
            lines.append(
                f"| {label}, {unit} | {t} | {fmt(tm, key)} ({fmt(min(tt), key)}–{fmt(max(tt), key)}) "
                f"| {fmt(bm, key)} ({fmt(min(b), key)}–{fmt(max(b), key)}) | {ratio:.2f}× ({bm / tm:.2f}×) "
                f"| {target_text} | {met_text} |{roof_cells}"
            )
    lines.append(end)
    table = "\n".join(lines)
    print(table)
    if not args.no_write and not args.only:
        doc = DOC.read_text()
        if begin in doc and end in doc:
            doc = doc[: doc.index(begin)] + table + doc[doc.index(end) + len(end):]
        else:
            # A kind of machine not measured before: its own subsection after the last table.
            heading = f"\n\n### On {isa_name}\n\n"
            last_end = max((doc.rfind(markers(t)[1]) for t in
                            ("avx512", "avx512-amd", "avx2", "baseline", "avx2-capped-amd", "avx2-capped-intel")),
                           default=-1)
            if last_end >= 0:
                # After the last table and the prose below it: before the next heading.
                after = doc.index("-->", last_end) + len("-->")
                at = doc.find("\n#", after)
                at = len(doc) if at < 0 else at
                doc = doc[:at] + heading + table + "\n" + doc[at:]
            else:
                doc += "\n## Side by side with PyTorch\n" + heading + table + "\n"
        DOC.write_text(doc)
        print(f"updated {DOC}", file=sys.stderr)


if __name__ == "__main__":
    main()
