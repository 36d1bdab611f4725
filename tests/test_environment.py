"""environment.yml (conda, CPU set) and pyproject.toml (pip) pin the same packages at the same
versions; torch is a range in the dependencies and an exact pin in the ``cpu`` extra."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
ENV = yaml.safe_load((REPO / "environment.yml").read_text())


def exact_pin(req: Requirement) -> str | None:
    specs = list(req.specifier)
    if len(specs) == 1 and specs[0].operator == "==":
        return specs[0].version
    return None


def pip_section() -> list[str]:
    pips = [d["pip"] for d in ENV["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pips) == 1, "environment.yml needs exactly one pip: list"
    return pips[0]


def env_pins() -> dict[str, str]:
    out = {}
    for line in pip_section():
        if line.startswith("-"):  # -e . and other pip options
            continue
        req = Requirement(line)
        pin = exact_pin(req)
        assert pin, f"environment.yml: {line!r} is not an exact pin (name==version)"
        name = canonicalize_name(req.name)
        assert name not in out, f"environment.yml lists {name} twice"
        out[name] = pin
    return out


def pyproject_reqs() -> dict[str, list[Requirement]]:
    project = PYPROJECT["project"]
    groups = {"dependencies": project["dependencies"]}
    groups.update({f"extra:{k}": v for k, v in project.get("optional-dependencies", {}).items()})
    return {g: [Requirement(r) for r in reqs] for g, reqs in groups.items()}


def pyproject_pins() -> dict[str, str]:
    """Exact pins of the CPU set: dependencies + the cpu and dev extras (torch from the cpu extra)."""
    reqs = pyproject_reqs()
    out: dict[str, str] = {}
    for group in ("dependencies", "extra:cpu", "extra:dev"):
        for req in reqs[group]:
            pin = exact_pin(req)
            if pin:
                out[canonicalize_name(req.name)] = pin
    return out


SPLIT = ("torch", "numpy")
"""Packages whose CPU and GPU sets differ: a range in dependencies, an exact pin in the cpu extra."""


def test_every_dependency_is_pinned_except_torch():
    for req in pyproject_reqs()["dependencies"]:
        if canonicalize_name(req.name) in SPLIT:
            assert exact_pin(req) is None, f"{req.name} is a range in dependencies (cpu and gpu sets differ)"
        else:
            assert exact_pin(req), f"pyproject dependency {req} is not pinned exactly"
    for extra in ("cpu", "dev", "gpu"):
        for req in pyproject_reqs()[f"extra:{extra}"]:
            assert exact_pin(req), f"pyproject extra {extra}: {req} is not pinned exactly"


@pytest.mark.parametrize("name", SPLIT)
def test_split_range_and_cpu_pin_agree(name):
    deps = {canonicalize_name(r.name): r for r in pyproject_reqs()["dependencies"]}
    cpu = {canonicalize_name(r.name): r for r in pyproject_reqs()["extra:cpu"]}
    assert name in deps and name in cpu
    pin = exact_pin(cpu[name])
    assert pin and Version(pin) in deps[name].specifier, \
        f"cpu extra {name}=={pin} is outside the dependencies range {deps[name].specifier}"
    assert env_pins()[name] == pin


def test_pyproject_pins_appear_in_environment_yml():
    env = env_pins()
    for name, version in pyproject_pins().items():
        assert name in env, f"{name}=={version} (pyproject.toml) is missing from environment.yml"
        assert env[name] == version, f"{name}: pyproject.toml pins {version}, environment.yml {env[name]}"


def test_environment_yml_pins_appear_in_pyproject():
    py = pyproject_pins()
    for name, version in env_pins().items():
        assert name in py, f"{name}=={version} (environment.yml) is not in pyproject.toml (deps, cpu, dev)"
        assert py[name] == version, f"{name}: environment.yml pins {version}, pyproject.toml {py[name]}"


def test_gpu_extra_is_not_in_the_cpu_environment():
    env = env_pins()
    for req in pyproject_reqs()["extra:gpu"]:
        assert canonicalize_name(req.name) not in env, f"{req.name} is GPU-only; environment.yml is the CPU set"


def test_environment_installs_the_project_and_a_matching_python():
    assert "-e ." in pip_section()
    pythons = [d for d in ENV["dependencies"] if isinstance(d, str) and re.match(r"python\b", d)]
    assert len(pythons) == 1
    version = pythons[0].split("=", 1)[1].lstrip("=")
    requires = PYPROJECT["project"]["requires-python"]
    from packaging.specifiers import SpecifierSet

    assert Version(version + ".0") in SpecifierSet(requires), f"python={version} vs requires-python {requires}"

