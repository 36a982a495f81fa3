#!/usr/bin/env bash
# kvcached for the GPU machine (issue 22: the reference system), packed here into .kvcached/
# (git-excluded; carry [".kvcached"], ~4 MiB): its source at the commit of a local mirror (the
# `fetch` tool's github:ovg-project/kvcached; its PyPI sdist 0.1.6 fails pip's metadata step) and
# the sdists it needs that the device lacks (posix_ipc; wrapt, which its autopatch .pth imports).
# There: `bash scripts/gpu/kvcached_install.sh` builds them against the device's torch.
#   scripts/gpu/kvcached_pack.sh [MIRROR_GIT_DIR]   (default /work/.mirror/ovg-project+kvcached/repo)
set -euo pipefail
cd "$(dirname "$0")/../.."
mirror=${1:-/work/.mirror/ovg-project+kvcached/repo}
rm -rf .kvcached && mkdir -p .kvcached/src .kvcached/deps
grep -qx '/.kvcached/' .git/info/exclude 2>/dev/null || echo '/.kvcached/' >>.git/info/exclude
# assets/ holds only images, stored as absent large objects in the mirror
mapfile -t paths < <(git -C "$mirror" ls-tree --name-only HEAD | grep -vx assets)
git -C "$mirror" archive HEAD -- "${paths[@]}" | tar -x -C .kvcached/src
git -C "$mirror" log -1 --format='%H %cs %s' >.kvcached/COMMIT
(cd .kvcached/deps && pip download -q --no-deps --no-binary :all: posix_ipc wrapt)
echo "kvcached $(cut -c1-12 .kvcached/COMMIT | head -1): $(du -sh .kvcached | cut -f1)"
