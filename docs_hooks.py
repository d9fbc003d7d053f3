"""Build-time pieces of the documentation site: the CLI reference and readable defaults.

- MkDocs hook (`hooks:` in mkdocs.yml): the CLI reference page is written from the
  command line's own parsers, the SDK coverage page from the integration modules
  (`fluxgate_async.integrations._coverage`), the HTTP API page and `openapi.json` from the
  collector's OpenAPI document, and the site shows the installed package's version.
- Griffe extension (`extensions:` of mkdocstrings): a parameter whose default is a named
  constant shows the constant's value (`timeout=5.0`, not `timeout=DEFAULT_TIMEOUT`), and an
  attribute set from a parameter (`self.host = host`) shows no value.
"""

from __future__ import annotations

from typing import Any

import griffe
from mkdocs.structure.files import File

from fluxgate_async import __version__
from fluxgate_async.cli._reference import cli_reference
from fluxgate_async.collector._http_reference import http_api_reference, openapi_json
from fluxgate_async.integrations._coverage import markdown as sdk_coverage

CLI_MARKER = "<!-- cli-reference -->"
COVERAGE_MARKER = "<!-- sdk-coverage -->"
HTTP_API_MARKER = "<!-- http-api-reference -->"
OPENAPI_FILE = "reference/openapi.json"


def on_config(config: Any) -> Any:
    """Show the package's version in the header (beside the repository link) and the footer."""
    config["repo_name"] = f"fluxgate-async {__version__}"
    config["copyright"] = f"fluxgate-async {__version__} · MIT License"
    return config


def on_files(files: Any, config: Any) -> Any:
    """Add the collector's OpenAPI document, which the HTTP API page links to."""
    files.append(File.generated(config, OPENAPI_FILE, content=openapi_json()))
    return files


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Replace the CLI, SDK coverage and HTTP API markers with the pages' generated parts."""
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    if COVERAGE_MARKER in markdown:
        markdown = markdown.replace(COVERAGE_MARKER, sdk_coverage())
    if HTTP_API_MARKER in markdown:
        markdown = markdown.replace(HTTP_API_MARKER, http_api_reference())
    return markdown


class ValuesNotNames(griffe.Extension):
    """Defaults as values, and no `host = host` attributes, in the API reference."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Rewrite the loaded package once it is complete, so every constant can be resolved."""
        self._visit(pkg, pkg)

    def _visit(self, obj: griffe.Object, pkg: griffe.Module) -> None:
        for member in obj.members.values():
            if member.is_alias:
                continue
            if isinstance(member, griffe.Function):
                self._function(member, pkg)
            elif isinstance(member, griffe.Attribute):
                self._attribute(member)
            elif isinstance(member, griffe.Class | griffe.Module):
                self._visit(member, pkg)

    def _function(self, func: griffe.Function, pkg: griffe.Module) -> None:
        for parameter in func.parameters:
            default = parameter.default
            if not isinstance(default, griffe.ExprName):
                continue
            try:
                target = pkg.modules_collection.get_member(default.canonical_path)
            except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
                continue
            if isinstance(target, griffe.Alias):
                target = target.final_target
            if isinstance(target, griffe.Attribute) and target.value is not None:
                parameter.default = str(target.value)

    def _attribute(self, attribute: griffe.Attribute) -> None:
        # `self.host = host`: the value is a parameter's name, which says nothing.
        if "instance-attribute" in attribute.labels and isinstance(
            attribute.value, griffe.ExprName
        ):
            attribute.value = None
