#!/usr/bin/env bash
# ComfyUI's Python requirements that a CUDA torch image lacks, unpacked into one folder and
# packed for a Linux x86-64 machine without the package index, where
# `python -m benchmarks.comfyui_speed --comfyui DIR` and `benchmarks.dit_three_way --comfyui DIR`
# then run with PYTHONPATH=<that folder>. Parts of at most PART_BYTES, so each fits a
# transfer with a size limit; on the other machine:
#     cat comfy-site.tar.xz.part-* | tar xJ -C SITE
# usage: scripts/offline_comfyui_site.sh OUT_DIR [PYTHON_VERSION]   (default 3.12)
# EXCLUDE="av" leaves those packages out of the site (PyAV is most of its size: carried as
# its own wheel, beside the pack's other needs, the site then fits one transfer).
set -euo pipefail
out=${1:?usage: scripts/offline_comfyui_site.sh OUT_DIR [PYTHON_VERSION]}
python_version=${2:-3.12}
part_bytes=${PART_BYTES:-29000000}
# ComfyUI 0.33.0's requirements.txt less what a CUDA torch image has (torch, numpy,
# transformers, aiohttp, ...) and less the optional ones (kornia, spandrel, the frontend,
# workflow templates and docs packages: ComfyUI starts without them, given --front-end-root).
packages=(
  torchsde trampoline alembic mako "SQLAlchemy>=2.0.0" greenlet "av>=16.0.0" comfy-kitchen==0.2.31
  comfy-aimdo==0.4.13 "simpleeval>=1.0.0" blake3 "pydantic~=2.0" pydantic-core "pydantic-settings~=2.0"
  annotated-types typing-inspection python-dotenv websocket-client
)
platforms=()
for tag in manylinux1 manylinux2014 manylinux_2_17 manylinux_2_24 manylinux_2_27 manylinux_2_28 \
  manylinux_2_31 manylinux_2_34 manylinux_2_35; do
  platforms+=(--platform "${tag}_x86_64")
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$python_version" \
  --implementation cp "${platforms[@]}" --platform any -d "$work/wheels" "${packages[@]}"
mkdir -p "$work/site" "$out"
for wheel in "$work"/wheels/*.whl; do  # unpacked as files: pip refuses wheels of another platform
  python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$wheel" "$work/site"
done
rm -f "$work"/site/comfy_kitchen/backends/hip/_C*.so  # ROCm's library: imported only under a ROCm torch
for name in ${EXCLUDE:-}; do
  rm -rf "$work/site/$name" "$work/site/$name.libs" "$work"/site/"$name"-*.dist-info
done
tar -C "$work/site" -cf - . | xz -T0 -6 >"$work/comfy-site.tar.xz"
rm -f "$out"/comfy-site.tar.xz.part-*
split -b "$part_bytes" "$work/comfy-site.tar.xz" "$out/comfy-site.tar.xz.part-"
ls -l "$out"/comfy-site.tar.xz.part-*
