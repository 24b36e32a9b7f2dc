#!/usr/bin/env python3
"""The GPU side-by-side of `bench/gpu.sh`: `deepcnn bench --device vulkan --json` against
bench/torch_step.py on CUDA, eager fp32 (PyTorch's default: TF32 convolutions), fp32 without
TF32, and bf16 autocast (channels-last), for each
configuration, and a Markdown table of images/s and ratios. Each process's wall time is printed
too: deepcnn's first one includes compiling and autotuning its kernels (CubeCL keeps the
autotune results on disk, in target/environment, for the processes after it)."""
import argparse, json, os, statistics, subprocess, sys, time
from datetime import date

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from compare_pytorch import run_json  # noqa: E402

# (model, batch size, input size): the speed issue's small configurations and the book's 96².
CONFIGS = [
    ("lenet-bn", 256, 28),
    ("resnet18", 64, 28),
    ("resnet18", 256, 96),
    ("densenet", 256, 96),
]
SIDES = ["deepcnn", "torch-fp32", "torch-fp32-strict", "torch-bf16"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--deepcnn", required=True, help="a deepcnn built with --features vulkan")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5,
                   help="untimed steps first (deepcnn autotunes its kernels in them)")
    p.add_argument("--only", help="comma-separated model names, or model@size (resnet18@96)")
    p.add_argument("--raw", help="append every side's JSON result to this file")
    p.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated, of {','.join(SIDES)}")
    a = p.parse_args()
    sides = [s for s in SIDES if s in a.sides.split(",")]
    wanted = a.only.split(",") if a.only else None
    configs = [c for c in CONFIGS if not wanted or c[0] in wanted or f"{c[0]}@{c[2]}" in wanted]

    results = {c: {side: [] for side in SIDES} for c in configs}
    devices = {}
    for rep in range(a.reps):
        for (model, batch, size) in configs:
            common = ["--model", model, "--batch-size", str(batch), "--input", str(size),
                      "--steps", str(a.steps), "--warmup", str(a.warmup)]
            for side in sides if rep % 2 == 0 else sides[::-1]:
                if side == "deepcnn":
                    cmd = [a.deepcnn, "bench", "--json", "--device", "vulkan"] + common
                else:
                    cmd = [sys.executable, os.path.join(HERE, "torch_step.py"), "--device", "cuda",
                           "--precision", side.removeprefix("torch-")] + common
                start = time.perf_counter()
                try:
                    r = run_json(cmd)
                except subprocess.CalledProcessError as e:
                    print(f"{side} {model} b{batch} {size}²: failed: {e.stderr.strip()[-500:]}", file=sys.stderr)
                    continue
                wall = time.perf_counter() - start
                r["side"], r["wall_seconds"] = side, wall
                devices.setdefault(side, r.get("gpu", r.get("device", "?")) + (f", torch {r['torch']}" if "torch" in r else ""))
                results[(model, batch, size)][side].append(r["images_per_sec"])
                if a.raw:
                    with open(a.raw, "a") as f:
                        f.write(json.dumps(r) + "\n")
                print(f"rep {rep + 1}: {side:10} {model:9} b{batch:<3} {size}²: "
                      f"{r['images_per_sec']:9.0f} images/s (process {wall:5.1f} s)", file=sys.stderr, flush=True)

    print(f"{date.today()}; " + "; ".join(f"{s}: {d}" for s, d in devices.items())
          + f"; {a.steps} timed steps after {a.warmup} warm-up, {a.reps} repetition(s), median\n")
    torch_sides = [s for s in SIDES if s != "deepcnn"]
    names = {"torch-fp32": "fp32 (TF32 convs)", "torch-fp32-strict": "fp32, no TF32", "torch-bf16": "bf16"}
    print("| model | batch | input | deepcnn (Vulkan) | " + " | ".join(f"PyTorch {names[s]}" for s in torch_sides)
          + " | " + " | ".join(f"vs {names[s]}" for s in torch_sides) + " |")
    print("|---|---:|---:|" + "---:|" * (1 + 2 * len(torch_sides)))
    for (model, batch, size), r in results.items():
        med = {s: statistics.median(v) if v else float("nan") for s, v in r.items()}
        ours = med["deepcnn"]
        print(f"| {model} | {batch} | {size}×{size} | {ours:.0f} | "
              + " | ".join(f"{med[s]:.0f}" for s in torch_sides) + " | "
              + " | ".join(f"{ours / med[s]:.2f}×" for s in torch_sides) + " |")


if __name__ == "__main__":
    main()
