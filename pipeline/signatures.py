"""Signatures: the markers AI coding tools leave in a pull request, matched against the catalogue.

The markers themselves are data (``pipeline/catalogue.toml``, loaded by ``pipeline.catalogue``);
this module holds the rules that apply them, written so that they generalise:

- trailers are read in every commit of the PR and in the PR body (squash merges), with keys
  compared case-insensitively as git does (``co-authored-by:`` is ``Co-Authored-By:``);
- an e-mail counts when it is a tool's own address, a no-reply address on a vendor's domain, or
  GitHub's noreply address of a known AI app's bot account (``<id>+<app>[bot]@users.noreply...``);
- a trailer that names the tool with an address on its vendor's domain ("Windsurf
  <windsurf@codeium.com>") counts, unless the name is also a first name (an employee "Claude");
- ``Assisted-by:`` (the Linux kernel's trailer for coding assistants) names the tool in its value;
- "Generated with / by <tool>" footers count at the start of a line, for every catalogue tool.

Guards, one per trap family: people named after tools (e-mails and bot ids are matched, never
first names; a branch prefix that is the author's own first name does not count; "Claude
Monet" in a credit line is a person), tool names as words (whole generated phrases only, and
word-like names such as "warp" or "cursor" only capitalised in a footer), AI SDK dependency
bumps (text in a dependency bot's PR is upstream's release notes, not the bot's own work), "No
AI was used" disclosures (they outweigh a branch name), and quoted markers (code spans, fenced
or indented blocks and ``>`` quotes are ignored; trailers only count at the start of a line).

A review bot's summary or review is review evidence (``kind="review"``), never authorship.
``detect`` is a pure function over plain data (``PRText``) so it is fast and table-testable.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from pipeline import disclosures
from pipeline.catalogue import CATALOGUE, Marker

CATALOGUE_VERSION = CATALOGUE.version
KNOWN_TOOLS: tuple[str, ...] = CATALOGUE.tool_names
OTHER_AI = "Other"

CLAUDE_CODE = "Claude Code"
COPILOT = "Copilot"
CURSOR = "Cursor"
DEVIN = "Devin"
CODEX = "Codex"
AIDER = "Aider"
JULES = "Jules"
AMP = "Amp"
GEMINI = "Gemini"
CODERABBIT = "CodeRabbit"

EVIDENCE_MAX_CHARS = 160
AUTHORING = "authoring"
REVIEW = "review"


@dataclass(frozen=True)
class CommitText:
    message: str = ""
    author_name: str = ""
    author_email: str = ""
    author_login: str = ""
    # (name, email) pairs from Co-authored-by trailers, as parsed by the sync.
    co_authors: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ReviewText:
    reviewer_login: str = ""
    reviewer_is_bot: bool = False


@dataclass(frozen=True)
class PRText:
    """What the catalogue (and the LLM prompt) reads of a pull request."""

    title: str = ""
    body: str = ""
    author_login: str = ""
    author_is_bot: bool = False
    head_branch: str = ""
    commits: tuple[CommitText, ...] = ()
    reviews: tuple[ReviewText, ...] = ()


@dataclass(frozen=True)
class Hit:
    tool: str
    marker: str
    evidence: str
    # "authoring": the tool wrote (part of) the change; "review": an AI reviewed it. Only
    # authoring hits make a PR AI-assisted; review hits are kept as evidence and tools.
    kind: str = AUTHORING

    def as_json(self) -> dict[str, str]:
        return {
            "tool": self.tool,
            "marker": self.marker,
            "evidence": self.evidence,
            "kind": self.kind,
        }


def _hit(marker: Marker, where: str, evidence: str) -> Hit:
    label = f"{marker.label} in {where}" if where else marker.label
    return Hit(marker.tool, label, evidence, REVIEW if marker.is_review else AUTHORING)


# --- Text preparation ----------------------------------------------------------------------

# Code that *shows* a marker (a PR documenting how to detect Devin, a test fixture quoting a
# trailer) is not a PR made by the tool: fenced blocks, inline code, indented blocks, quotes.
CODE_SPANS = re.compile(r"```.*?(```|\Z)|~~~.*?(~~~|\Z)|`[^`\n]*`", re.DOTALL)
BLOCKQUOTES = re.compile(r"<blockquote>.*?(</blockquote>|\Z)", re.DOTALL | re.IGNORECASE)
QUOTED_LINES = re.compile(r"^(?:[ \t]*>| {4}|\t).*$", re.MULTILINE)
# An explicit, checked "no AI" disclosure in the PR body. It outweighs a branch name, the one
# marker a person may choose by chance, but not what a tool wrote itself.
NO_AI_DISCLOSURE = re.compile(
    r"^(?![ \t]*[-*][ \t]*\[ \]).*\b(no ai (tools? )?(was|were) used|written without (any )?ai"
    r"|not ai[- ]generated|no ai[- ]generated (code|content))\b",
    re.IGNORECASE | re.MULTILINE,
)
TRAILER_LINE = re.compile(
    r"^(?P<key>[A-Za-z][A-Za-z0-9-]{1,40})[ \t]*:[ \t]*(?P<value>\S.*)$", re.M
)
NAME_EMAIL = re.compile(r"^(?P<name>[^<]*?)\s*<(?P<email>[^>\s]+)>")
GITHUB_NOREPLY = re.compile(
    r"^(?:\d+\+)?(?P<login>[a-z0-9][a-z0-9-]*(?:\[bot\])?)@users\.noreply\.github\.com$"
)
# Accounts that open dependency bumps: their text quotes upstream release notes and commits.
DEPENDENCY_BOTS = frozenset(
    {
        "dependabot",
        "dependabot-preview",
        "renovate",
        "renovate-bot",
        "snyk-bot",
        "depfu",
        "pyup-bot",
    }
)
ASSISTED_BY_PLACEHOLDER = re.compile(r"agent_name|model_version|<tool>|<agent>", re.IGNORECASE)
MODEL_WORD = re.compile(
    r"\b(claude|sonnet|opus|haiku|gpt-?\d|o[134](-mini)?|codex|gemini|llama|qwen|deepseek|grok"
    r"|mistral|kimi|glm)\b",
    re.IGNORECASE,
)


def visible(text: str) -> str:
    """``text`` without code, quotes and indented blocks: what its author wrote as prose."""
    return QUOTED_LINES.sub(" ", BLOCKQUOTES.sub(" ", CODE_SPANS.sub(" ", text or "")))


def excerpt(text: str, start: int, end: int) -> str:
    """The line around a match, trimmed to a readable length."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    line = text[line_start : line_end if line_end != -1 else len(text)].strip()
    if len(line) <= EVIDENCE_MAX_CHARS:
        return line
    offset = max(0, start - line_start - 40)
    return "…" + line[offset : offset + EVIDENCE_MAX_CHARS - 2].strip() + "…"


