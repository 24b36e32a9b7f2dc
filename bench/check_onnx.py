#!/usr/bin/env python3
"""Runs a `deepcnn export --out model.onnx` file in onnxruntime, as a client of the file would.

    deepcnn export --checkpoint runs/lenet-bn --out lenet-bn.onnx
    python3 bench/check_onnx.py lenet-bn.onnx                       # Fashion-MNIST's test set
    python3 bench/check_onnx.py model.onnx --inputs x.f32 --logits-out y.f32   # (the tests)

It checks the file with onnx.checker (full check, shapes inferred), prints its metadata, runs the
inputs through onnxruntime at two batch sizes (the batch dimension is dynamic; both must give the
same logits) and prints the accuracy. --inputs is raw little-endian float32 N×C×H×W with the
shape taken from the model; without it the Fashion-MNIST test images are read (28×28 networks).
"""
import argparse, gzip, json, os, struct, sys

import numpy as np
import onnx
import onnxruntime as ort

p = argparse.ArgumentParser()
p.add_argument("model")
p.add_argument("--inputs", help="raw float32 images, N×C×H×W")
p.add_argument("--labels", help="raw uint8 labels, N (for the accuracy)")
p.add_argument("--logits-out", help="write the logits here as raw float32 N×classes")
p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
a = p.parse_args()

model = onnx.load(a.model)
onnx.checker.check_model(model, full_check=True)
meta = {e.key: e.value for e in model.metadata_props}
classes = json.loads(meta["class_names"])
dims = model.graph.input[0].type.tensor_type.shape.dim
assert dims[0].dim_param, "the batch dimension is not dynamic"
chw = [d.dim_value for d in dims[1:]]
print(f"{a.model}: onnx.checker passed; opset {model.opset_import[0].version}, "
      f"model {meta['model']}, input batch×{'×'.join(map(str, chw))}, {len(classes)} classes")


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        magic = struct.unpack(">I", f.read(4))[0]
        shape = struct.unpack(">" + "I" * (magic & 0xFF), f.read(4 * (magic & 0xFF)))
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(shape)


def idx_file(name):
    for ending in ("", ".gz"):
        if os.path.exists(os.path.join(a.data_dir, name + ending)):
            return os.path.join(a.data_dir, name + ending)
    sys.exit(f"{a.data_dir}: no {name}[.gz]")


if a.inputs:
    x = np.fromfile(a.inputs, dtype="<f4").reshape([-1] + chw)
    labels = np.fromfile(a.labels, dtype=np.uint8) if a.labels else None
else:
    images = read_idx(idx_file("t10k-images-idx3-ubyte"))
    if list(images.shape[1:]) != chw[1:] or chw[0] != 1:
        sys.exit(f"the model takes {'×'.join(map(str, chw))} images, the data set has "
                 f"{'×'.join(map(str, images.shape[1:]))}; pass --inputs with resized images")
    x = (images.astype(np.float32) / 255.0)[:, None]
    labels = read_idx(idx_file("t10k-labels-idx1-ubyte"))

session = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
whole = np.concatenate([session.run(None, {name: x[i:i + 500]})[0] for i in range(0, len(x), 500)])
# A second, odd batch size: the exported batch dimension must really be free.
odd = np.concatenate([session.run(None, {name: x[i:i + 7]})[0] for i in range(0, min(len(x), 70), 7)])
worst = float(np.abs(odd - whole[:len(odd)]).max())
assert worst <= 1e-5, f"logits differ between batch sizes by {worst:e}"
print(f"onnxruntime {ort.__version__}: {len(x)} images, logits {whole.shape[0]}×{whole.shape[1]}")
if labels is not None:
    accuracy = float((whole.argmax(1) == labels).mean())
    print(f"test accuracy {accuracy:.4f}")
if a.logits_out:
    whole.astype("<f4").tofile(a.logits_out)
