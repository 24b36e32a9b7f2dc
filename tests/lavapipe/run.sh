#!/usr/bin/env bash
# Runs the Vulkan test of tests/devices.rs (the same seeded training steps on the CPU and on
# Vulkan) without a GPU: Mesa's lavapipe, a Vulkan driver that runs on the CPU, is the device.
#
# Needs Debian's `mesa-vulkan-drivers` and `libvulkan1` (checked with Mesa 25.0.7 from
# bookworm-backports). CubeCL 0.11.3 cannot run on lavapipe unchanged: it declares shared memory
# wrongly on drivers without explicit workgroup layouts (cubecl-spirv-shared-memory.patch says
# how). So this builds the test against a patched copy of that one crate, in its own target
# directory; Cargo.lock and deepcnn's own builds are left as they are.
#
# Takes long: a full `vulkan` build (about 20 minutes on 2 idle cores), then, the first time,
# about 35 minutes of CubeCL compiling and autotuning kernels on the CPU (at its minimal
# autotune level). Autotune results are kept in target/environment; with them the test takes
# about 4 minutes. A rerun that changes only deepcnn rebuilds only deepcnn (with nothing changed,
# 25 s in all). Not part of .ci/run.
# Usage: tests/lavapipe/run.sh [extra arguments for the test binary]
set -euo pipefail
cd "$(dirname "$0")/../.."

icd=/usr/share/vulkan/icd.d/lvp_icd.json
[ -f "$icd" ] || { echo "error: $icd not found: apt-get install -y mesa-vulkan-drivers libvulkan1" >&2; exit 1; }

cargo fetch --locked
crate=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -maxdepth 2 -type d -name cubecl-spirv-0.11.3 | head -n 1)
[ -n "$crate" ] || { echo "error: cubecl-spirv 0.11.3 is not in cargo's registry; has Cargo.lock moved to another version?" >&2; exit 1; }
patched=$PWD/target/lavapipe/cubecl-spirv
fix=tests/lavapipe/cubecl-spirv-shared-memory.patch
# The copy is made afresh only when the fix or the crate has changed: a new copy has new file
# times, which makes Cargo rebuild CubeCL and burn on top of it (about 20 minutes).
if [ ! -d "$patched" ] || ! cmp -s "$fix" "$patched.fix" || [ "$(cat "$patched.from" 2>/dev/null)" != "$crate" ]; then
  rm -rf "$patched" && mkdir -p "$(dirname "$patched")" && cp -r "$crate" "$patched"
  patch --quiet -p1 -d "$patched" < "$fix"
  cp "$fix" "$patched.fix" && echo "$crate" > "$patched.from"
fi

# A [patch] given on the command line rewrites Cargo.lock's entry for the crate; put it back.
cp Cargo.lock target/lavapipe/Cargo.lock.orig
trap 'cp target/lavapipe/Cargo.lock.orig Cargo.lock' EXIT

log=target/lavapipe/test.log
VK_DRIVER_FILES=$icd CUBECL_AUTOTUNE_LEVEL=minimal CARGO_TARGET_DIR=target/lavapipe/target \
  cargo test --release --features vulkan --test devices \
  --config "patch.crates-io.cubecl-spirv.path=\"$patched\"" \
  -- vulkan --nocapture "$@" 2>&1 | tee "$log"
# The test passes when it finds no Vulkan device, saying why; here that is a failure.
if grep -q "^skipped: vulkan" "$log"; then
  echo "error: the test found no Vulkan device (see above)" >&2
  exit 1
fi
