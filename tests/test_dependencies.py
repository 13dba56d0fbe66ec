"""The installed libraries are the ones the code is written for: every runtime dependency in
pyproject.toml is installed within its declared range. graphql/execution.py overrides
graphql-core's private `execute_field`, and graphql/view.py uses Strawberry's view hooks and
cross-web, so a version outside the tested range must fail here, not in production."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _runtime_requirements() -> list[Requirement]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    return [Requirement(line) for line in project["dependencies"]]


@pytest.mark.parametrize("requirement", _runtime_requirements(), ids=lambda r: r.name)
def test_installed_version_is_within_the_declared_range(requirement: Requirement) -> None:
    installed = metadata.version(requirement.name)
    assert requirement.specifier.contains(installed, prereleases=True), (
        f"{requirement.name} {installed} is outside the tested range {requirement.specifier}"
    )


def test_libraries_whose_internals_the_code_uses_have_an_upper_bound() -> None:
    bounded = {r.name: r.specifier for r in _runtime_requirements()}
    for name in ("strawberry-graphql", "graphql-core"):
        assert any(spec.operator == "<" for spec in bounded[name]), name


def test_imported_third_party_packages_are_declared() -> None:
    """cross-web and graphql-core are imported directly, so they are declared directly."""
    declared = {r.name for r in _runtime_requirements()}
    assert {"cross-web", "graphql-core"} <= declared
