#!/usr/bin/env bash
# vLLM 0.24.0 for the GPU machine (issue 22's fallback: kvcached is tested up to vLLM 0.24 and
# refuses 0.26's KV layouts, docs/benchmarks.md). The installed tree is staged exactly as
# ../shared/vllm-bundle/make.sh stages 0.26.0 (a copy of it with 0.24.0's wheel name and PyPI
# sha256, stopped after its check of the staged tree): the same extra wheels, the same slimming,
# the same one patch. make.sh's packing cannot take 0.24: its _C_stable_libtorch alone is 81 MiB
# as xz, over one call's 64 MiB. So the tree goes as one .tar.xz split into parts of
# VB24_PART_MIB (56) MiB, one folder each: .vb24_1, .vb24_2, ... (git-excluded), with
# vllm024_install.sh, which stores the parts it is carried with and, once all are there, checks
# and unpacks them into /tmp/site (the same place, so everything after it runs as with 0.26).
#   scripts/gpu/vllm_bundle_024.sh     (in the checkout's root; ~10 min; VLLM_WHL: the wheel)
# On the device, one call per folder, sent back to back (the machine keeps /tmp while warm):
#   bash .vb24_1/vllm024_install.sh   ...   bash .vb24_N/vllm024_install.sh   (exit 3: parts missing)
# vLLM 0.24.0 pins apache-tvm-ffi 0.1.9 (0.26: 0.1.10); the tree keeps 0.1.10, which only
# xgrammar's structured output loads, and none of these runs uses it.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
bundle_dir=${VLLM_BUNDLE_DIR:-$repo/../shared/vllm-bundle}
build=${VB_BUILD:-/tmp/vb24_build}
part_mib=${VB24_PART_MIB:-56}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$bundle_dir"/{make.sh,wheels.txt,probe.py} "$work/"
sed -i \
  -e 's/^VLLM_VERSION=0\.26\.0$/VLLM_VERSION=0.24.0/' \
  -e 's/^VLLM_WHL_NAME=vllm-0\.26\.0-/VLLM_WHL_NAME=vllm-0.24.0-/' \
  -e 's/^VLLM_SHA256=.*/VLLM_SHA256=2d2831aeba311292250df0132dbc4d8e9f42c654536eaec48e6fe58acb1822cf/' \
  -e 's/^say "5\/6 .*/exit 0  # vllm_bundle_024.sh packs the staged tree itself/' \
  "$work/make.sh"
for want in 'VLLM_VERSION=0.24.0' 'VLLM_SHA256=2d2831' 'exit 0  # vllm_bundle_024'; do
  grep -q "^$want" "$work/make.sh" || {
    echo "vllm_bundle_024.sh: make.sh no longer has the line this edits ($want)" >&2; exit 1; }
done
VB_REPO=$work VB_BUILD=$build bash "$work/make.sh"
site=$build/site
grep -q '^vllm==0.24.0' "$site/VB_BUNDLE_INFO.txt"

echo "== pack $site as one .tar.xz (xz -9e, 2 threads: several minutes)"
tarball=$build/vllm-0.24.0-site.tar.xz
tar -C "$site" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@1767225600 -cf - . |
  xz -9e -T2 -c >"$tarball"
rm -rf "$build/parts" && mkdir -p "$build/parts"
split -b "${part_mib}M" -d -a 2 "$tarball" "$build/parts/part."
mapfile -t parts < <(ls "$build/parts")
whole=$(sha256sum "$tarball" | cut -d' ' -f1)
rm -rf .vb24_*
grep -qx '/.vb24_\*/' .git/info/exclude 2>/dev/null || echo '/.vb24_*/' >>.git/info/exclude
for i in "${!parts[@]}"; do
  d=.vb24_$((i + 1))
  mkdir -p "$d"
  mv "$build/parts/${parts[$i]}" "$d/"
  printf 'whole=%s\nparts=%s\n' "$whole" "${parts[*]}" >"$d/MANIFEST"
  (cd "$d" && sha256sum "${parts[$i]}" >SHA256SUM)
  cp scripts/gpu/vllm024_install.sh "$work/probe.py" "$d/"
  echo "$d: $(du -sh "$d" | cut -f1)"
done
echo "vLLM 0.24.0: ${#parts[@]} folders .vb24_1 .. .vb24_${#parts[@]}, tree sha256 $whole"
