"""The documentation's reference stays true: every LENET_* variable the code reads is in
the environment table (and nothing else is), the generated pages cover every registered
recipe, model, command and route, every page is in the site's navigation, and the README
stays a front page that reaches the docs in one click."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
sys.path.insert(0, str(ROOT / "scripts"))
import docs_hooks  # noqa: E402  (scripts/docs_hooks.py: the site's generators)

# Where a LENET_* variable can be read: lenet, its tests, benchmarks, scripts, CI and the
# chapter's notebook.
READERS = ["src/lenet/**/*.py", "tests/**/*.py", "benchmarks/*.py", "scripts/*",
           "Makefile", ".ci/run", "docs/tutorials/*.ipynb"]
NAME = re.compile(r"\bLENET_[A-Z0-9_]*[A-Z0-9]\b")


def variables_read() -> dict[str, set[str]]:
    """LENET_* name -> the files that mention it (this test and the docs' own text aside)."""
    found: dict[str, set[str]] = {}
    for pattern in READERS:
        for path in ROOT.glob(pattern):
            if path.is_file() and path.resolve() != Path(__file__).resolve():
                for name in NAME.findall(path.read_text(errors="replace")):
                    found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def test_the_environment_table_lists_every_variable_the_code_reads():
    table = (DOCS / "reference" / "environment.md").read_text()
    listed = set(re.findall(r"^\| `(LENET_[A-Z0-9_]+)` \|", table, flags=re.M))
    read = variables_read()
    missing = {name: sorted(files) for name, files in read.items() if name not in listed}
    assert not missing, f"add these to docs/reference/environment.md: {missing}"
    assert listed <= set(read), f"listed but read nowhere: {sorted(listed - set(read))}"
    assert len(listed) >= 16


def test_the_generated_pages_cover_every_registry_entry_command_and_route():
    from lenet.cli import build_parser
    from lenet.models.config import MODELS
    from lenet.training.config import RECIPES

    recipes = docs_hooks.recipes_reference()
    for name in RECIPES:
        assert f"| `{name}` | " in recipes, name
    assert "| `fast` | The least wall time to 0.90" in recipes  # the comment above the entry
    models = docs_hooks.models_reference()
    assert all(f"| `{name}` | " in models for name in MODELS)
    assert "| 61,706 |" in models
    cli = docs_hooks.cli_reference()
    commands = [name for name, _ in docs_hooks.subcommands(build_parser())]
    assert {"train", "serve", "ood", "data fetch", "data show"} <= set(commands)
    for name in commands:
        assert f"## `lenet {name}`" in cli, name
    http = docs_hooks.http_reference()
    schema = docs_hooks.openapi_schema()
    for path, item in schema["paths"].items():
        for method in item:
            assert f"## `{method.upper()} {path}`" in http
    assert "`png` \\| `list` \\| `none`" in http  # the enums, as the schema states them


def test_every_page_is_in_the_navigation_and_every_marker_has_a_generator():
    config = (ROOT / "mkdocs.yml").read_text()
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*") if p.suffix in (".md", ".ipynb")}
    in_nav = set(re.findall(r": ([\w/.-]+\.(?:md|ipynb))$", config, flags=re.M))
    assert pages == in_nav, (sorted(pages - in_nav), sorted(in_nav - pages))
    for page in DOCS.rglob("*.md"):
        for marker in docs_hooks.MARKER.findall(page.read_text()):
            assert marker in docs_hooks.GENERATORS, (page, marker)


@pytest.mark.parametrize("target", [
    "docs/tutorials/first-run.md",          # set-up and a first run
    "docs/tutorials/lenet-chapter.ipynb",   # the book's chapter
    "docs/tutorials/book-code.md",          # the book's code
    "docs/tutorials/serve-a-run.md",        # serving
    "docs/reference/cli.md",                # the CLI reference
    "docs/explanation/performance.md",      # the figures
])
def test_the_readme_is_a_front_page_one_click_from_each_part(target):
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    assert f"]({target})" in readme
    assert (ROOT / target).is_file()
    assert "## Figures" in readme and "make train" in readme and "make test" in readme
