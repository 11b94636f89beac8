"""The JupyterLab command line ``make lab`` runs, shared with the browser tests.

The server binds to 127.0.0.1 only and keeps Jupyter's token authentication on: with no token
given, Jupyter generates a random one and prints the URL that carries it.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# JupyterLab settings the course's lab starts with, as defaults a learner's own settings still override. Widget
# messages go to the kernel's main shell: JupyterLab 4.4+ sends them to a kernel *subshell* (a thread beside the one
# that runs the cells) when the kernel supports it, and with ipykernel 7.4 a slider move handled there now and then
# never redrew its plot (the browser tier waited 60 s, in 2 of its runs, with and without prefetch).
LAB_OVERRIDES = {"@jupyterlab/apputils-extension:kernels-settings": {"commsOverSubshells": "disabled"}}


def install_lab_overrides() -> Path | None:
    """Write :data:`LAB_OVERRIDES` to ``overrides.d/course.json`` in the application settings of the JupyterLab this
    Python runs (``$JUPYTERLAB_DIR/settings``, by default ``<sys.prefix>/share/jupyter/lab/settings``). Returns the
    path, or None where it cannot be written (the lab then starts with JupyterLab's own defaults)."""
    app_dir = Path(os.environ.get("JUPYTERLAB_DIR") or Path(sys.prefix) / "share" / "jupyter" / "lab")
    path = app_dir / "settings" / "overrides.d" / "course.json"
    text = json.dumps(LAB_OVERRIDES, indent=1) + "\n"
    try:
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    except OSError as exc:
        print(f"note: could not write the course's JupyterLab defaults to {path} ({exc}); starting without them",
              file=sys.stderr)
        return None
    return path


def lab_command(notebook_dir: str, port: int, *, token: str | None = None, open_browser: bool = True) -> list[str]:
    """argv that starts JupyterLab on ``notebook_dir`` at 127.0.0.1:``port``, after installing the course's settings
    defaults (:func:`install_lab_overrides`).

    ``token``: a fixed token (tests need to know it); None lets Jupyter generate one. An empty token
    would switch authentication off, so it is refused.
    """
    if token is not None and not token:
        raise ValueError("an empty token disables authentication; pass None to let Jupyter generate one")
    install_lab_overrides()
    cmd = [sys.executable, "-m", "jupyter", "lab", f"--notebook-dir={notebook_dir}",
           "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0"]
    if token is not None:
        cmd.append(f"--IdentityProvider.token={token}")
    if not open_browser:
        cmd.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # Jupyter refuses to run as root without it (containers, CI)
    return cmd
