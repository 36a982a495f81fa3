"""kvpager's registry as seen from outside the engines: the `kvpager` command's `list --json`
(every instance's figures) and `top` (its screen, captured into a text file). Used by the
benchmarks that run engines in other processes."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time


def kvpager_binary() -> str:
    return os.environ.get("KVPAGER_BINARY") or shutil.which("kvpager") or "kvpager"


def instances(env: dict | None = None) -> list[dict]:
    """The registry's instances (`kvpager list --json`); [] when the command fails."""
    out = subprocess.run([kvpager_binary(), "list", "--json"], capture_output=True, text=True,
                         env=env, check=False)
    if out.returncode != 0:
        return []
    return json.loads(out.stdout).get("instances", [])


def mapped_bytes(names, env: dict | None = None) -> dict[str, int]:
    """{name: mapped bytes} of the instances named in ``names``."""
    return {i["name"]: i["mapped_bytes"] for i in instances(env) if i["name"] in names}


def capture_top(path: str, env: dict) -> str:
    """`kvpager top`'s screen as text, through tmux when present, else its --json snapshot."""
    binary = kvpager_binary()
    tmux = shutil.which("tmux")
    if tmux:
        session = f"kvtop{os.getpid()}"
        # tmux itself runs without our LD_LIBRARY_PATH (a carried libtinfo can be older than the
        # one it needs); kvpager top inside gets it back.
        inner = " ".join(f"{k}={shlex.quote(env[k])}" for k in ("KVPAGER_SHM_PREFIX", "LD_LIBRARY_PATH")
                         if env.get(k))
        tmux_env = {k: v for k, v in env.items() if k != "LD_LIBRARY_PATH"}
        subprocess.run([tmux, "new-session", "-d", "-s", session, "-x", "110", "-y", "16",
                        f"env {inner} {shlex.quote(binary)} top -n 0.5"],
                       env=dict(tmux_env, TERM="xterm-256color"), check=False)
        time.sleep(1.5)
        screen = subprocess.run([tmux, "capture-pane", "-p", "-t", session], capture_output=True,
                                text=True, env=tmux_env, check=False).stdout
        subprocess.run([tmux, "kill-session", "-t", session], env=tmux_env, check=False)
    else:
        screen = "(tmux not found: `kvpager top --json` snapshot)\n" + subprocess.run(
            [binary, "top", "--json"], capture_output=True, text=True, env=env, check=False).stdout
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(screen)
    return screen
