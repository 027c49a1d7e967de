"""The signature catalogue: markers that AI coding tools leave in a pull request.

A marker is something a tool writes itself (a co-author e-mail, a bot account, a generated
footer, a branch prefix), never something a person might write by chance. So the catalogue
matches e-mail addresses and bot ids, not first names ("Claude" and "Devin" are people too),
and whole generated phrases, not words ("cursor", "continue"). A PR body that only *talks*
about a tool ("No AI was used", "not written with Copilot") matches nothing.

``detect`` is a pure function over plain data (``PRText``) so it is fast and table-testable;
``pr_text_from_model`` adapts a synced ``PullRequest``. Bump ``CATALOGUE_VERSION`` whenever a
marker is added, removed or changed: every verdict records the version that produced it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

CATALOGUE_VERSION = "2026.11-1"

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

KNOWN_TOOLS: tuple[str, ...] = (
    CLAUDE_CODE,
    COPILOT,
    CURSOR,
    DEVIN,
    CODEX,
    AIDER,
    JULES,
    AMP,
    GEMINI,
    CODERABBIT,
)

EVIDENCE_MAX_CHARS = 160


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
    kind: str = "authoring"

    def as_json(self) -> dict[str, str]:
        return {
            "tool": self.tool,
            "marker": self.marker,
            "evidence": self.evidence,
            "kind": self.kind,
        }


AUTHORING = "authoring"
REVIEW = "review"


# --- The catalogue ---------------------------------------------------------------------------

# Exact e-mail addresses (lower case) that only a tool uses: commit authors and co-authors.
TOOL_EMAILS: dict[str, str] = {
    "noreply@anthropic.com": CLAUDE_CODE,
    "cursoragent@cursor.com": CURSOR,
    "aider@aider.chat": AIDER,
    "amp@ampcode.com": AMP,
}

# E-mail patterns: GitHub's noreply addresses of tool accounts ("<id>+Copilot@users...").
TOOL_EMAIL_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^\d+\+copilot@users\.noreply\.github\.com$"), COPILOT),
    (re.compile(r"^(\d+\+)?copilot-swe-agent\[bot\]@users\.noreply\.github\.com$"), COPILOT),
    (re.compile(r"^(\d+\+)?devin-ai-integration\[bot\]@users\.noreply\.github\.com$"), DEVIN),
    (re.compile(r"^(\d+\+)?google-labs-jules\[bot\]@users\.noreply\.github\.com$"), JULES),
    (re.compile(r"^(\d+\+)?chatgpt-codex-connector\[bot\]@users\.noreply\.github\.com$"), CODEX),
    (re.compile(r"^(\d+\+)?claude\[bot\]@users\.noreply\.github\.com$"), CLAUDE_CODE),
    (re.compile(r"^(\d+\+)?cursor\[bot\]@users\.noreply\.github\.com$"), CURSOR),
)

# Bot accounts that open PRs or author commits. GraphQL gives a Bot's login without the
# "[bot]" suffix that REST shows, so logins are compared without it, and only count when the
# account really is a bot: a person may own a login such as "claude" or "cursor".
AUTHOR_BOTS: dict[str, str] = {
    "copilot-swe-agent": COPILOT,
    "copilot": COPILOT,
    "devin-ai-integration": DEVIN,
    "google-labs-jules": JULES,
    "chatgpt-codex-connector": CODEX,
    "claude": CLAUDE_CODE,
    "cursor": CURSOR,
}

# Bot accounts that review PRs (AI code review).
REVIEWER_BOTS: dict[str, str] = {
    "copilot-pull-request-reviewer": COPILOT,
    "copilot": COPILOT,
    "coderabbitai": CODERABBIT,
    "gemini-code-assist": GEMINI,
    "chatgpt-codex-connector": CODEX,
    "devin-ai-integration": DEVIN,
    "claude": CLAUDE_CODE,
    "cursor": CURSOR,
}

# Phrases tools generate in PR bodies and commit messages. Each is the tool's own wording or
# link, never a bare product name.
TEXT_MARKERS: tuple[tuple[str, re.Pattern[str], str], ...] = (
    (
        "generated-with footer",
        re.compile(r"generated with \[claude code\]", re.IGNORECASE),
        CLAUDE_CODE,
    ),
    ("claude.ai/code session link", re.compile(r"https://claude\.ai/code/", re.I), CLAUDE_CODE),
    (
        "coding agent tips block",
        re.compile(r"<!--\s*start copilot coding agent tips\s*-->", re.IGNORECASE),
        COPILOT,
    ),
    ("Made-with trailer", re.compile(r"^\s*made-with:\s*cursor\s*$", re.I | re.M), CURSOR),
    (
        "Devin run link",
        re.compile(r"link to devin run:|https://app\.devin\.ai/sessions/", re.IGNORECASE),
        DEVIN,
    ),
    ("Codex task link", re.compile(r"chatgpt\.com/codex/tasks/", re.IGNORECASE), CODEX),
    ("Jules task link", re.compile(r"https://jules\.google\.com/task/", re.I), JULES),
    ("Amp thread link", re.compile(r"https://ampcode\.com/threads/", re.IGNORECASE), AMP),
    (
        "CodeRabbit summary",
        re.compile(
            r"summary by coderabbit|auto-generated comment: release notes by coderabbit", re.I
        ),
        CODERABBIT,
    ),
)

# Branches the agents create ("codex/fix-login", "devin/1718-add-cache").
BRANCH_PREFIXES: dict[str, str] = {
    "codex/": CODEX,
    "claude/": CLAUDE_CODE,
    "copilot/": COPILOT,
    "cursor/": CURSOR,
    "devin/": DEVIN,
}

# An explicit, checked "no AI" disclosure in the PR body. It outweighs a branch name, the one
# marker a person may choose by chance ("cursor/fix-blink" fixing a text cursor), but not what
# a tool wrote itself (a co-author e-mail, a bot account, a generated footer).
NO_AI_DISCLOSURE = re.compile(
    r"^(?![ \t]*[-*][ \t]*\[ \]).*\b(no ai (tools? )?(was|were) used|written without (any )?ai"
    r"|not ai[- ]generated|no ai[- ]generated (code|content))\b",
    re.IGNORECASE | re.MULTILINE,
)

# aider prefixes its commit messages with "aider: " and suffixes the author name "(aider)".
AIDER_MESSAGE_PREFIX = re.compile(r"^aider: ", re.IGNORECASE)
AIDER_AUTHOR_SUFFIX = re.compile(r"\(aider\)\s*$", re.IGNORECASE)

# Co-authored-by trailers in a commit message (git's trailer syntax).
CO_AUTHOR_TRAILER = re.compile(
    r"^\s*co-authored-by:\s*(?P<name>[^<\n]*?)\s*<(?P<email>[^>\n]+)>", re.IGNORECASE | re.M
)

# Code that *shows* a marker (a PR documenting how to detect Devin, a test fixture quoting a
# trailer) is not a PR made by the tool: fenced blocks and inline code are ignored.
CODE_SPANS = re.compile(r"```.*?(```|\Z)|~~~.*?(~~~|\Z)|`[^`\n]*`", re.DOTALL)


# --- Matching --------------------------------------------------------------------------------


def excerpt(text: str, start: int, end: int) -> str:
    """The line around a match, trimmed to a readable length."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    line = text[line_start : line_end if line_end != -1 else len(text)].strip()
    if len(line) <= EVIDENCE_MAX_CHARS:
        return line
    # Keep the match visible in a long line.
    offset = max(0, start - line_start - 40)
    return "…" + line[offset : offset + EVIDENCE_MAX_CHARS - 2].strip() + "…"


