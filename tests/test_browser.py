"""The course in a real browser: JupyterLab in headless Chromium, driven by Playwright.

For every notebook in notebooks/ (found automatically): open it, run all cells, and check that no
cell shows an error, that every widget renders, and that moving each slider redraws the plot it
drives. The time from the move to the new plot is recorded, for a move to a new position and for a move
to one shown before (a render the widget keeps), and for a move to a new position after a learner's 2 s pause
(positions prefetched while the kernel is idle, course_utils.widgets), beside the same round trip for a trivial
widget (a slider bound to one line of text) measured in the same run, as a ratio to that floor:
test-artifacts/slider_latency.json. These figures are the benchmark for slider speed; nothing here fails on
them. Then the notebook is switched to JupyterLab's dark theme, its widgets are screenshotted again, and the
text of every styled output element is checked for WCAG AA contrast (4.5:1) in both themes, as the
browser computes the colours. Run All may take a multiple of the notebook's learner-mode time measured by the nbval
tier earlier in the same run (this machine's speed); a cell shown running while the kernel is idle is reported as a
dropped request and recovered once by reconnecting; after each notebook its kernel is shut down. Also checks the
server's exposure: no request without the token,
listening on 127.0.0.1 only. Screenshots go to test-artifacts/.

Needs Debian's chromium (/usr/bin/chromium) and PyPI's playwright; without them these tests are
skipped, unless COURSE_BROWSER_TESTS=require (CI sets it) turns the skip into a failure.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import LEARNER_SECONDS, NOTEBOOKS, REPO_ROOT

from course_utils.harness.lab import lab_command

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
RUN_ALL_FACTOR = 10  # Run All may take this many times the notebook's learner-mode (nbval) time on this machine
RUN_ALL_MIN_S = 120  # and never less than this
RUN_ALL_UNMEASURED_S = 600  # where this run has not measured the notebook (the browser tier run on its own)
STALL_S = 15  # a cell shown running ([*]) while the kernel reports idle this long is a dropped request
PAUSE_S = 2.0  # a learner's pause before a first visit (slider prefetch works while the kernel is idle)
FLOOR_NOTEBOOK = "_trivial_widget.ipynb"  # written into the lab's throwaway copy, never into notebooks/
FLOOR_MOVES = 7


def _missing() -> str | None:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    if not Path(CHROMIUM).exists():
        return "no Chromium at /usr/bin/chromium (Debian/Ubuntu: apt-get install chromium)"
    return None


if _missing():
    if os.environ.get("COURSE_BROWSER_TESTS") == "require":
        pytest.fail(f"browser tests required but cannot run: {_missing()}", pytrace=False)
    pytest.skip(_missing(), allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except urllib.error.URLError:  # not listening (yet)
        return 0


@pytest.fixture(scope="module")
def lab():
    """JupyterLab on a throwaway copy of notebooks/ (Lab autosaves), started as `make lab` does."""
    work = Path(tempfile.mkdtemp(prefix="course-lab-"))
    shutil.copytree(REPO_ROOT / "notebooks", work / "notebooks")
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ,
           "COURSE_PROGRESS": str(work / "progress.json"),
           "JUPYTER_CONFIG_DIR": str(work / "config"), "JUPYTER_RUNTIME_DIR": str(work / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(work / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(work / "workspaces")}
    # no news pop-up over the notebook; every cell in the DOM (Lab 4 otherwise renders only visible ones)
    for plugin, values in [("apputils-extension/notification", {"fetchNews": "false"}),
                           ("notebook-extension/tracker", {"windowingMode": "none"})]:
        folder, name = plugin.split("/")
        target = work / "settings" / "@jupyterlab" / folder
        target.mkdir(parents=True, exist_ok=True)
        (target / f"{name}.jupyterlab-settings").write_text(json.dumps(values))
    log = open(work / "lab.log", "w")
    proc = subprocess.Popen(lab_command(str(work / "notebooks"), port, token=token, open_browser=False),
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while _get(f"{base}/api/status?token={token}") != 200:
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail("JupyterLab did not start:\n" + (work / "lab.log").read_text()[-3000:])
        time.sleep(0.5)
    yield {"base": base, "token": token, "port": port, "proc": proc, "root": work / "notebooks"}
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
    if os.environ.get("COURSE_KEEP_LAB"):
        print("lab log:", work / "lab.log")
    else:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield b
        b.close()


# ------------------------------------------------------------------------------------ security

def test_requests_without_the_token_are_refused(lab):
    assert _get(f"{lab['base']}/api/contents") == 403
    assert _get(f"{lab['base']}/api/contents?token=wrong{lab['token']}") == 403
    assert _get(f"{lab['base']}/api/contents?token={lab['token']}") == 200


def _listening_addresses(port: int) -> list[str]:
    """Local addresses of sockets listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A = LISTEN
                found.append(address)
    return found


