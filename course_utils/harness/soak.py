"""Soak test of the notebook kernel stack: how often does a request go unanswered with the kernel idle?

    python -m course_utils.harness.soak [--protocol 300] [--lab 100] [--notebooks 06 08 --runs 3] [--stall-s 10]

A maintainer's tool, not part of ``make test``. It drives a kernel the ways a learner's session does and counts
*stalls*: a request the kernel never answers within ``--stall-s`` seconds while it sits idle (the symptom of
ipykernel issue #1554: a request that reaches the shell socket while the kernel sends a reply there is not read
until something else wakes the socket).

- ``--protocol N``: a kernel started by jupyter_client; N times, a transient client sends ``kernel_info_request``
  on shell and control and closes as soon as control answers (what jupyter_server does on every new websocket),
  and right then (every other run: 0-4 ms after the nudge, while the kernel answers it) the main client sends a
  small ``execute_request``. A stall is woken with a ``kernel_info_request``
  on the main client, so the run goes on.
- ``--lab N``: a JupyterLab server started as ``make lab`` starts it, one kernel, and N websocket connections in a
  row (as a browser tab that opens a notebook), each sending one ``execute_request`` and closing.
- ``--notebooks ... --runs K``: the course's notebook runner on those notebooks K times; its stall detection
  (``notebook_runner.STALL_S``) reports every request the kernel dropped.
- ``--plain ... --runs K``: plain nbclient on those notebooks K times (no sliced polling, no stall watch); a cell that
  runs past a 120 s limit is a stall.

Prints the kernel stack's versions and ``stalls / runs`` for each part.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from importlib.metadata import version
from pathlib import Path

from course_utils.chapters import CHAPTERS
from course_utils.harness import REPO_ROOT

STACK = ("ipykernel", "jupyter_client", "pyzmq", "jupyter_server", "tornado", "nbclient")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stack_versions() -> str:
    found = []
    for name in STACK:
        try:
            found.append(f"{name} {version(name)}")
        except Exception:
            found.append(f"{name} -")
    import zmq

    return ", ".join(found) + f", libzmq {zmq.zmq_version()}"


async def _reply(channel, msg_id: str, timeout: float):
    """The reply to ``msg_id`` on ``channel`` within ``timeout`` seconds, else None (other replies are skipped)."""
    from queue import Empty

    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = await channel.get_msg(timeout=min(left, 0.5))
        except Empty:
            continue
        if msg["parent_header"].get("msg_id") == msg_id:
            return msg
    return None


async def protocol_soak(runs: int, stall_s: float) -> tuple[int, int]:
    """``(stalls, runs)`` of the transient-nudge race with a kernel started by jupyter_client."""
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_client.session import Session

    km = AsyncKernelManager(kernel_name="python3")
    await km.start_kernel()
    kc = km.client()
    kc.start_channels()
    await kc.wait_for_ready(timeout=60)
    stalls = 0
    try:
        for i in range(runs):
            # its own session: channels connect with the session id as their identity, and a second client with the
            # same one would take the main client's replies on the kernel's ROUTER socket
            nudge = km.client(session=Session(key=km.session.key, signature_scheme=km.session.signature_scheme))
            nudge.start_channels(shell=True, iopub=False, stdin=False, hb=False, control=True)
            nudge.kernel_info()  # on the transient shell channel
            msg = nudge.session.msg("kernel_info_request")
            control_id = msg["header"]["msg_id"]
            nudge.control_channel.send(msg)
            if i % 2:  # every other run: the execute lands while the kernel answers the nudge (0-4 ms after it)
                await asyncio.sleep(random.uniform(0, 0.004))
            else:  # as jupyter_server does: close the transient channels once control has answered
                await _reply(nudge.control_channel, control_id, 30)
                nudge.stop_channels()
            msg_id = kc.execute(f"_soak = {i}", silent=True)
            if i % 2:
                await _reply(nudge.control_channel, control_id, 30)
                nudge.stop_channels()
            if await _reply(kc.shell_channel, msg_id, stall_s) is None:
                stalls += 1
                print(f"  protocol run {i + 1}: no reply in {stall_s:.0f} s, kernel idle; waking it", flush=True)
                kc.kernel_info()
                if await _reply(kc.shell_channel, msg_id, 30) is None:
                    print(f"  protocol run {i + 1}: still no reply after a kernel_info_request; stopping", flush=True)
                    break
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)
    return stalls, runs


async def lab_soak(runs: int, stall_s: float) -> tuple[int, int]:
    """``(stalls, runs)`` of websocket connections to one kernel of a JupyterLab server, as browser tabs make."""
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest
    from tornado.websocket import websocket_connect

    from course_utils.harness.lab import lab_command
    work = Path(tempfile.mkdtemp(prefix="course-soak-"))
    (work / "notebooks").mkdir()
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(work / "config"), "JUPYTER_RUNTIME_DIR": str(work / "runtime")}
    log = open(work / "lab.log", "w")
    proc = subprocess.Popen(lab_command(str(work / "notebooks"), port, token=token, open_browser=False),
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    base, http = f"127.0.0.1:{port}", AsyncHTTPClient()
    headers = {"Authorization": f"token {token}"}
    stalls = 0
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                await http.fetch(f"http://{base}/api/status", headers=headers)
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("JupyterLab did not start:\n" + (work / "lab.log").read_text()[-2000:])
                await asyncio.sleep(0.5)
        kernel = json.loads((await http.fetch(f"http://{base}/api/kernels", method="POST", body="{}",
                                              headers=headers)).body)
        url = f"ws://{base}/api/kernels/{kernel['id']}/channels"
        for i in range(runs):
            ws = await websocket_connect(HTTPRequest(url, headers=headers))
            msg_id = uuid.uuid4().hex
            ws.write_message(json.dumps({
                "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "soak", "session": "soak",
                           "version": "5.3", "date": ""},
                "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                "content": {"code": f"_soak = {i}", "silent": False, "store_history": False,
                            "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))
            answered = False
            deadline = time.monotonic() + stall_s
            while (left := deadline - time.monotonic()) > 0:
                try:
                    raw = await asyncio.wait_for(ws.read_message(), timeout=left)
                except asyncio.TimeoutError:
                    break
                if raw is None:
                    break
                msg = json.loads(raw)
                if msg.get("channel") == "shell" and msg["parent_header"].get("msg_id") == msg_id:
                    answered = True
                    break
            if not answered:
                stalls += 1
                print(f"  lab run {i + 1}: no execute_reply in {stall_s:.0f} s", flush=True)
            ws.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    return stalls, runs


def _notebooks(names: list[str]) -> list[Path]:
    """The chapters' notebooks whose file names start with one of ``names`` (notebook numbers: "03")."""
    return [REPO_ROOT / c.notebook for c in CHAPTERS if any(c.notebook.name.startswith(n) for n in names)]


