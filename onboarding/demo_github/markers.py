"""How each kind of demo PR looks: the AI tools' real fingerprints, and the traps.

The markers follow what the tools actually write (see "Data facts worth knowing" in the design
notes): co-author trailers, PR-body footers, bot authors and branch prefixes. The trap kinds are
human PRs that mention the same words without any AI involvement.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from onboarding.demo_github.dataset import Account

# Share of the PRs per kind; whatever is left is ordinary human work.
KIND_SHARES: dict[str, float] = {
    "claude_code": 0.12,
    "cursor": 0.07,
    "copilot_agent": 0.04,
    "codex": 0.035,
    "devin": 0.025,
    "aider": 0.02,
    "jules": 0.015,
    "amp": 0.015,
    "dependabot": 0.04,
    "trap_claude_person": 0.02,
    "trap_devin_person": 0.015,
    "trap_cursor_word": 0.02,
    "trap_no_ai_disclosure": 0.02,
}
# Kinds with several looks, rotated by occurrence; a dataset holds at least this many of each.
KIND_VARIANTS: dict[str, int] = {
    "claude_code": 3,
    "cursor": 3,
    "aider": 3,
    "trap_no_ai_disclosure": 2,
}
# The AI tool each kind really is (ground truth for tests); kinds not listed are not AI.
AI_TOOL_OF_KIND: dict[str, str] = {
    "claude_code": "claude_code",
    "cursor": "cursor",
    "copilot_agent": "copilot",
    "codex": "codex",
    "devin": "devin",
    "aider": "aider",
    "jules": "jules",
    "amp": "amp",
}
CLAUDE_FOOTER = "🤖 Generated with [Claude Code](https://claude.com/claude-code)"
CLAUDE_COAUTHORS = [
    "Co-Authored-By: Claude <noreply@anthropic.com>",
    "Co-Authored-By: Claude Opus 4.5 <noreply@anthropic.com>",
    "Co-Authored-By: Claude Sonnet 4.5 <noreply@anthropic.com>",
]
COPILOT_TIPS = (
    "<!-- START COPILOT CODING AGENT TIPS -->\n---\n\n"
    "💡 You can make Copilot smarter by setting up custom instructions, customizing its "
    "development environment and configuring Model Context Protocol (MCP) servers. Learn more "
    "[Copilot coding agent tips](https://gh.io/copilot-coding-agent-tips) in the docs."
)
NO_AI_DISCLOSURES = [
    "AI disclosure: No AI was used to write this change.",
    "- [x] No AI was used in this PR (no Copilot, Claude Code or Cursor).",
]
AIDER_MODELS = ["anthropic/claude-sonnet-4-20250514", "gpt-4.1", "deepseek/deepseek-chat"]


@dataclass
class Style:
    """The parts of a PR a kind decides; the generator fills in the rest."""

    author: Account
    branch: str
    body_footer: str = ""
    title: str | None = None
    # Identity and message decorations of the commits the tool wrote.
    tool_commit_name: str | None = None
    tool_commit_email: str | None = None
    tool_commit_login: str | None = None
    commit_prefix: str = ""
    trailers: list[str] = field(default_factory=list)
    tool_commit_share: float = 0.0
    labels: list[str] = field(default_factory=list)
    first_commit_message: str | None = None


def _hex(rng: random.Random, length: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(length))


def _noreply(person: Account) -> str:
    return f"{person.database_id}+{person.login}@users.noreply.github.com"


def build_style(
    kind: str,
    rng: random.Random,
    *,
    human: Account,
    bots: dict[str, Account],
    people: dict[str, Account],
    slug: str,
    created_ts: int,
    occurrence: int = 0,
) -> Style:
    """The style of one PR of ``kind``; ``human`` is the person who asked for or wrote it.

    ``occurrence`` (the how-many-th PR of this kind) rotates a kind's variants, so even a small
    dataset holds every variant (see ``KIND_VARIANTS``).
    """
    plain_branch = f"{rng.choice(['feature', 'fix', 'chore', human.login.split('-')[0]])}/{slug}"
    if kind == "claude_code":
        style = Style(author=human, branch=plain_branch, tool_commit_share=0.8)
        style.trailers = [CLAUDE_FOOTER + "\n", CLAUDE_COAUTHORS[occurrence % 3]]
        if rng.random() < 0.75 or occurrence == 0:  # the first one always: any anchor date
            style.body_footer = CLAUDE_FOOTER
        if occurrence % 3 == 1:
            style.branch = f"claude/{slug}-{_hex(rng, 5)}"
        return style
    if kind == "cursor":
        style = Style(author=human, branch=plain_branch, tool_commit_share=0.7)
        if occurrence % 3 == 0:
            # Background agent: commits by the agent, co-authored by the person.
            style.branch = f"cursor/{slug}-{_hex(rng, 4)}"
            style.tool_commit_name = "Cursor Agent"
            style.tool_commit_email = "cursoragent@cursor.com"
            style.trailers = [f"Co-authored-by: {human.name} <{_noreply(human)}>"]
        elif occurrence % 3 == 1:
            style.trailers = ["Co-authored-by: Cursor Agent <cursoragent@cursor.com>"]
        else:
            style.trailers = ["Made-with: Cursor"]
        return style
    if kind == "copilot_agent":
        bot = bots["copilot-swe-agent"]
        style = Style(author=bot, branch=f"copilot/fix-{slug}", tool_commit_share=1.0)
        style.tool_commit_name, style.tool_commit_email = bot.name, bot.email
        style.trailers = [f"Co-authored-by: {human.login} <{_noreply(human)}>"]
        style.first_commit_message = "Initial plan"
        style.body_footer = f"Fixes #{rng.randint(40, 900)}\n\n{COPILOT_TIPS}"
        return style
    if kind == "codex":
        style = Style(author=human, branch=plain_branch, tool_commit_share=0.0)
        if occurrence % 2 == 0:
            style.branch = f"codex/{slug}"
        style.body_footer = f"------\nhttps://chatgpt.com/codex/tasks/task_e_{_hex(rng, 32)}"
        return style
    if kind == "devin":
        bot = bots["devin-ai-integration"]
        style = Style(author=bot, branch=f"devin/{created_ts}-{slug}", tool_commit_share=1.0)
        style.tool_commit_name, style.tool_commit_email = bot.name, bot.email
        style.trailers = [f"Co-Authored-By: {human.name} <{human.email}>"]
        style.body_footer = (
            f"Link to Devin run: https://app.devin.ai/sessions/{_hex(rng, 32)}\n"
            f"Requested by: {human.name} (@{human.login})"
        )
        return style
    if kind == "aider":
        style = Style(author=human, branch=plain_branch, tool_commit_share=0.8)
        variant = occurrence % 3
        if variant == 0:
            style.commit_prefix = "aider: "
        elif variant == 1:
            style.tool_commit_name = f"{human.name} (aider)"
            style.tool_commit_email = human.email
            style.tool_commit_login = human.login
        else:
            model = rng.choice(AIDER_MODELS)
            style.trailers = [f"Co-authored-by: aider ({model}) <aider@aider.chat>"]
        return style
    if kind == "jules":
        bot = bots["google-labs-jules"]
        task = rng.randint(10**15, 10**16)
        style = Style(author=bot, branch=f"{slug}-{task % 100000}", tool_commit_share=1.0)
        style.tool_commit_name, style.tool_commit_email = bot.name, bot.email
        style.body_footer = (
            f"---\n*PR created automatically by Jules for task [{task}]"
            f"(https://jules.google.com/task/{task}) started by @{human.login}*"
        )
        return style
    if kind == "amp":
        style = Style(author=human, branch=plain_branch, tool_commit_share=0.8)
        thread = uuid.UUID(int=rng.getrandbits(128), version=4)
        style.trailers = [
            f"Amp-Thread-ID: https://ampcode.com/threads/T-{thread}",
            "Co-authored-by: Amp <amp@ampcode.com>",
        ]
        return style
    if kind == "dependabot":
        bot = bots["dependabot"]
        return Style(author=bot, branch="", tool_commit_share=1.0, labels=["dependencies"])
    if kind == "trap_claude_person":
        author = people["cmartin"]
        style = Style(author=author, branch=f"claude-martin/{slug}")
        style.body_footer = (
            "Claude here: I paired with Devin from the platform team on this one; "
            "ping me if the numbers look off."
        )
        return style
    if kind == "trap_devin_person":
        author = people["devin-okafor"]
        style = Style(author=author, branch=f"devin-okafor/{slug}")
        style.body_footer = (
            "Tested locally by Devin. Reviewed the plan with Claude Martin "
            f"(@{people['cmartin'].login})."
        )
        return style
    if kind == "trap_cursor_word":
        style = Style(author=human, branch=f"feature/cursor-pagination-{slug}")
        style.title = "Use cursor-based pagination for the audit log"
        style.body_footer = (
            "Offsets got slow past page 200, so the endpoint now takes an opaque cursor. "
            "Also fixes the text cursor jumping to the end of the search box. We should "
            "continue with the other list endpoints next."
        )
        return style
    if kind == "trap_no_ai_disclosure":
        style = Style(author=human, branch=plain_branch)
        # Rotated by occurrence, not drawn: the rng's stream depends on the anchor date (weekday
        # retries in the generator), and every dataset must hold both looks on any date.
        style.body_footer = NO_AI_DISCLOSURES[occurrence % len(NO_AI_DISCLOSURES)]
        return style
    return Style(author=human, branch=plain_branch)
