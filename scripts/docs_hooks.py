"""mkdocs hooks (mkdocs.yml: `hooks:`): reference pages generated from the code at build time.

A page asks for a generated part with a marker line, replaced when the site is built:

    <!-- generated: cli -->        every `lenet` command's --help, from the argparse parser
    <!-- generated: recipes -->    the recipe registry (lenet.training.config.RECIPES)
    <!-- generated: models -->     the model registry (lenet.models.config.MODELS)
    <!-- generated: http-api -->   lenet serve's OpenAPI schema, operation by operation

so none of them can go stale. The schema itself is also a file of the site,
reference/openapi.json. tests/docs/test_docs_reference.py runs each generator.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.M)


# --- the command line ------------------------------------------------------------------------

def subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    """(name, parser) of every command under `parser`, depth first, in the help's order."""
    found: list[tuple[str, argparse.ArgumentParser]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) in seen:  # an alias
                    continue
                seen.add(id(sub))
                found.append((name, sub))
                found += [(f"{name} {n}", p) for n, p in subcommands(sub)]
    return found


def cli_reference() -> str:
    from lenet.cli import build_parser

    os.environ["COLUMNS"] = "100"  # argparse wraps help to the terminal's width
    parser = build_parser()
    helps = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
    parts = ["Every command, as `lenet COMMAND --help` prints it (generated from the parser "
             "when this site was built).", ""]
    parts += ["| command | what it does |", "|---|---|"]
    commands = subcommands(parser)
    for name, _ in commands:
        if " " not in name:
            parts.append(f"| [`lenet {name}`](#lenet-{name}) | {helps.get(name, '')} |")
    for name, sub in commands:
        anchor = "lenet-" + name.replace(" ", "-")
        parts += ["", f"## `lenet {name}` {{#{anchor}}}", "", "```text",
                  sub.format_help().rstrip(), "```"]
    return "\n".join(parts)


# --- registries: each entry with the comment above it in the source ---------------------------

def registry_comments(path: Path, name: str) -> dict[str, str]:
    """The comment lines right above each key of the dict literal `name = {...}` in `path`."""
    source = path.read_text()
    lines = source.splitlines()
    for node in ast.walk(ast.parse(source)):
        target = getattr(node, "target", None) or (getattr(node, "targets", None) or [None])[0]
        if isinstance(target, ast.Name) and target.id == name and isinstance(
                getattr(node, "value", None), ast.Dict):
            comments = {}
            for key in node.value.keys:  # type: ignore[union-attr]
                if not isinstance(key, ast.Constant):
                    continue
                above, row = [], key.lineno - 2
                while row >= 0 and lines[row].strip().startswith("#"):
                    above.insert(0, lines[row].strip().lstrip("#").strip())
                    row -= 1
                comments[key.value] = " ".join(above)
            return comments
    raise LookupError(f"no dict literal {name} in {path}")