TOOL_OF_ALIAS: dict[str, str] = {}
for _tool in CATALOGUE.tools:
    for _alias in _tool.aliases:
        TOOL_OF_ALIAS.setdefault(_alias, _tool.name)
_ALIAS_ALTERNATION = "|".join(re.escape(a) for a in sorted(TOOL_OF_ALIAS, key=len, reverse=True))
ALIASES = re.compile(rf"(?<![\w.-])(?:{_ALIAS_ALTERNATION})(?![\w-])", re.IGNORECASE)
# "🤖 Generated with [Claude Code](...)", "<sub>Generated by Copilot</sub>": at a line's start.
GENERATED_FOOTER = re.compile(
    r"^[ \t]*(?:<su[bp]>[ \t]*)?[^\w\n]{0,6}(?:generated|created|written|made)[ \t]+"
    rf"(?:with|by|using)[ \t]+\[?(?P<tool>{_ALIAS_ALTERNATION})(?![\w-])",
    re.IGNORECASE | re.MULTILINE,
)


# Tool names that are also words ("made with warp speed", "generated by a cursor sweep") count
# in a footer only written as the tool writes its name, capitalised.
FOOTER_WORDS = frozenset({"cursor", "lovable", "warp", "amp", "crush", "goose", "sweep", "droid"})


