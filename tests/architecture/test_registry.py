"""The ComfyUI registry metadata in pyproject.toml is complete and valid (the rules of
docs.comfy.org/registry/specifications), and the files it points to exist in the repository."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT, COMFY = PYPROJECT["project"], PYPROJECT["tool"]["comfy"]
TESTED_COMFYUI = "0.3.64"  # the newest ComfyUI the e2e suite runs in
RAW_PREFIX = "https://raw.githubusercontent.com/"


def test_node_id_follows_the_registry_rules():
    name = PROJECT["name"]
    assert len(name) < 100
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9._-]*", name), "alphanumerics, '-', '_', '.'; starts with a letter"
    assert not re.search(r"[._-]{2}", name), "no consecutive special characters"


def test_version_is_semver_and_the_changelog_has_it():
    version = PROJECT["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert re.search(rf"^## {re.escape(version)}\b", changelog, re.M), f"CHANGELOG.md has no '## {version}' entry"


def test_license_file_is_the_apache_license():
    assert PROJECT["license"] == {"file": "LICENSE"}
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text


def test_repository_url_and_publisher():
    repository = PROJECT["urls"]["Repository"]
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", repository)
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", COMFY["PublisherId"])
    assert COMFY["DisplayName"].strip() and "Lumina" in COMFY["DisplayName"]


def test_icon_is_a_committed_image_within_the_size_limit():
    icon = COMFY["Icon"]
    owner_repo = PROJECT["urls"]["Repository"].removeprefix("https://github.com/")
    prefix = f"{RAW_PREFIX}{owner_repo}/main/"
    assert icon.startswith(prefix), f"the icon should be served from this repository: {prefix}…"
    path = REPO / icon.removeprefix(prefix)
    assert path.suffix.lower() in {".svg", ".png", ".jpg", ".jpeg", ".gif"} and path.is_file()
    with Image.open(path) as image:
        assert image.width <= 800 and image.height <= 400


def test_requires_comfyui_admits_the_comfyui_we_test():
    spec = SpecifierSet(COMFY["requires-comfyui"])
    assert Version(TESTED_COMFYUI) in spec


@pytest.mark.parametrize("folder", COMFY.get("includes", []) or [None])
def test_includes_name_existing_folders(folder):
    assert isinstance(COMFY["includes"], list)
    if folder is not None:
        assert (REPO / folder).exists(), folder


def test_python_requirement_and_classifiers():
    assert Version("3.10") in SpecifierSet(PROJECT["requires-python"])
    assert "Operating System :: OS Independent" in PROJECT["classifiers"]
