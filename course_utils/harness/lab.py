"""The JupyterLab command line ``make lab`` runs, shared with the browser tests.

The server binds to 127.0.0.1 only and keeps Jupyter's token authentication on: with no token
given, Jupyter generates a random one and prints the URL that carries it.
"""
from __future__ import annotations

import os
import sys


def lab_command(notebook_dir: str, port: int, *, token: str | None = None, open_browser: bool = True) -> list[str]:
    """argv that starts JupyterLab on ``notebook_dir`` at 127.0.0.1:``port``.

    ``token``: a fixed token (tests need to know it); None lets Jupyter generate one. An empty token
    would switch authentication off, so it is refused.
    """
    if token is not None and not token:
        raise ValueError("an empty token disables authentication; pass None to let Jupyter generate one")
    cmd = [sys.executable, "-m", "jupyter", "lab", f"--notebook-dir={notebook_dir}",
           "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0"]
    if token is not None:
        cmd.append(f"--IdentityProvider.token={token}")
    if not open_browser:
        cmd.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # Jupyter refuses to run as root without it (containers, CI)
    return cmd
