"""Project hygiene: environment.yml matches pyproject, CI runs the README's command, ruff is clean."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import tomllib
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
# pip names whose conda-forge package has another name, or that expand to several packages
CONDA_NAMES = {"dask[distributed]": ["dask", "distributed"]}


def pyproject_requirements() -> dict[str, str]:
    """``{conda name: version specifier}`` for the core, lab, distributed and test dependencies."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"])
    for extra in ("lab", "distributed", "test"):
        reqs += meta["optional-dependencies"][extra]
    out = {}
    for text in reqs:
        req = Requirement(text)
        key = req.name + (f"[{','.join(sorted(req.extras))}]" if req.extras else "")
        for name in CONDA_NAMES.get(key, [req.name]):
            out[name.lower()] = str(req.specifier)
    return out


def conda_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    out = {}
    for dep in env["dependencies"]:
        if isinstance(dep, str):
            m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", dep.strip())
            out[m.group(1).lower()] = m.group(2).replace(" ", "")
    return out


def normalise(spec: str) -> set[str]:
    return {s.strip() for s in spec.split(",") if s.strip()}


def test_environment_yml_matches_pyproject():
    pip, conda = pyproject_requirements(), conda_requirements()
    missing = sorted(set(pip) - set(conda))
    assert not missing, f"environment.yml lacks {missing}"
    for name, spec in pip.items():
        assert normalise(conda[name]) == normalise(spec), (
            f"{name}: pyproject {spec!r} vs environment.yml {conda[name]!r}"
        )
    extra = sorted(set(conda) - set(pip) - {"python", "pip"})
    assert not extra, f"environment.yml has packages pyproject does not: {extra}"
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    python = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert python == [f"python{requires}"]


def readme_command(title: str) -> str:
    """The shell command in the README's fenced block right after a line containing ``title``."""
    text = (ROOT / "README.md").read_text()
    m = re.search(re.escape(title) + r".*?```(?:bash|sh)?\n(.+?)\n```", text, re.S)
    assert m, f"README has no command block after {title!r}"
    return m.group(1).strip()


def test_ci_runs_exactly_the_readme_test_command():
    command = readme_command("Run the tests")
    ci = (ROOT / ".ci" / "run").read_text()
    assert command in ci.splitlines()
    assert "pytest" in command


def test_readme_lab_command_starts_the_lab_module():
    command = readme_command("Open the lab")
    assert "-m cntk_widgets" in command


def test_ruff_is_clean():
    beside = Path(sys.executable).parent / "ruff"  # ruff is a test dependency: installed with the extras
    ruff = str(beside) if beside.exists() else shutil.which("ruff")
    assert ruff, "ruff is not installed (pip install -e '.[test]')"
    out = subprocess.run([ruff, "check", "--quiet", str(ROOT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:]
