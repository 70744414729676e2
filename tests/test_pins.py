"""pip users (requirements.txt, pyproject.toml) and conda users (environment.yml) get the same pins."""
from __future__ import annotations

import re
import tomllib

import yaml

from conftest import REPO


def requirement_lines() -> list[str]:
    lines = (REPO / "requirements.txt").read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def test_every_requirement_is_pinned_to_one_version():
    unpinned = [line for line in requirement_lines() if not re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[\w.+\-]+", line)]
    assert not unpinned, f"pin these with ==: {unpinned}"
    names = [line.split("==")[0].lower().replace("_", "-") for line in requirement_lines()]
    assert len(names) == len(set(names)), "a package is pinned twice"


def test_pyproject_reads_its_dependencies_from_requirements_txt():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "dependencies" in project["project"]["dynamic"] and "dependencies" not in project["project"]
    assert project["tool"]["setuptools"]["dynamic"]["dependencies"] == {"file": ["requirements.txt"]}
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["lib", "lib.*"]


def test_environment_yml_installs_requirements_txt_and_the_supported_python():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert "-r requirements.txt" in pip and "-e ." in pip
    conda_pins = [d for d in env["dependencies"] if isinstance(d, str) and "=" in d and not d.startswith("python")]
    assert not conda_pins, f"pin these in requirements.txt instead, or both would need updating: {conda_pins}"
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    required = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert required == ">=3.11" and python == "python=3.11"
