"""Prints the build targets that the CTest tests of one label need, so that a build for one
run (the sanitizer builds of scripts/test.sh) compiles those and not the whole tree: each
test's executable (kvpager_add_test names the test for its target; ctest -N shows no command
for an executable not built yet) and the built files in its REQUIRED_FILES (the kvpager
binary, for tests declared BINARY in cmake/KvpagerHelpers.cmake), that BUILD_DIR's Ninja
build makes. Needs a configured BUILD_DIR (scripts/setup.sh configures with Ninja).

Usage: label_targets.py BUILD_DIR LABEL (a ctest -L regular expression)
"""

import json
import os
import subprocess
import sys


def main(build_dir: str, label: str) -> int:
    listing = subprocess.run(
        ["ctest", "--test-dir", build_dir, "-N", "-L", label, "--show-only=json-v1"],
        check=True, capture_output=True, text=True).stdout
    known = subprocess.run(["ninja", "-C", build_dir, "-t", "targets", "all"],
                           check=True, capture_output=True, text=True).stdout
    outputs = {line.split(": ")[0] for line in known.splitlines()}
    wanted = set()
    for test in json.loads(listing)["tests"]:
        wanted.add(test["name"])
        wanted.update(os.path.basename(p) for p in test.get("command", [])[:1])
        for prop in test.get("properties", []):
            if prop["name"] == "REQUIRED_FILES":
                wanted.update(os.path.basename(p) for p in prop["value"])
    targets = sorted(wanted & outputs)
    if not targets:
        print(f"label_targets: no test labelled {label} in {build_dir}", file=sys.stderr)
        return 1
    print(" ".join(targets))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
