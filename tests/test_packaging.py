"""pyproject.toml, environment.yml and constraints-cpu.txt describe the same environment."""
import re
import sys
from pathlib import Path

import pytest
import tomllib
from conftest import REPO_ROOT
from packaging.requirements import Requirement


def _pyproject():
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def _conda_pip_lines() -> list[str]:
    lines, inside = [], False
    for raw in (REPO_ROOT / "environment.yml").read_text().splitlines():
        if raw.strip() == "- pip:":
            inside = True
            continue
        if inside:
            if not raw.startswith("      - "):
                break
            lines.append(raw.strip()[2:])
    return lines


def _normal(req: str) -> str:
    r = Requirement(req)
    return f"{r.name.lower()}{r.specifier}{'; ' + str(r.marker) if r.marker else ''}"


def test_environment_yml_lists_the_same_requirements_as_pyproject():
    project = _pyproject()["project"]
    wanted = set(map(_normal, project["dependencies"] + project["optional-dependencies"]["test"]))
    listed = [line for line in _conda_pip_lines() if not line.startswith("-e")]
    assert set(map(_normal, listed)) == wanted
    assert "-e ." in _conda_pip_lines(), "environment.yml must install the course packages themselves"


def test_environment_yml_python_satisfies_requires_python():
    text = (REPO_ROOT / "environment.yml").read_text()
    version = re.search(r"- python=(\d+\.\d+)", text).group(1)
    spec = Requirement(f"python{_pyproject()['project']['requires-python']}").specifier
    assert spec.contains(version + ".0")


def test_cpu_pins_satisfy_the_declared_ranges():
    pins = {}
    for line in (REPO_ROOT / "constraints-cpu.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            pins[req.name.lower()] = next(iter(req.specifier)).version
    assert pins["torch"] == "2.13.0" and pins["triton"] == "3.9.0"
    project = _pyproject()["project"]
    for req in map(Requirement, project["dependencies"] + project["optional-dependencies"]["test"]):
        assert req.name.lower() in pins, f"{req.name} has no pinned version in constraints-cpu.txt"
        assert req.specifier.contains(pins[req.name.lower()]), \
            f"pin {req.name}=={pins[req.name.lower()]} outside {req.specifier}"


def test_make_lab_binds_localhost_and_keeps_the_token():
    from course_utils.harness.lab import lab_command

    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "-m course_utils lab" in makefile.split("\nlab:")[1].split("\n\n")[0]
    cmd = lab_command("notebooks", 8888)
    assert "--ServerApp.ip=127.0.0.1" in cmd and "--notebook-dir=notebooks" in cmd
    assert not any("token" in arg.lower() for arg in cmd), "without a token argument Jupyter makes one"
    assert "--IdentityProvider.token=abc" in lab_command("nb", 1, token="abc")
    with pytest.raises(ValueError, match="disables authentication"):
        lab_command("nb", 1, token="")


def test_the_course_lab_sends_widget_messages_to_the_main_shell(tmp_path, monkeypatch):
    """lab_command installs the course's JupyterLab defaults (an overrides.d file in the lab's application settings):
    comms not over subshells, a value the installed JupyterLab's own schema accepts. Where the file cannot be
    written, the lab still starts."""
    import json

    from course_utils.harness import lab

    monkeypatch.setenv("JUPYTERLAB_DIR", str(tmp_path / "lab"))
    lab.lab_command("nb", 1)
    written = json.loads((tmp_path / "lab" / "settings" / "overrides.d" / "course.json").read_text())
    assert written == lab.LAB_OVERRIDES
    schema_file = (Path(sys.prefix) / "share" / "jupyter" / "lab" / "schemas" / "@jupyterlab" / "apputils-extension"
                   / "kernels-settings.json")
    schema = json.loads(schema_file.read_text())["properties"]["commsOverSubshells"]
    allowed = {option["const"] for option in schema["oneOf"]}
    assert written["@jupyterlab/apputils-extension:kernels-settings"]["commsOverSubshells"] in allowed
    (tmp_path / "blocked").write_text("a file where the lab directory should be")
    monkeypatch.setenv("JUPYTERLAB_DIR", str(tmp_path / "blocked"))
    assert lab.install_lab_overrides() is None and lab.lab_command("nb", 1)


def test_ci_runs_the_readme_test_command():
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()
    assert "make test" in (REPO_ROOT / "README.md").read_text()
    assert "make lab" in (REPO_ROOT / "README.md").read_text()


def test_running_python_is_supported():
    spec = Requirement(f"python{_pyproject()['project']['requires-python']}").specifier
    assert spec.contains(f"{sys.version_info.major}.{sys.version_info.minor}.0")
