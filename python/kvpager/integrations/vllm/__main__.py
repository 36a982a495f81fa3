"""python -m kvpager.integrations.vllm [--fingerprints | --install-entry-point SITE_DIR]

--fingerprints: the FINGERPRINTS table of the installed vLLM (to update the module).
--install-entry-point DIR: writes the ``vllm.general_plugins`` entry point of a kvpager that is
not pip-installed (a build tree on PYTHONPATH) as DIR/kvpager_vllm_plugin-0.dist-info, so that
vLLM's plugin loader finds it in every process; DIR must be on sys.path (e.g. site-packages).
"""

import argparse
import os
import sys

from . import current_fingerprints

ENTRY_POINTS = "[vllm.general_plugins]\nkvpager = kvpager.integrations.vllm:register\n"


def install_entry_point(site_dir: str) -> str:
    info = os.path.join(site_dir, "kvpager_vllm_plugin-0.dist-info")
    os.makedirs(info, exist_ok=True)
    with open(os.path.join(info, "METADATA"), "w") as f:
        f.write("Metadata-Version: 2.1\nName: kvpager-vllm-plugin\nVersion: 0\n")
    with open(os.path.join(info, "entry_points.txt"), "w") as f:
        f.write(ENTRY_POINTS)
    return info


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m kvpager.integrations.vllm", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fingerprints", action="store_true")
    ap.add_argument("--install-entry-point", metavar="SITE_DIR")
    a = ap.parse_args()
    if a.install_entry_point:
        print(install_entry_point(a.install_entry_point))
    if a.fingerprints:
        for name, value in current_fingerprints().items():
            print(f'    "{name}": "{value}",')
    if not (a.install_entry_point or a.fingerprints):
        ap.print_help()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