def plain_nbclient_soak(names: list[str], runs: int, cell_timeout: int = 120) -> tuple[int, int]:
    """``(stalls, runs)`` of plain nbclient (as nbconvert and many CI scripts use it, without the course runner's
    sliced polling and stall watch): a cell that exceeds ``cell_timeout`` (every course cell takes far less) is a
    stall; the run stops there."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError

    copies = Path(tempfile.mkdtemp(prefix="course-soak-plain-"))
    paths = [Path(shutil.copy(p, copies / p.name)) for p in _notebooks(names)]
    stalls = total = 0
    for run in range(runs):
        for path in paths:
            nb = nbformat.read(path, as_version=4)
            start = time.perf_counter()
            try:
                NotebookClient(nb, timeout=cell_timeout, kernel_name="python3",
                               resources={"metadata": {"path": str(path.parent)}}).execute()
                found = "no stall"
            except CellTimeoutError as exc:
                stalls += 1
                found = f"STALL: {str(exc).splitlines()[0]}"
            total += 1
            print(f"  plain nbclient {path.name} run {run + 1}: {time.perf_counter() - start:.1f} s, {found}",
                  flush=True)
    return stalls, total


def notebook_soak(names: list[str], runs: int) -> tuple[int, int]:
    """``(stalls, cells run)`` of the course's notebook runner over ``names`` (notebook numbers), ``runs`` times."""
    from course_utils.harness import notebook_runner

    originals = _notebooks(names)
    copies = Path(tempfile.mkdtemp(prefix="course-soak-notebooks-"))  # a snapshot: edits meanwhile do not matter
    paths = [Path(shutil.copy(p, copies / p.name)) for p in originals]
    stalls = cells = 0
    for run in range(runs):
        for path in paths:
            nb, seconds = notebook_runner.execute(path)
            found = notebook_runner.last_stalls()
            stalls += len(found)
            cells += sum(c.cell_type == "code" for c in nb.cells)
            print(f"  {path.name} run {run + 1}: {seconds:.1f} s, {len(found)} stall(s) {found}", flush=True)
    return stalls, cells


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_utils.harness.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--protocol", type=int, default=300, help="transient-nudge races (0 to skip)")
    parser.add_argument("--lab", type=int, default=100, help="websocket connections to a JupyterLab kernel (0 to skip)")
    parser.add_argument("--notebooks", nargs="*", default=[], help="notebook numbers to run with the course's runner")
    parser.add_argument("--plain", nargs="*", default=[], help="notebook numbers to run with plain nbclient")
    parser.add_argument("--runs", type=int, default=1, help="runs of each of --notebooks and --plain")
    parser.add_argument("--stall-s", type=float, default=10.0, help="seconds without a reply that count as a stall")
    args = parser.parse_args(argv)
    print(stack_versions(), flush=True)
    results = {}
    if args.protocol:
        results["protocol (transient nudge, then execute)"] = asyncio.run(protocol_soak(args.protocol, args.stall_s))
    if args.lab:
        results["lab (websocket per request)"] = asyncio.run(lab_soak(args.lab, args.stall_s))
    if args.notebooks:
        results[f"notebooks {' '.join(args.notebooks)} x{args.runs} (cells)"] = notebook_soak(args.notebooks, args.runs)
    if args.plain:
        results[f"plain nbclient {' '.join(args.plain)} x{args.runs} (runs)"] = plain_nbclient_soak(args.plain,
                                                                                                     args.runs)
    for part, (stalls, runs) in results.items():
        print(f"{part}: {stalls} stall(s) in {runs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
