#!/usr/bin/env python3
"""Runs every model `cargo run --release --example onnx_export -- DIR` wrote in ONNX Runtime and
compares its output with this crate's, printing a Markdown table (max absolute difference per
model) for docs/onnx.md. Also checks each file with the ONNX checker and that the batch size is
free: the same model runs on batches of 5 and 2.

    pip install onnxruntime onnx safetensors numpy
    cargo run --release --example onnx_export -- target/onnx
    python3 examples/onnx/check.py target/onnx
"""
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from safetensors.numpy import load_file

TOLERANCE = 1e-5


def main():
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "target/onnx")
    files = sorted(folder.glob("*.onnx"))
    if not files:
        sys.exit(f"no .onnx files in {folder}: run `cargo run --release --example onnx_export -- {folder}` first")
    print(f"ONNX Runtime {ort.__version__}, onnx {onnx.__version__}\n")
    print("| model | ONNX operators | output shape | max abs difference | ok |")
    print("|---|---|---|---|---|")
    failed = 0
    for path in files:
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        ops = []  # the operators used, in first-use order (not the final Identity naming the output)
        for node in model.graph.node:
            if node.output[0] != "output" and node.op_type not in ops:
                ops.append(node.op_type)
        tensors = load_file(str(path.with_suffix(".safetensors")))
        x, expected = tensors["input"], tensors["output"]
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(["output"], {"input": x})[0]
        again = session.run(["output"], {"input": x[:2]})[0]  # another batch size, same graph
        diff = float(np.abs(got - expected).max())
        ok = got.shape == expected.shape and diff <= TOLERANCE and np.allclose(again, got[:2], atol=TOLERANCE)
        failed += not ok
        print(f"| {path.stem} | {', '.join(ops)} | {list(got.shape)} | {diff:.1e} | {'yes' if ok else '**no**'} |")
    if failed:
        sys.exit(f"{failed} model(s) disagree beyond {TOLERANCE}")


if __name__ == "__main__":
    main()