def show(value: Any) -> str:
    if hasattr(value, "to_dict"):  # ModelSettings: only what it changes
        value = value.to_dict()
    if isinstance(value, dict):
        return ", ".join(f"{k}={show(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def recipes_reference() -> str:
    from lenet.training import config

    comments = registry_comments(ROOT / "src/lenet/training/config.py", "RECIPES")
    book = {f.name: f.metadata["book"] for f in dataclasses.fields(config.TrainConfig)
            if "book" in f.metadata}
    rows = ["| recipe | what it is | options it sets (the rest: the book's) |", "|---|---|---|"]
    first: dict[int, str] = {}  # a recipe registered under a second name is that one
    for name, options in config.RECIPES.items():
        if id(options) in first:
            rows.append(f"| `{name}` | another name for `{first[id(options)]}` | as "
                        f"`{first[id(options)]}` |")
            continue
        first[id(options)] = name
        set_ = "; ".join(f"`{k}={show(v)}`" for k, v in options.items()) or "none"
        rows.append(f"| `{name}` | {comments.get(name, '')} | {set_} |")
    defaults = "; ".join(f"`{k}={show(v)}`" for k, v in book.items() if show(v) != "")
    return "\n".join([*rows, "", f"The book's values, which every recipe starts from: {defaults}."])


def models_reference() -> str:
    from lenet.models import config
    from lenet.models.network import build_model

    comments = registry_comments(ROOT / "src/lenet/models/config.py", "MODELS")
    rows = ["| model | what it is | parameters | configuration |", "|---|---|---:|---|"]
    for name, model in config.MODELS.items():
        parameters = sum(p.numel() for p in build_model(model).parameters())
        settings = ", ".join(f"{k}={show(v)}" for k, v in dataclasses.asdict(model).items())
        rows.append(f"| `{name}` | {comments.get(name, '')} | {parameters:,} | {settings} |")
    return "\n".join(rows)


# --- the HTTP API ----------------------------------------------------------------------------

def openapi_schema(secured: bool = False) -> dict[str, Any]:
    """lenet serve's schema, from its app (no model loaded: the schema needs none)."""
    from lenet.serve.app import create_app
    from lenet.serve.limits import Limits
    from lenet.serve.metrics import Metrics
    from lenet.serve.service import Options, Service

    service = Service(Options("RUN"), Limits(), Metrics())
    try:
        return create_app(service, secured=secured).openapi()
    finally:
        service.close()


def schema_text(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        text = " \\| ".join(f"`{v}`" for v in schema["enum"])
    else:
        text = schema.get("type", "")
    bounds = [f"{word} {schema[key]}" for key, word in (("minimum", ">="), ("maximum", "<="))
              if key in schema]
    if bounds:
        text += f" ({', '.join(bounds)})"
    if "default" in schema:
        text += f"; default `{json.dumps(schema['default'])}`"
    return text


def http_reference() -> str:
    from lenet.serve.schema import ERROR, ERROR_SCHEMA

    schema = openapi_schema()
    secured = openapi_schema(secured=True)
    parts = [f"lenet serve {schema['info']['version']}: {schema['info']['description']}", "",
             "Generated from the server's OpenAPI schema when this site was built; the "
             "schema itself: [openapi.json](openapi.json) (a running server serves it at "
             "`/openapi.json`, and Swagger UI at `/docs`). With `--token`, every `/v1/*` "
             "operation also answers **401** and needs `Authorization: Bearer TOKEN` "
             f"(security scheme `{next(iter(secured['components']['securitySchemes']))}`)."
             " Every answer other than 200 has the error body `{\"error\": ..., "
             "\"detail\": ...}`; a method a route does not take is a 405 with `Allow`.", "",
             "The error body:", "", "| field | meaning |", "|---|---|",
             *(f"| `{k}` | {v['description']} |" for k, v in ERROR_SCHEMA["properties"].items())]
    for path, item in schema["paths"].items():
        for method, op in item.items():
            parts += ["", f"## `{method.upper()} {path}`", "", f"**{op.get('summary', '')}**."]
            if op.get("description"):
                parts += ["", " ".join(op["description"].split())]
            if op.get("parameters"):
                parts += ["", "| query parameter | values | meaning |", "|---|---|---|"]
                parts += [f"| `{p['name']}` | {schema_text(p['schema'])} | "
                          f"{p.get('description', '')} |" for p in op["parameters"]]
            body = op.get("requestBody")
            if body:
                types = ", ".join(f"`{t}`" for t in body["content"])
                parts += ["", f"Body ({types}): {body.get('description', '')}."]
            parts += ["", "| status | when | body |", "|---|---|---|"]
            for status, answer in op["responses"].items():
                kinds = ", ".join(f"`{t}`" + (" (the error body)" if c.get("schema") == ERROR
                                               else "")
                                  for t, c in answer.get("content", {}).items())
                parts.append(f"| {status} | {answer['description']} | {kinds} |")
    return "\n".join(parts)


GENERATORS = {"cli": cli_reference, "recipes": recipes_reference, "models": models_reference,
              "http-api": http_reference}


def on_page_markdown(markdown: str, **_: Any) -> str:
    return MARKER.sub(lambda m: GENERATORS[m.group(1)](), markdown)


def on_files(files: Any, config: Any) -> Any:
    """reference/openapi.json: the schema as a file of the site (the HTTP API page links it)."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, "reference/openapi.json",
                                content=json.dumps(openapi_schema(), indent=2) + "\n"))
    return files