def _footer_names_the_tool(text: str, match: re.Match[str]) -> bool:
    name = match.group("tool")
    if name.lower() in FOOTER_WORDS and name.islower():
        return False
    return not disclosures.followed_by_surname(text, match.end("tool"))


def _tool_named(text: str) -> str | None:
    match = ALIASES.search(text)
    return TOOL_OF_ALIAS[match.group(0).lower()] if match else None


# --- Identities ------------------------------------------------------------------------------


def _bot_login(login: str, is_bot: bool) -> str | None:
    """The bot's id without "[bot]", or None when the account is not known to be a bot."""
    login = login.strip().lower()
    if login.endswith("[bot]"):
        return login[: -len("[bot]")]
    return login if is_bot else None


def _bot_marker(login: str, *, reviewing: bool = False) -> Marker | None:
    if reviewing:
        return CATALOGUE.review_bots.get(login) or CATALOGUE.author_bots.get(login)
    return CATALOGUE.author_bots.get(login) or CATALOGUE.review_bots.get(login)


def email_marker(email: str) -> Marker | None:
    """The catalogue marker of an e-mail address: a tool's own, a vendor's no-reply address, or
    GitHub's noreply address of a known AI bot account."""
    email = email.strip().lower()
    if not email or "@" not in email:
        return None
    if email in CATALOGUE.emails:
        return CATALOGUE.emails[email]
    local, _, domain = email.partition("@")
    if domain in CATALOGUE.vendor_domains and local in CATALOGUE.noreply_local_parts:
        tool = CATALOGUE.vendor_domains[domain]
        return Marker(
            tool, "trailer", "authorship", "email", email, "vendor no-reply e-mail", "rules"
        )
    noreply = GITHUB_NOREPLY.match(email)
    if noreply:
        login = noreply.group("login")
        if login.endswith("[bot]"):
            # A review bot's committed suggestion is still the review bot's: review evidence.
            return CATALOGUE.author_bots.get(login[:-5]) or CATALOGUE.review_bots.get(login[:-5])
        marker = CATALOGUE.author_bots.get(login)
        if marker is not None and marker.plain_noreply:  # "+Copilot@", never "+claude@" (a person)
            return marker
    return None


# Tool names that are also people's first names: never enough with an address on a vendor domain.
FIRST_NAMES = frozenset({"claude", "devin", "jules", "amp", "kiro", "junie"})
# "Windsurf", "Gemini CLI", "aider (gpt-4o)", "Cline Agent": a trailer name that is the tool's.
_NAME_SUFFIX = r"(?:\s+(?:agent|ai|cli|assistant|bot|code assist))?(?:\s*\([^)]*\))?"


def named_vendor_marker(name: str, email: str) -> Marker | None:
    """A trailer naming a tool with an address on that tool's vendor domain."""
    domain = email.strip().lower().rpartition("@")[2]
    tool = CATALOGUE.named_domains.get(domain)
    if tool is None:
        return None
    aliases = [
        a
        for t in CATALOGUE.tools
        if t.name == tool
        for a in (*t.aliases, t.name.lower())
        if a not in FIRST_NAMES
    ]
    if not any(re.fullmatch(re.escape(a) + _NAME_SUFFIX, name.strip(), re.I) for a in aliases):
        return None
    return Marker(tool, "trailer", "authorship", "email", email, "co-author trailer", "rules")


# --- Matching --------------------------------------------------------------------------------


def _text_hits(text: str, where: str) -> Iterable[Hit]:
    shown = visible(text)
    # A review bot's summary is often a quote block (Ellipsis): review markers read quotes too,
    # as they can never make a PR AI-authored.
    unfenced = CODE_SPANS.sub(" ", text or "")
    for marker, pattern in CATALOGUE.texts:
        searched = unfenced if marker.is_review else shown
        match = pattern.search(searched)
        if match:
            yield _hit(marker, where, excerpt(searched, match.start(), match.end()))
    match = GENERATED_FOOTER.search(shown)
    if match and _footer_names_the_tool(shown, match):
        tool = TOOL_OF_ALIAS[match.group("tool").lower()]
        evidence = excerpt(shown, match.start(), match.end())
        yield Hit(tool, f"generated-with footer in {where}", evidence)
    yield from _trailer_hits(shown, where)