def test_server_listens_on_loopback_only(lab):
    addresses = _listening_addresses(lab["port"])
    assert addresses, "the server's listening socket was not found in /proc/net/tcp"
    assert set(addresses) == {"0100007F"}, f"listening on {addresses}, want 127.0.0.1 only"
    for family, *_, sockaddr in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
        if not sockaddr[0].startswith("127."):
            with socket.socket() as s:
                s.settimeout(2)
                assert s.connect_ex((sockaddr[0], lab["port"])) != 0, f"reachable on {sockaddr[0]}"


# ------------------------------------------------------------------------------------ notebooks

def _slider_cells(path: Path) -> int:
    nb = json.loads(path.read_text())
    return sum(any(f in "".join(c["source"]) for f in ("slider_plot(", "slider_html("))
               for c in nb["cells"] if c["cell_type"] == "code")


def _menu(page, menu: str, item: str) -> None:
    """Open a menu of Lab's menu bar and click one of its items."""
    page.locator(".lm-MenuBar-itemLabel", has_text=menu).first.click()
    page.locator(".lm-Menu-itemLabel", has_text=item).first.click()


def run_all_limit(name: str) -> float:
    """Seconds a Run All of notebook ``name`` may take: RUN_ALL_FACTOR times its learner-mode time measured by the
    nbval tier earlier in this run (so a slow or busy machine gets a longer limit), at least RUN_ALL_MIN_S."""
    measured = LEARNER_SECONDS.get(name)
    return RUN_ALL_UNMEASURED_S if measured is None else max(RUN_ALL_MIN_S, RUN_ALL_FACTOR * measured)


def _kernel_status(panel) -> str:
    indicator = panel.locator(".jp-Notebook-ExecutionIndicator").first
    return (indicator.get_attribute("data-status") or "") if indicator.count() else ""


def _run_all(page, panel, limit_s: float = RUN_ALL_UNMEASURED_S) -> list[str]:
    """Run > Run All Cells, then wait until every code cell has an execution number; returns the stalls it met.

    Right after the kernel reports idle, Lab can still drop the request while the session settles,
    so a Run All that has not started a single cell within 20 s is clicked again (3 tries).
    A cell shown running ([*]) while the kernel has been idle for STALL_S is a request the kernel dropped (ipykernel
    #1554): it is reported, and Kernel > Reconnect to Kernel (a new connection, which wakes the kernel's socket)
    is tried once. A failure names the cell that was running and for how long.
    """
    prompts: list[str] = []
    # stored outputs carry execution numbers 1..N, exactly what a fresh run produces: clear them first.
    # The menu command does nothing until the notebook has focus and has settled, so click and retry.
    for _attempt in range(5):
        panel.locator(".jp-Cell").first.click()
        _menu(page, "Edit", "Clear Outputs of All Cells")
        deadline = time.time() + 10
        while time.time() < deadline:
            prompts = [p.strip() for p in panel.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()]
            if all(p == "[ ]:" for p in prompts):
                break
            time.sleep(0.2)
        else:
            continue
        break
    else:
        pytest.fail(f"Clear Outputs of All Cells did not clear the execution numbers: {prompts}")
    stalls: list[str] = []
    running, running_since, idle_since = None, time.time(), None
    for _attempt in range(3):
        _menu(page, "Run", "Run All Cells")
        started = time.time()
        deadline = started + limit_s
        while time.time() < deadline:
            prompts = [p.strip() for p in panel.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()]
            if prompts and all(p[1:-2].isdigit() for p in prompts):
                return stalls
            if time.time() - started > 20 and all(p == "[ ]:" for p in prompts):
                break  # nothing started: click again
            now_running = next((i for i, p in enumerate(prompts) if p == "[*]:"), None)
            if now_running != running:
                running, running_since, idle_since = now_running, time.time(), None
            if running is not None and _kernel_status(panel) == "idle":
                idle_since = idle_since or time.time()
                if time.time() - idle_since > STALL_S:
                    stalls.append(f"code cell {running + 1}: shown running, kernel idle for {STALL_S} s "
                                  "(a dropped request)")
                    if len(stalls) > 1:
                        pytest.fail(f"the kernel dropped a request again after a reconnect: {stalls}")
                    _menu(page, "Kernel", "Reconnect to Kernel")
                    idle_since = None
            else:
                idle_since = None
            time.sleep(0.5)
        else:
            break
    where = (f"code cell {running + 1} had been running for {time.time() - running_since:.0f} s "
             f"(kernel {_kernel_status(panel) or 'status unknown'})" if running is not None else "no cell was running")
    pytest.fail(f"Run All did not finish in {limit_s:.0f} s: {where}; stalls met: {stalls or 'none'}; "
                f"prompts: {prompts}")


