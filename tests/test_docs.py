"""The documentation site (mkdocs.yml): every module of the package has a place in the API
reference, and every page of docs/ is in the site's navigation. (CI builds the site with
``mkdocs build --strict``: a docstring griffe cannot read, or a broken link, fails it.)"""

from __future__ import annotations

import pkgutil
import re
from pathlib import Path

import yaml

import workbench

ROOT = Path(__file__).resolve().parents[1]


def _nav_pages(entries) -> list[str]:
    pages = []
    for entry in entries:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_every_module_is_in_the_api_reference():
    documented = set()
    for page in (ROOT / "docs" / "api").glob("*.md"):
        documented |= set(re.findall(r"^::: ([\w.]+)$", page.read_text(), flags=re.M))
    modules = {m.name for m in pkgutil.walk_packages(workbench.__path__, "workbench.")}
    modules = {m for m in modules if not m.rsplit(".", 1)[-1].startswith("_")} | {"workbench"}
    assert modules - documented == set(), "modules missing from docs/api"
    assert documented - modules == set(), "docs/api names modules that do not exist"


def test_every_docs_page_is_in_the_navigation():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = set(_nav_pages(config["nav"]))
    pages = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert pages - nav == set(), "docs pages missing from mkdocs.yml's nav"
    assert nav - pages == set(), "mkdocs.yml's nav names pages that do not exist"