def _trailer_hits(shown: str, where: str) -> Iterable[Hit]:
    """Trailers at the start of a line, any key case (git compares keys case-insensitively)."""
    for match in TRAILER_LINE.finditer(shown):
        key, value = match.group("key").lower(), match.group("value").strip()
        evidence = excerpt(shown, match.start(), match.end())
        if key in ("co-authored-by", "signed-off-by", "generated-by"):
            who = NAME_EMAIL.match(value)
            marker = email_marker(who.group("email")) if who else None
            if who and marker is None:
                marker = named_vendor_marker(who.group("name"), who.group("email"))
            if marker is not None:
                label = "co-author trailer" if key == "co-authored-by" else f"{key} trailer"
                yield Hit(marker.tool, label, evidence, REVIEW if marker.is_review else AUTHORING)
        elif key == "assisted-by":
            tool = _assisted_by_tool(value)
            if tool:
                yield Hit(tool, "Assisted-by trailer", evidence)
        for marker, expected in CATALOGUE.trailers.get(key, ()):
            if expected is None or expected.search(value):
                yield _hit(marker, where, evidence)


def _assisted_by_tool(value: str) -> str | None:
    """The tool an ``Assisted-by: AGENT:MODEL [TOOLS]`` value names, "Other" for an unknown
    agent with a model, None for a template placeholder or a person."""
    if ASSISTED_BY_PLACEHOLDER.search(value):
        return None
    who = NAME_EMAIL.match(value)
    if who:
        marker = email_marker(who.group("email"))
        if marker is not None:
            return marker.tool
    agent = re.split(r"[:<(]", value, maxsplit=1)[0]
    tool = _tool_named(agent) or _tool_named(value)
    if tool:
        return tool
    # An agent we do not list is still AI when the value names a model ("Zed:claude-sonnet-4");
    # "Assisted-by: Jane Doe" (a person) is not.
    return OTHER_AI if MODEL_WORD.search(value) else None


def _commit_hits(commit: CommitText, *, read_text: bool) -> Iterable[Hit]:
    marker = email_marker(commit.author_email) or named_vendor_marker(
        commit.author_name, commit.author_email
    )
    if marker is not None:
        evidence = f"{commit.author_name} <{commit.author_email}>"
        yield Hit(marker.tool, "commit author e-mail", evidence)
    bot = _bot_login(commit.author_login, is_bot=False)
    # GitHub has no user for an app's commits: the bot is then only in the author's name.
    bot = bot or _bot_login(commit.author_name, is_bot=False)
    marker = _bot_marker(bot) if bot else None
    if marker is not None:
        yield Hit(marker.tool, "commit author bot", commit.author_login or commit.author_name)
    for marker, pattern in CATALOGUE.author_suffixes:
        if pattern.search(commit.author_name):
            yield _hit(marker, "", commit.author_name)
    for marker, pattern in CATALOGUE.message_prefixes:
        if pattern.match(commit.message):
            yield _hit(marker, "", excerpt(commit.message, 0, 6))
    message = commit.message.lower()
    for name, email in commit.co_authors:
        # A trailer that is in the stored message is judged there (a quoted one does not count).
        known = email.lower() in message
        marker = None if known else email_marker(email) or named_vendor_marker(name, email)
        if marker is not None:
            kind = REVIEW if marker.is_review else AUTHORING
            yield Hit(marker.tool, "co-author trailer", f"Co-authored-by: {name} <{email}>", kind)
    if read_text:
        yield from _text_hits(commit.message, "commit message")


