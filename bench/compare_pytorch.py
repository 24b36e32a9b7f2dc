#!/usr/bin/env python3
"""Runs `deepcnn bench --json` (with deepcnn's kernels, and with them switched off: burn-flex's
own operations) and bench/torch_step.py for each configuration, alternating between them so
that all see the same machine state, and prints a Markdown table: the
median over repetitions of each side's images/s (each repetition itself a median over steps),
and deepcnn's speed as a multiple of PyTorch's. Called by bench/compare-pytorch."""
import argparse, json, os, platform, statistics, subprocess, sys
from datetime import date

HERE = os.path.dirname(os.path.abspath(__file__))

# The configurations of the speed issue: (model, batch size, input size).
CONFIGS = [
    ("lenet-bn", 256, 28),
    ("lenet-bn-scratch", 256, 28),
    ("resnet18", 64, 28),
    ("densenet", 32, 96),
]


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_flags():
    """The CPU's vector and matrix extensions, as /proc/cpuinfo lists them."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    keep = [x for x in flags if x.startswith(("avx", "amx", "fma"))]
                    return " ".join(sorted(set(keep)))
    except OSError:
        pass
    return "unknown"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--deepcnn", required=True)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--only", help="comma-separated model names")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="bf16: deepcnn --precision bf16 against PyTorch's bf16 autocast with channels-last")
    a = p.parse_args()
    configs = [c for c in CONFIGS if not a.only or c[0] in a.only.split(",")]

    # burn's own operations have no bf16 side.
    sides = ["deepcnn", "burn-ops", "pytorch"] if a.precision == "fp32" else ["deepcnn", "pytorch"]
    results = {c: {side: [] for side in sides} for c in configs}
    # GFLOP of the convolutions per image, as deepcnn counts them (the same for every side:
    # the same network), and the machine's peak for this precision (oneDNN's GEMM).
    gflop_per_image = {}
    peak = run_json([a.deepcnn, "bench", "--peak", "--json"])
    peak_gflops = peak["fp32_gflops"] if a.precision == "fp32" else peak["bf16_gflops"]
    torch_version = None
    for rep in range(a.reps):
        for (model, batch, size) in configs:
            # Deep nets get fewer steps: one ResNet/DenseNet step takes about a second here.
            steps = a.steps if model.startswith("lenet") else max(3, a.steps // 4)
            common = ["--model", model, "--batch-size", str(batch), "--input", str(size),
                      "--steps", str(steps), "--precision", a.precision]
            order = sides if rep % 2 == 0 else sides[::-1]
            for side in order:
                if side == "deepcnn":
                    r = run_json([a.deepcnn, "bench", "--json"] + common)
                elif side == "burn-ops":
                    # The same binary with every deepcnn kernel switched off: burn-flex's own ops.
                    r = run_json([a.deepcnn, "bench", "--json", "--burn-ops", "conv,batch-norm,sigmoid,adam,max-pool,avg-pool"] + common)
                else:
                    r = run_json([sys.executable, os.path.join(HERE, "torch_step.py")] + common)
                    torch_version = r["torch"]
                results[(model, batch, size)][side].append(r["images_per_sec"])
                if side == "deepcnn" and r.get("conv_gflop_per_image"):
                    gflop_per_image[(model, batch, size)] = r["conv_gflop_per_image"]
                print(f"rep {rep + 1}: {side:8} {model:17} b{batch} {size}²: "
                      f"{r['images_per_sec']:8.1f} images/s", file=sys.stderr)

    mode = "fp32" if a.precision == "fp32" else "bf16 autocast, channels-last"
    print(f"{date.today()}, {cpu_name()}, {os.cpu_count()} cores; PyTorch {torch_version} "
          f"(eager, {mode}, default threads); deepcnn --precision {a.precision}; {a.reps} repetitions, interleaved")
    print(f"CPU flags: {cpu_flags()}")
    peak_text = f"{peak_gflops:.0f} GFLOP/s" if peak_gflops else "none (no bf16 kernels)"
    print(f"peak ({a.precision} GEMM 2048³, oneDNN, `deepcnn bench --peak`): {peak_text}; "
          "GFLOP/s below count the convolutions (forward, ∂X, ∂W) over the whole step\n")
    names = ["deepcnn images/s", "with burn's ops", "PyTorch images/s"] if a.precision == "fp32" \
        else ["deepcnn images/s", "PyTorch images/s"]
    print("| model | batch | input | " + " | ".join(names) + " | deepcnn / PyTorch | deepcnn GFLOP/s | PyTorch GFLOP/s |")
    print("|---|---:|---:|" + "---:|" * (len(names) + 3))

    def rate(images_per_sec, config):
        g = gflop_per_image.get(config)
        if g is None:
            return "n/a"
        gflops = g * images_per_sec
        share = f" ({100 * gflops / peak_gflops:.0f}%)" if peak_gflops else ""
        return f"{gflops:.0f}{share}"

    for config, r in results.items():
        model, batch, size = config
        medians = [statistics.median(r[side]) for side in sides]
        ours, theirs = medians[0], medians[-1]
        cells = " | ".join(f"{m:.0f}" for m in medians)
        print(f"| {model} | {batch} | {size}×{size} | {cells} | {ours / theirs:.2f}× | "
              f"{rate(ours, config)} | {rate(theirs, config)} |")


if __name__ == "__main__":
    main()
