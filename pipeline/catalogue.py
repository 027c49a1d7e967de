"""The AI-tool marker catalogue as data: ``pipeline/catalogue.toml`` read with ``tomllib``.

The TOML file is the single place where markers live, each with the tool, its kind (trailer,
commit author, PR author bot, body footer, branch prefix, review bot), whether it marks
authorship or only a review, the pattern and a source (where the tool itself writes it). This
module loads and checks it once, and indexes it for ``pipeline.signatures``. A malformed file
fails loudly at import: a silently empty catalogue would report every team as 0% AI.

``CATALOGUE.version`` is stored on every verdict; when it differs from what a team's verdicts
were scored with, the worker re-scores that team (see ``pipeline.rescore``).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

CATALOGUE_PATH = Path(__file__).with_name("catalogue.toml")

KINDS = (
    "trailer",
    "commit_author",
    "pr_author_bot",
    "body_footer",
    "branch_prefix",
    "review_bot",
)
ROLES = ("authorship", "review")
MATCHES = ("email", "bot", "text", "trailer", "author_suffix", "message_prefix", "branch_prefix")


class CatalogueError(ValueError):
    pass


@dataclass(frozen=True)
class Tool:
    name: str
    category: str
    aliases: tuple[str, ...]
    prose: tuple[str, ...]


@dataclass(frozen=True)
class Marker:
    tool: str
    kind: str
    role: str
    match: str
    pattern: str
    label: str
    source: str
    value: str = ""  # for trailers: a regex the trailer's value must match
    plain_noreply: bool = False  # a bot whose noreply address has no "[bot]" ("+Copilot@")

    @property
    def is_review(self) -> bool:
        return self.role == "review"


@dataclass
class Catalogue:
    version: str
    tools: tuple[Tool, ...]
    markers: tuple[Marker, ...]
    vendor_domains: dict[str, str]
    noreply_local_parts: tuple[str, ...]
    named_domains: dict[str, str] = field(default_factory=dict)
    emails: dict[str, Marker] = field(default_factory=dict)
    author_bots: dict[str, Marker] = field(default_factory=dict)
    review_bots: dict[str, Marker] = field(default_factory=dict)
    texts: list[tuple[Marker, re.Pattern[str]]] = field(default_factory=list)
    trailers: dict[str, list[tuple[Marker, re.Pattern[str] | None]]] = field(default_factory=dict)
    author_suffixes: list[tuple[Marker, re.Pattern[str]]] = field(default_factory=list)
    message_prefixes: list[tuple[Marker, re.Pattern[str]]] = field(default_factory=list)
    branch_prefixes: list[Marker] = field(default_factory=list)

    @property
    def tool_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tools)

    def tools_with_markers(self) -> list[str]:
        named = {m.tool for m in self.markers}
        return [t for t in self.tool_names if t in named]


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise CatalogueError(message)


def load(path: Path = CATALOGUE_PATH) -> Catalogue:
    with path.open("rb") as handle:
        data = tomllib.load(handle)
    version = str(data.get("version") or "")
    _check(bool(version) and len(version) <= 32, "the catalogue needs a version (<= 32 chars)")
    tools = tuple(
        Tool(
            name=t["name"],
            category=t.get("category", ""),
            aliases=tuple(a.lower() for a in t.get("aliases", [])),
            prose=tuple(a.lower() for a in t.get("prose", [])),
        )
        for t in data.get("tools", [])
    )
    names = [t.name for t in tools]
    _check(len(names) == len(set(names)), "tool names must be unique")
    rules = data.get("rules", {})
    domains = {k.lower(): v for k, v in rules.get("vendor_domains", {}).items()}
    named = {k.lower(): v for k, v in rules.get("named_domains", {}).items()}
    for tool in [*domains.values(), *named.values()]:
        _check(tool in names, f"a domain rule names an unknown tool: {tool}")
    catalogue = Catalogue(
        version=version,
        tools=tools,
        markers=(),
        vendor_domains=domains,
        noreply_local_parts=tuple(rules.get("noreply_local_parts", ["noreply"])),
        named_domains=named,
    )
    markers = []
    for raw in data.get("markers", []):
        marker = Marker(
            tool=raw["tool"],
            kind=raw["kind"],
            role=raw["role"],
            match=raw["match"],
            pattern=raw["pattern"],
            label=raw.get("label") or raw["kind"],
            source=raw.get("source", ""),
            value=raw.get("value", ""),
            plain_noreply=bool(raw.get("plain_noreply", False)),
        )
        where = f"marker {marker.tool}/{marker.pattern}"
        _check(marker.tool in names, f"{where}: unknown tool")
        _check(marker.kind in KINDS, f"{where}: unknown kind {marker.kind}")
        _check(marker.role in ROLES, f"{where}: unknown role {marker.role}")
        _check(marker.match in MATCHES, f"{where}: unknown match {marker.match}")
        _check(bool(marker.source.strip()), f"{where}: a marker needs a source")
        markers.append(marker)
        _index(catalogue, marker)
    catalogue.markers = tuple(markers)
    return catalogue


def _index(catalogue: Catalogue, marker: Marker) -> None:
    pattern = marker.pattern
    flags = re.IGNORECASE | re.MULTILINE
    if marker.match == "email":
        catalogue.emails[pattern.lower()] = marker
    elif marker.match == "bot":
        table = catalogue.review_bots if marker.kind == "review_bot" else catalogue.author_bots
        table.setdefault(pattern.lower(), marker)
    elif marker.match == "text":
        catalogue.texts.append((marker, re.compile(pattern, flags)))
    elif marker.match == "trailer":
        value = re.compile(marker.value, re.IGNORECASE) if marker.value else None
        catalogue.trailers.setdefault(pattern.lower(), []).append((marker, value))
    elif marker.match == "author_suffix":
        catalogue.author_suffixes.append((marker, re.compile(pattern, re.IGNORECASE)))
    elif marker.match == "message_prefix":
        catalogue.message_prefixes.append((marker, re.compile(pattern, re.IGNORECASE)))
    elif marker.match == "branch_prefix":
        catalogue.branch_prefixes.append(marker)


CATALOGUE = load()
