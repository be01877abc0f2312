"""Fold an exported ONNX graph's constant subgraphs with onnx-simplifier.

torch.onnx.export writes the package's "same" padding as Pad nodes fed by
Cast/ConstantOfShape/Slice chains; onnxsim evaluates those and folds each Pad into its
Conv, leaving Conv, Clip, Add, GlobalAveragePool and Flatten. Named tensors (graph
outputs and the stage tensors a bundle pools) keep their names; the batch axis stays
symbolic.
"""

import argparse
import sys

import onnx
import onnxsim


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="rewritten in place")
    ap.add_argument("--keep", nargs="*", default=[], help="tensor names that must survive")
    a = ap.parse_args()
    m = onnx.load(a.model)
    before = len(m.graph.node)
    s, ok = onnxsim.simplify(m)
    if not ok:
        sys.exit(f"{a.model}: onnx-simplifier could not check the simplified model")
    names = {o for n in s.graph.node for o in n.output}
    lost = [k for k in a.keep if k not in names]
    if lost:
        sys.exit(f"{a.model}: simplification lost the named tensors {lost}")
    onnx.save(s, a.model)
    ops = sorted({n.op_type for n in s.graph.node})
    print(f"{a.model}: {before} -> {len(s.graph.node)} nodes, ops {ops}")


if __name__ == "__main__":
    main()