def detect(pr: PRText) -> list[Hit]:
    """Every catalogue marker found in ``pr``, one hit per (tool, marker), first seen first."""
    found: list[Hit] = []
    seen: set[tuple[str, str]] = set()

    def add(hits: Iterable[Hit]) -> None:
        for hit in hits:
            if (hit.tool, hit.marker) not in seen:
                seen.add((hit.tool, hit.marker))
                found.append(hit)

    bot = _bot_login(pr.author_login, pr.author_is_bot)
    marker = _bot_marker(bot) if bot else None
    if marker is not None:  # a bot that opens the PR wrote it, even a review bot's own PR
        add([Hit(marker.tool, "PR author bot", pr.author_login)])
    # A dependency bump's body and commits quote upstream's release notes and commits.
    read_text = bot not in DEPENDENCY_BOTS
    branch = pr.head_branch.strip().lower()
    disclaimed = bool(NO_AI_DISCLOSURE.search(visible(pr.body))) or disclosures.denies_ai(pr.body)
    own_names = _person_names(pr)
    for prefix in CATALOGUE.branch_prefixes:
        # "devin/checkout-fix" by Devin Okafor is the person's own branch convention.
        if (
            branch.startswith(prefix.pattern)
            and not disclaimed
            and prefix.pattern[:-1] not in own_names
        ):
            add([Hit(prefix.tool, f"branch prefix {prefix.pattern}", pr.head_branch)])
    if read_text:
        add(_text_hits(pr.title, "PR title"))
        add(_text_hits(pr.body, "PR body"))
    for commit in pr.commits:
        add(_commit_hits(commit, read_text=read_text))
    for review in pr.reviews:
        bot = _bot_login(review.reviewer_login, review.reviewer_is_bot)
        marker = _bot_marker(bot, reviewing=True) if bot else None
        if marker is not None:
            add([Hit(marker.tool, "reviewer bot", f"reviewed by {review.reviewer_login}", REVIEW)])
    if read_text and not settles(found):
        add(disclosures.find(pr))
    return found


def _person_names(pr: PRText) -> set[str]:
    """First words of the human author's login and of the commit authors' names, lower case."""
    names: set[str] = set()
    if pr.author_login and not _bot_login(pr.author_login, pr.author_is_bot):
        names.add(re.split(r"[-_.]", pr.author_login.strip().lower())[0])
    for commit in pr.commits:
        words = commit.author_name.strip().lower().split()
        by_tool = commit.author_login.lower().endswith("[bot]") or email_marker(commit.author_email)
        if words and not by_tool:
            names.add(words[0])
    return names


def settles(hits: Iterable[Hit]) -> bool:
    """True when the hits prove AI authorship (an AI review alone does not)."""
    return any(hit.kind == AUTHORING for hit in hits)


def tools_of(hits: Iterable[Hit]) -> list[str]:
    """The distinct tools of ``hits``, in catalogue order ("Other" last)."""
    named = {hit.tool for hit in hits}
    return [tool for tool in (*KNOWN_TOOLS, OTHER_AI) if tool in named]


def needs_llm(pr: PRText) -> bool:
    """Unsettled text that talks about AI (a tool name, "AI", "LLM") without saying AI was not
    used: ambiguous, so the LLM should read it first."""
    return disclosures.mentions_ai(pr) and not disclosures.denies_ai(pr.body)


# --- Adapter from the models -----------------------------------------------------------------


def pr_text_from_model(pr) -> PRText:
    """A ``PRText`` from a ``pipeline.models.PullRequest``.

    Prefetch ``commits`` and ``reviews`` when adapting many PRs, or this costs two queries each.
    """
    return PRText(
        title=pr.title,
        body=pr.body,
        author_login=pr.author_login,
        author_is_bot=pr.author_is_bot,
        head_branch=pr.head_branch,
        commits=tuple(
            CommitText(
                message=c.message,
                author_name=c.author_name,
                author_email=c.author_email,
                author_login=c.author_login,
                co_authors=tuple(_co_author_pairs(c.co_authors)),
            )
            for c in pr.commits.all()
        ),
        reviews=tuple(
            ReviewText(reviewer_login=r.reviewer_login, reviewer_is_bot=r.reviewer_is_bot)
            for r in pr.reviews.all()
        ),
    )


def _co_author_pairs(raw: object) -> Iterable[tuple[str, str]]:
    """Tolerate what the JSON column may hold: dicts ({"name", "email"}) or pairs."""
    if not isinstance(raw, list):
        return
    for item in raw:
        if isinstance(item, dict):
            yield str(item.get("name") or ""), str(item.get("email") or "")
        elif isinstance(item, list | tuple) and len(item) == 2:
            yield str(item[0] or ""), str(item[1] or "")
