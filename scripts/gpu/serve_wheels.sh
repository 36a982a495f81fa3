#!/usr/bin/env bash
# `vllm serve` on the GPU machine: what shared/vllm-bundle leaves out (the OpenAI server's
# imports). Run here, in the checkout's root, after ../shared/vllm-bundle/make.sh: downloads the
# pinned cp312 wheels into .vb3/ (git-excluded like .vb1/.vb2, ~1.5 MiB) with install.sh.
# There (a call carrying .vb3, after the bundle's two): `bash .vb3/install.sh` unpacks each
# wheel whose module the machine's python3 (with /tmp/site) cannot import into /tmp/site.
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=.vb3
mkdir -p "$dir"
rm -f "$dir"/*.whl
# module:requirement (the module is what install.sh tries to import first)
# (the GPU machine's image has click, h11, anyio, aiohttp, uvloop, prometheus-client: KINDS.md)
wheels=(uvicorn:uvicorn==0.54.0 watchfiles:watchfiles==1.3.0
  model_hosting_container_standards:model-hosting-container-standards==0.1.16
  jmespath:jmespath==1.1.0 supervisor:supervisor==4.3.0
  prometheus_fastapi_instrumentator:prometheus-fastapi-instrumentator==8.1.0
  pythonjsonlogger:python-json-logger==4.2.0)
: >"$dir/MODULES"
for w in "${wheels[@]}"; do
  pip download -q --no-deps --only-binary :all: --python-version 3.12 --implementation cp \
    --abi cp312 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 -d "$dir" "${w#*:}"
  echo "${w%%:*} ${w#*:}" >>"$dir/MODULES"
done
cat >"$dir/install.sh" <<'INSTALL'
#!/usr/bin/env bash
# Unpacks into /tmp/site each wheel whose module python3 cannot import (with /tmp/site first).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
site=${VLLM_SITE:-/tmp/site}
while read -r module req; do
  if PYTHONPATH="$site" python3 -c "import $module" 2>/dev/null; then continue; fi
  name=$(echo "${req%%==*}" | tr - _)
  whl=$(ls "$here"/*.whl | grep -i "/${name}-" | head -1)
  python3 -m zipfile -e "$whl" "$site" && echo "installed $req"
done <"$here/MODULES"
PYTHONPATH="$site" python3 -c 'import vllm.entrypoints.openai.api_server' && echo "vllm serve: imports OK"
INSTALL
chmod +x "$dir/install.sh"
du -sh "$dir"
