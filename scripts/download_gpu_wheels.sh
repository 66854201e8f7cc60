#!/usr/bin/env bash
# Download the wheels of scripts/gpu-wheels.txt for a Python 3.12 x86-64 Linux
# machine into DIR (default .whl/, ignored by git), without their dependencies (the
# list is complete for an image that has torch and transformers), and print their
# total size: the folder travels with the working tree to the GPU machine.
#   scripts/download_gpu_wheels.sh [--light] [DIR]
# --light: leave out the lines tagged datasets-stack (for an image with datasets).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
light=0
if [[ "${1:-}" == "--light" ]]; then light=1; shift; fi
dest="${1:-$root/.whl}"
mkdir -p "$dest"
reqs="$root/scripts/gpu-wheels.txt"
if (( light )); then
    reqs="$(mktemp)"
    trap 'rm -f "$reqs"' EXIT
    grep -v "datasets-stack" "$root/scripts/gpu-wheels.txt" > "$reqs"
fi
python -m pip download --only-binary=:all: --python-version 3.12 \
    --implementation cp --abi cp312 --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --no-deps -d "$dest" -r "$reqs"
echo "wheels in $dest: $(ls "$dest"/*.whl | wc -l) files, $(du -sh "$dest" | cut -f1)"