def _bot_login(login: str, is_bot: bool) -> str | None:
    """The bot's id without "[bot]", or None when the account is not known to be a bot."""
    login = login.strip().lower()
    if login.endswith("[bot]"):
        return login[: -len("[bot]")]
    return login if is_bot else None


def _email_tool(email: str) -> str | None:
    email = email.strip().lower()
    if not email:
        return None
    if email in TOOL_EMAILS:
        return TOOL_EMAILS[email]
    for pattern, tool in TOOL_EMAIL_PATTERNS:
        if pattern.match(email):
            return tool
    return None


def _text_hits(text: str, where: str) -> Iterable[Hit]:
    if not text:
        return
    visible = CODE_SPANS.sub(" ", text)
    for marker, pattern, tool in TEXT_MARKERS:
        match = pattern.search(visible)
        if match:
            yield Hit(tool, f"{marker} in {where}", excerpt(visible, match.start(), match.end()))


def _commit_hits(commit: CommitText) -> Iterable[Hit]:
    tool = _email_tool(commit.author_email)
    if tool:
        yield Hit(tool, "commit author e-mail", f"{commit.author_name} <{commit.author_email}>")
    bot = _bot_login(commit.author_login, is_bot=False)
    if bot and bot in AUTHOR_BOTS:
        yield Hit(AUTHOR_BOTS[bot], "commit author bot", commit.author_login)
    for name, email in commit.co_authors:
        tool = _email_tool(email)
        if tool:
            yield Hit(tool, "co-author trailer", f"Co-authored-by: {name} <{email}>")
    if AIDER_AUTHOR_SUFFIX.search(commit.author_name):
        yield Hit(AIDER, "(aider) author suffix", commit.author_name)
    if AIDER_MESSAGE_PREFIX.match(commit.message):
        yield Hit(AIDER, "aider: commit prefix", excerpt(commit.message, 0, 6))
    # Trailers the sync may not have parsed into co_authors still count when their e-mail does.
    for match in CO_AUTHOR_TRAILER.finditer(commit.message):
        tool = _email_tool(match.group("email"))
        if tool:
            yield Hit(tool, "co-author trailer", match.group(0).strip())
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
    if bot and bot in AUTHOR_BOTS:
        add([Hit(AUTHOR_BOTS[bot], "PR author bot", pr.author_login)])
    branch = pr.head_branch.strip().lower()
    disclaimed = bool(NO_AI_DISCLOSURE.search(CODE_SPANS.sub(" ", pr.body)))
    own_names = _person_names(pr)
    for prefix, tool in BRANCH_PREFIXES.items():
        # "devin/checkout-fix" by Devin Okafor is the person's own branch convention.
        if branch.startswith(prefix) and not disclaimed and prefix[:-1] not in own_names:
            add([Hit(tool, f"branch prefix {prefix}", pr.head_branch)])
    add(_text_hits(pr.title, "PR title"))
    add(_text_hits(pr.body, "PR body"))
    for commit in pr.commits:
        add(_commit_hits(commit))
    for review in pr.reviews:
        bot = _bot_login(review.reviewer_login, review.reviewer_is_bot)
        if bot and bot in REVIEWER_BOTS:
            evidence = f"reviewed by {review.reviewer_login}"
            add([Hit(REVIEWER_BOTS[bot], "reviewer bot", evidence, kind=REVIEW)])
    return found


def _person_names(pr: PRText) -> set[str]:
    """First words of the human author's login and of the commit authors' names, lower case."""
    names: set[str] = set()
    if pr.author_login and not _bot_login(pr.author_login, pr.author_is_bot):
        names.add(re.split(r"[-_.]", pr.author_login.strip().lower())[0])
    for commit in pr.commits:
        words = commit.author_name.strip().lower().split()
        by_tool = commit.author_login.lower().endswith("[bot]") or _email_tool(commit.author_email)
        if words and not by_tool:
            names.add(words[0])
    return names


def settles(hits: Iterable[Hit]) -> bool:
    """True when the hits prove AI authorship (an AI review alone does not)."""
    return any(hit.kind == AUTHORING for hit in hits)


def tools_of(hits: Iterable[Hit]) -> list[str]:
    """The distinct tools of ``hits``, in catalogue order."""
    named = {hit.tool for hit in hits}
    return [tool for tool in KNOWN_TOOLS if tool in named]


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
