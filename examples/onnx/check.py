#!/usr/bin/env python3
"""Runs every model `cargo run --release --example onnx_export -- DIR` wrote in ONNX Runtime and
compares its outputs with this crate's, printing a Markdown table (max absolute difference per
model) for docs/onnx.md. Also checks each file with the ONNX checker and that the batch size is
free: the same model runs on batches of 5 and 2. Every graph input is fed from the file the
example wrote beside the model (sequence lengths as int64), and every graph output compared.

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


def feeds(model, tensors, rows=None):
    """The graph's inputs from the example's tensors: lengths as int64, the rest float32."""
    out = {}
    for i in model.graph.input:
        x = tensors[i.name]
        x = x.astype(np.int64) if i.name.endswith("_lengths") else x
        out[i.name] = x if rows is None else x[:rows]
    return out


def main():
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "target/onnx")
    files = sorted(folder.glob("*.onnx"))
    if not files:
        sys.exit(f"no .onnx files in {folder}: run `cargo run --release --example onnx_export -- {folder}` first")
    print(f"ONNX Runtime {ort.__version__}, onnx {onnx.__version__}\n")
    print("| model | graph inputs | ONNX operators | output shape | max abs difference | ok |")
    print("|---|---|---|---|---|---|")
    failed = 0
    for path in files:
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        outputs = [o.name for o in model.graph.output]
        ops = []  # the operators used, in first-use order (not the final Identity naming an output)
        for node in model.graph.node:
            if node.output[0] not in outputs and node.op_type not in ops:
                ops.append(node.op_type)
        tensors = load_file(str(path.with_suffix(".safetensors")))
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(outputs, feeds(model, tensors))
        again = session.run(outputs, feeds(model, tensors, rows=2))  # another batch size, same graph
        diff, ok = 0.0, True
        for name, g, a in zip(outputs, got, again):
            expected = tensors[name]
            d = float(np.abs(g - expected).max())
            diff = max(diff, d)
            ok &= g.shape == expected.shape and d <= TOLERANCE and np.allclose(a, g[:2], atol=TOLERANCE)
        failed += not ok
        inputs = ", ".join(i.name for i in model.graph.input)
        print(f"| {path.stem} | {inputs} | {', '.join(ops)} | {list(got[0].shape)} | {diff:.1e} | {'yes' if ok else '**no**'} |")
    if failed:
        sys.exit(f"{failed} model(s) disagree beyond {TOLERANCE}")


if __name__ == "__main__":
    main()