def _view(widget) -> str:
    """What the widget shows now: its plot image's data, or the HTML of an HTML view ("" while redrawing, including
    when the element is replaced between finding it and reading it: a kept render arrives within milliseconds)."""
    from playwright.sync_api import Error as PlaywrightError

    try:
        img = widget.locator(".jp-OutputArea-output img").first
        if img.count():
            return img.get_attribute("src", timeout=1000) or ""
        view = widget.locator(".jp-OutputArea-output .course-view").first
        return view.inner_html(timeout=1000) if view.count() else ""
    except PlaywrightError:  # includes its TimeoutError
        return ""


def _move_and_time(page, widget, control, act) -> float:
    """Do ``act(control)`` and return seconds until the widget's plot (or HTML view) changes."""
    deadline = time.perf_counter() + 30
    while not (before := _view(widget)):
        if time.perf_counter() > deadline:
            pytest.fail("the widget shows no plot or view")
        page.wait_for_timeout(50)
    start = time.perf_counter()
    act(control)
    deadline = start + 60
    while time.perf_counter() < deadline:
        if _view(widget) not in ("", before):
            return time.perf_counter() - start
        page.wait_for_timeout(10)
    label = control.get_attribute("aria-valuetext") or control.inner_text() or "?"
    pytest.fail(f"moving a control (now at {label!r}) did not change its plot within 60 s")


def _shut_down_kernels(lab) -> None:
    """Every kernel of the lab server shut down (the REST API), so the next notebook has the CPU to itself."""
    headers = {"Authorization": f"token {lab['token']}"}
    with urllib.request.urlopen(urllib.request.Request(f"{lab['base']}/api/kernels", headers=headers),
                                timeout=10) as response:
        kernels = json.loads(response.read())
    for kernel in kernels:
        request = urllib.request.Request(f"{lab['base']}/api/kernels/{kernel['id']}", method="DELETE",
                                         headers=headers)
        with contextlib.suppress(urllib.error.URLError):
            urllib.request.urlopen(request, timeout=30).close()


