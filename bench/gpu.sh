#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, Vulkan and PyTorch: times deepcnn's training step on the GPU
# (burn's Vulkan backend) and PyTorch's (CUDA; eager fp32 with and without TF32 convolutions, and
# bf16 autocast with channels-last) side by side, and prints a table of images/s with ratios.
#
#   bench/gpu.sh [--reps 1] [--steps 20] [--warmup 5] [--only lenet-bn,resnet18@96] [--raw FILE]
#
# deepcnn: $DEEPCNN, default target/release/deepcnn, built with
# `cargo build --release --features vulkan`. Python: $PYTHON, default python3 (with torch).
set -euo pipefail
cd "$(dirname "$0")/.."
deepcnn="${DEEPCNN:-target/release/deepcnn}"
# NVIDIA's driver may install its Vulkan manifest where the loader does not look by default.
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$nvidia_icd" ] && ! ls /usr/share/vulkan/icd.d/nvidia* >/dev/null 2>&1; then
    export VK_DRIVER_FILES="$nvidia_icd"
fi
exec "${PYTHON:-python3}" bench/compare_gpu.py --deepcnn "$deepcnn" "$@"
