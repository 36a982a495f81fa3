#!/usr/bin/env bash
# On the GPU machine, from the checkout's root, in each call that carries one of the folders
# scripts/gpu/vllm_bundle_024.sh made (.vb24_1, .vb24_2, ...): stores the carried parts in
# /tmp/vb24; once every part named in the manifest is there, checks each part's and the whole's
# sha256, unpacks vLLM 0.24.0's tree into /tmp/site (VB_SITE) and imports vllm from it.
# Idempotent. Exit status: 0 installed and imported, 3 parts still to carry, 1 an error.
set -uo pipefail
site=${VB_SITE:-/tmp/site}
store=${VB_STORE:-/tmp/vb24}
mkdir -p "$store" || exit 1
shopt -s nullglob
for d in .vb24_*/; do
  (cd "$d" && sha256sum -c --quiet SHA256SUM) || { echo "vllm024: $d is damaged"; exit 1; }
  for f in "$d"part.* "$d"MANIFEST; do cp -f "$f" "$store/"; done
  echo "vllm024: stored ${d%/}"
done
[ -f "$store/MANIFEST" ] || { echo "vllm024: nothing carried yet"; exit 3; }
whole=$(sed -n 's/^whole=//p' "$store/MANIFEST")
read -r -a parts <<<"$(sed -n 's/^parts=//p' "$store/MANIFEST")"
if [ "$(cat "$site/.vb24_whole" 2>/dev/null)" != "$whole" ]; then
  missing=()
  for p in "${parts[@]}"; do [ -f "$store/$p" ] || missing+=("$p"); done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "vllm024: still to carry: ${missing[*]} (of ${parts[*]})"; exit 3
  fi
  have=$(cd "$store" && cat "${parts[@]}" | sha256sum | cut -d' ' -f1)
  [ "$have" = "$whole" ] || { echo "vllm024: the joined parts do not match the tree's sha256"; exit 1; }
  rm -rf "$site" && mkdir -p "$site"
  t0=$(date +%s)
  (cd "$store" && cat "${parts[@]}") | xz -dc -T0 | tar -x -C "$site" --no-same-owner || {
    echo "vllm024: unpack failed"; exit 1; }
  echo "$whole" >"$site/.vb24_whole"
  echo "vllm024: unpacked into $site in $(($(date +%s) - t0)) s"
fi
PYTHONPATH="$site" VLLM_NO_USAGE_STATS=1 python3 -c '
import vllm, torch
import vllm._C_stable_libtorch, vllm._moe_C_stable_libtorch  # noqa: F401
from vllm import LLM  # noqa: F401
print(f"vllm {vllm.__version__} from {vllm.__file__}, torch {torch.__version__}")' || exit 1
echo "vllm024: installed: export PYTHONPATH=$site"