def _open_and_run(browser, lab, name: str):
    """A new page with notebook ``name`` open in a fresh workspace and all its cells run: (page, panel, stalls)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    # ?reset: a fresh workspace with only this notebook open (no tabs restored from the last test)
    page.goto(f"{lab['base']}/lab/tree/{name}?reset&token={lab['token']}")
    panel = page.locator(".jp-NotebookPanel:visible")
    panel.locator(".jp-Cell").first.wait_for(timeout=90_000)
    panel.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for(timeout=90_000)
    stalls = _run_all(page, panel, run_all_limit(name))
    return page, panel, stalls


@pytest.fixture(scope="module")
def floor_ms(lab, browser) -> float:
    """Median round trip (ms) of the trivial widget: the course's own ``slider_html`` bound to one line of
    text, so that it pays for everything a slider pays for (comm message, kernel, output, DOM) except its
    plot. Its kernel is shut down afterwards so that it does not share the CPU with the notebooks'."""
    import nbformat

    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"display_name": "Python 3 (ipykernel)",
                                                           "language": "python", "name": "python3"}})
    nb.cells = [nbformat.v4.new_code_cell(
        "from course_utils.widgets import int_slider, slider_html\n"
        "slider_html(lambda n: f\"<div class='course-view'>n = {n}</div>\", n=int_slider('n', 0, 0, 100))")]
    nbformat.write(nb, lab["root"] / FLOOR_NOTEBOOK)
    page, panel, _ = _open_and_run(browser, lab, FLOOR_NOTEBOOK)
    widget = panel.locator(".widget-interact").first
    handle = widget.locator(".noUi-handle").first
    moves = sorted(_move_and_time(page, widget, handle, lambda h: (h.focus(), h.press("ArrowRight")))
                   for _ in range(FLOOR_MOVES))
    page.close()
    _shut_down_kernels(lab)
    return 1000 * moves[FLOOR_MOVES // 2]


# Per element of an output that sets an inline style (and each element inside one): its own text, and the
# contrast of its colour against the background it is drawn on, both as the browser computes them (alpha
# blended over the ancestors' backgrounds, down to the page's).
_CONTRAST_JS = """panel => {
  const rgba = s => { const p = s.match(/[\\d.]+/g).map(Number); return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
  const over = (top, below) => [0, 1, 2].map(i => top[i] * top[3] + below[i] * (1 - top[3]));
  const backdrop = el => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    return layers.reverse().reduce((below, top) => over(top, below), [255, 255, 255]);
  };
  const luminance = c => c.map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
                          .reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
  const found = [];
  for (const el of panel.querySelectorAll('.jp-OutputArea-output [style], .jp-OutputArea-output [style] *')) {
    const text = [...el.childNodes].filter(n => n.nodeType === 3).map(n => n.textContent).join('').trim();
    if (!text) continue;
    const below = backdrop(el), fg = over(rgba(getComputedStyle(el).color), below);
    const [hi, lo] = [luminance(fg), luminance(below)].sort((a, b) => b - a);
    found.push([text.slice(0, 30), Math.round(100 * (hi + 0.05) / (lo + 0.05)) / 100]);
  }
  return found;
}"""


def _low_contrast(panel) -> list:
    """Styled output text below WCAG AA (4.5:1) in the page's current theme, with its ratio."""
    return [(text, ratio) for text, ratio in panel.evaluate(_CONTRAST_JS) if ratio < 4.5]


def _set_theme(page, name: str, light: bool) -> None:
    """Settings > Theme > ``name``, then wait until Lab has applied it."""
    page.locator(".lm-MenuBar-itemLabel", has_text="Settings").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Theme").first.hover()
    page.locator(".lm-Menu-itemLabel", has_text=name).first.click()
    page.locator(f"body[data-jp-theme-light='{str(light).lower()}']").wait_for(state="attached", timeout=30_000)
    page.wait_for_timeout(500)  # the theme's stylesheet loads after the attribute flips


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_and_sliders_move_plots(lab, browser, floor_ms, path):
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        _check_notebook(lab, browser, floor_ms, path)
    finally:  # the next notebook gets the CPU to itself
        _shut_down_kernels(lab)


def _first_visit_after_pause(page, widget, control, act) -> float:
    """Seconds from ``act(control)`` (a move to a position not shown yet) to the new view, after a learner's pause
    of PAUSE_S in which the kernel is idle and prefetches."""
    page.wait_for_timeout(int(PAUSE_S * 1000))
    return _move_and_time(page, widget, control, act)


def _check_notebook(lab, browser, floor_ms, path):
    page, panel, stalls = _open_and_run(browser, lab, path.name)

    errors = panel.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    tracebacks = [t for t in errors.all_inner_texts() if "Traceback" in t or "Error" in t]
    assert not tracebacks, f"error output in the browser: {tracebacks[0][:2000]}"
    body = panel.locator(".jp-Notebook").inner_text()
    assert "Error displaying widget" not in body
    assert "Widget Javascript not detected" not in body

    widgets = panel.locator(".widget-interact")
    assert widgets.count() == _slider_cells(path), "every slider cell renders its widget"
    latencies = {}
    for i in range(widgets.count()):
        widget = widgets.nth(i)
        widget.scroll_into_view_if_needed()
        # each control once to a new position at once (computed and rendered, unless prefetched), once to a position
        # shown before (a render the widget keeps), and once more to a new position after a learner's pause. A slider
        # goes right, left, right, right: its start need not lie on the step grid, so only the third move is sure to
        # revisit, and the fourth is the first visit of the position two steps to the right.
        for j, handle in enumerate(widget.locator(".noUi-handle").all()):
            right = lambda h: (h.focus(), h.press("ArrowRight"))  # noqa: E731
            first = _move_and_time(page, widget, handle, right)
            _move_and_time(page, widget, handle, lambda h: (h.focus(), h.press("ArrowLeft")))
            again = _move_and_time(page, widget, handle, right)
            at_max = float(handle.get_attribute("aria-valuenow") or 0) >= float(handle.get_attribute("aria-valuemax")
                                                                             or 0)
            paused = None if at_max else _first_visit_after_pause(page, widget, handle, right)  # no new position
            latencies[f"widget {i + 1}, slider {j + 1}"] = (first, again, paused)
        for j, toggles in enumerate(widget.locator(".widget-toggle-buttons").all()):
            buttons = toggles.locator("button")
            active = next(k for k in range(buttons.count()) if "mod-active" in buttons.nth(k).get_attribute("class"))
            first = _move_and_time(page, widget, buttons.last, lambda b: b.click())
            again = _move_and_time(page, widget, buttons.nth(active), lambda b: b.click())
            unseen = [k for k in range(buttons.count() - 1) if k != active]  # an option not shown yet, if any
            paused = (_first_visit_after_pause(page, widget, buttons.nth(unseen[0]), lambda b: b.click())
                      if unseen else None)
            latencies[f"widget {i + 1}, toggle {j + 1}"] = (first, again, paused)
        widget.screenshot(path=str(ARTIFACTS / f"{path.stem}-widget{i + 1}.png"))
    page.screenshot(path=str(ARTIFACTS / f"{path.stem}.png"))
    report = ARTIFACTS / "slider_latency.json"
    data = json.loads(report.read_text()) if report.exists() else {}
    data["trivial widget (floor)"] = {"ms": round(floor_ms)}

    def figures(new, again, paused) -> dict:
        found = {"new ms": round(new * 1000), "new x floor": round(new * 1000 / floor_ms, 2),
                 "revisit ms": round(again * 1000), "revisit x floor": round(again * 1000 / floor_ms, 2)}
        if paused is not None:
            found.update({f"new after {PAUSE_S:g} s pause ms": round(paused * 1000),
                          f"new after {PAUSE_S:g} s pause x floor": round(paused * 1000 / floor_ms, 2)})
        return found

    data[path.name] = {k: figures(*v) for k, v in latencies.items()}
    if stalls:
        data[path.name]["stalls (dropped requests, recovered)"] = stalls
    report.write_text(json.dumps(data, indent=1))
    print(f"{path.name}: slider -> new plot (ms, ratio to the {floor_ms:.0f} ms floor): {data[path.name]}")

    light_problems = _low_contrast(panel)
    _set_theme(page, "JupyterLab Dark", light=False)
    try:
        dark_problems = _low_contrast(panel)
        for i in range(widgets.count()):
            widgets.nth(i).scroll_into_view_if_needed()
            widgets.nth(i).screenshot(path=str(ARTIFACTS / f"{path.stem}-widget{i + 1}-dark.png"))
    finally:  # the theme is a user setting: leave it light for the next notebook
        _set_theme(page, "JupyterLab Light", light=True)
    page.close()
    assert not light_problems, f"styled output text below 4.5:1 in the light theme: {light_problems}"
    assert not dark_problems, f"styled output text below 4.5:1 in the dark theme: {dark_problems}"


def test_a_korean_notebook_runs_speaks_korean_and_its_slider_moves(lab, browser):
    """The Korean edition in the browser: notebooks/ko/02 runs, its prose and `check` lines are Korean, a slider
    redraws its plot."""
    try:
        page, panel, _ = _open_and_run(browser, lab, "ko/02_initialization.ipynb")
        body = panel.locator(".jp-Notebook").inner_text()
        assert "초기화" in body and "아직 구현하지 않았습니다" in body, "Korean prose and Korean check phrases"
        widget = panel.locator(".widget-interact").first
        widget.scroll_into_view_if_needed()
        handle = widget.locator(".noUi-handle").first
        seconds = _move_and_time(page, widget, handle, lambda h: (h.focus(), h.press("ArrowRight")))
        assert seconds < 60
        page.close()
    finally:
        _shut_down_kernels(lab)
