# ruff: noqa: E501  (the corpus strings are data, kept on one line each)
"""Builds ``detect_corpus.jsonl``: the labelled PR set behind ``bench/detect`` and its floor test.

Run ``.venv/bin/python tests/data/build_detect_corpus.py`` after editing; the output is committed.

Provenance. There is no internet access here, so the PRs are not scraped: each is composed
around a marker or a sentence *as written in public material* found with the research search
tool (the "corpus:<id>" references of ``pipeline/catalogue.toml``, i.e. public repositories'
commit messages, PR bodies, tool prompts and docs), with ordinary surrounding text. Every entry
says where its marker comes from. Traps are the forms named in issue 10 (people named after
tools, tool names as words, AI SDK dependency bumps, "no AI" disclosures, quoted markers).

Labels: ``ai`` is True when an AI tool wrote (part of) the change; ``review_only`` PRs were only
reviewed by a bot and are labelled ``ai: False``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).with_name("detect_corpus.jsonl")
rng = random.Random(20261201)

SUBJECTS = [
    "Fix pagination off-by-one in the PR list",
    "Add retry with backoff to the webhook sender",
    "Refactor settings loader into a module",
    "Handle empty repositories during sync",
    "Cache team lookups per request",
    "Validate e-mail domains on invite",
    "Speed up weekly metrics query",
    "Add CSV export of merged PRs",
    "Remove dead feature flag for old dashboard",
    "Fix timezone handling in cycle time",
    "Log the GitHub rate-limit reset",
    "Show repository names in the insight cards",
    "Guard against missing review timestamps",
    "Tidy imports and type hints in stages",
    "Make the invite token single use",
    "Paginate the members admin page",
]
BODIES = [
    "This fixes the issue reported in #{n}. Tested locally against the demo org.",
    "## What\n\n{subject}.\n\n## Why\n\nUsers hit this on large teams.\n\n## Testing\n\n- unit tests\n- manual check",
    "Closes #{n}.\n\nSmall change; see the diff.",
    "Follow-up to #{n}: the previous fix missed the archived repositories.",
    "",
]
PEOPLE = [
    ("Ada Lovelace", "ada@example.com", "ada-l"),
    ("Grace Hopper", "grace@hopper.dev", "ghopper"),
    ("Linus Pauling", "linus@pauling.org", "lpauling"),
    ("Mei Chen", "mei.chen@example.org", "meichen"),
    ("Tomás Ruiz", "tomas@ruiz.io", "truiz"),
    ("Priya Nair", "priya@nair.dev", "pnair"),
]

entries: list[dict] = []


def person():
    return rng.choice(PEOPLE)


def pr(
    *,
    title=None,
    body=None,
    author_login=None,
    author_is_bot=False,
    head_branch=None,
    commits=None,
    reviews=(),
):
    subject = title or rng.choice(SUBJECTS)
    name, email, login = person()
    n = rng.randint(10, 900)
    if body is None:
        body = rng.choice(BODIES).format(n=n, subject=subject)
    if commits is None:
        commits = [{"message": subject}]
    full = []
    for c in commits:
        full.append(
            {
                "message": c.get("message", subject),
                "author_name": c.get("author_name", name),
                "author_email": c.get("author_email", email),
                "author_login": c.get("author_login", login),
            }
        )
    return {
        "title": subject,
        "body": body,
        "author_login": login if author_login is None else author_login,
        "author_is_bot": author_is_bot,
        "head_branch": head_branch or f"{rng.choice(['fix', 'feature', 'chore'])}/{n}-change",
        "commits": full,
        "reviews": [{"reviewer_login": r, "reviewer_is_bot": r.endswith("[bot]")} for r in reviews],
    }


def add(family, ai, tools, provenance, data, review_only=False):
    entries.append(
        {
            "id": f"{family}-{len([e for e in entries if e['family'] == family]) + 1:03d}",
            "family": family,
            "ai": ai,
            "tools": tools,
            "review_only": review_only,
            "provenance": provenance,
            "pr": data,
        }
    )


def msg(subject, *trailers, body="Keeps behaviour; adds a test."):
    text = subject + ("\n\n" + body if body else "")
    return text + ("\n\n" + "\n".join(trailers) if trailers else "")


# --- Family: the ten tools the catalogue knew before issue 10 ------------------------------------
KNOWN = "known_tools"
for _i, co in enumerate(
    [
        "Co-Authored-By: Claude <noreply@anthropic.com>",
        "Co-Authored-By: Claude Opus 4.5 <noreply@anthropic.com>",
        "Co-Authored-By: Claude Sonnet 4.5 <noreply@anthropic.com>",
    ]
):
    s = rng.choice(SUBJECTS)
    add(
        KNOWN,
        True,
        ["Claude Code"],
        "Claude Code trailer, corpus:45235061419",
        pr(
            title=s,
            commits=[
                {
                    "message": msg(
                        s, "🤖 Generated with [Claude Code](https://claude.ai/code)", "", co
                    )
                }
            ],
        ),
    )
    add(
        KNOWN,
        True,
        ["Claude Code"],
        "Claude Code PR footer, corpus:53408623816",
        pr(
            body=f"## Summary\n- {s}\n\n## Test plan\n- [x] pytest\n\n🤖 Generated with [Claude Code](https://claude.com/claude-code)"
        ),
    )
add(
    KNOWN,
    True,
    ["Claude Code"],
    "claude-code-action branch naming, team notes",
    pr(head_branch="claude/issue-42-20250801-1200"),
)
add(
    KNOWN,
    True,
    ["Claude Code"],
    "Claude Code on the web session trailer, corpus:69742999457",
    pr(
        commits=[
            {
                "message": msg(
                    "Fix flaky test",
                    "Claude-Session: https://claude.ai/code/session_01TLDWmWxCC92V5sQDdf7AFw",
                )
            }
        ]
    ),
)
for login, bot in [("copilot-swe-agent[bot]", False), ("Copilot", True)]:
    add(
        KNOWN,
        True,
        ["Copilot"],
        "Copilot coding agent account, corpus:57488779423",
        pr(
            author_login=login,
            author_is_bot=bot,
            head_branch=f"copilot/fix-{rng.randint(1, 99)}",
            body="Fixes #12\n\n<!-- START COPILOT CODING AGENT TIPS -->\n---\n\n💡 You can make Copilot smarter",
        ),
    )
add(
    KNOWN,
    True,
    ["Copilot"],
    "Copilot co-author noreply, team notes",
    pr(
        commits=[
            {"message": msg("Initial plan")},
            {
                "message": msg(
                    "Add tests",
                    "Co-authored-by: ada-l <12345+ada-l@users.noreply.github.com>",
                    "Co-authored-by: Copilot <198982749+Copilot@users.noreply.github.com>",
                )
            },
        ]
    ),
)
add(
    KNOWN,
    True,
    ["Copilot"],
    "Copilot branch prefix, team notes",
    pr(head_branch="copilot/fix-login-redirect"),
)
add(
    KNOWN,
    True,
    ["Copilot"],
    "Copilot tips block, team notes",
    pr(body="Implements the export.\n\n<!-- START COPILOT CODING AGENT TIPS -->\n---\nTips"),
)
for m in ["Co-authored-by: Cursor Agent <cursoragent@cursor.com>", "Made-with: Cursor"]:
    add(
        KNOWN,
        True,
        ["Cursor"],
        "Cursor trailers, corpus:59865229196 / corpus:69237050290",
        pr(commits=[{"message": msg(rng.choice(SUBJECTS), m)}]),
    )
add(
    KNOWN,
    True,
    ["Cursor"],
    "Cursor background agent branch, team notes",
    pr(head_branch="cursor/add-dark-mode-1a2b"),
)
add(
    KNOWN,
    True,
    ["Cursor"],
    "Cursor background agent account, corpus:57767597321",
    pr(author_login="cursor[bot]"),
)
add(
    KNOWN,
    True,
    ["Devin"],
    "Devin bot account, corpus:69568434800",
    pr(
        author_login="devin-ai-integration[bot]",
        head_branch="devin/1718000000-add-cache",
        body="Link to Devin run: https://app.devin.ai/sessions/4f2a\nRequested by: Ada",
    ),
)
add(
    KNOWN,
    True,
    ["Devin"],
    "Devin run link, corpus:69535050452",
    pr(
        body="Adds the cache.\n\nLink to Devin run: https://app.devin.ai/sessions/9c1e77\nRequested by: @meichen"
    ),
)
add(KNOWN, True, ["Devin"], "Devin branch, team notes", pr(head_branch="devin/1718200000-fix-sync"))
add(
    KNOWN,
    True,
    ["Codex"],
    "Codex task link, team notes",
    pr(
        body="## Summary\n- fix\n\n## Testing\n- ✅ pytest\n\n------\nhttps://chatgpt.com/codex/tasks/task_e_68a1b2c3d4"
    ),
)
add(KNOWN, True, ["Codex"], "Codex branch, team notes", pr(head_branch="codex/fix-flaky-test"))
add(
    KNOWN,
    True,
    ["Codex"],
    "Codex connector bot, corpus:57767597321",
    pr(author_login="chatgpt-codex-connector[bot]"),
)
for _i, model in enumerate(
    ["anthropic/claude-sonnet-4-20250514", "gpt-4.1", "deepseek/deepseek-chat"]
):
    add(
        KNOWN,
        True,
        ["Aider"],
        "aider attribution, corpus:69237050290",
        pr(
            commits=[
                {
                    "message": msg(
                        f"aider: {rng.choice(SUBJECTS).lower()}",
                        f"Co-authored-by: aider ({model}) <noreply@aider.chat>",
                    )
                }
            ]
        ),
    )
add(
    KNOWN,
    True,
    ["Aider"],
    "aider author suffix, corpus:69237050290",
    pr(commits=[{"message": "feat: add export", "author_name": "Mei Chen (aider)"}]),
)
add(
    KNOWN,
    True,
    ["Aider"],
    "older aider e-mail, team notes",
    pr(commits=[{"message": msg("Fix", "Co-authored-by: aider (gpt-4o) <aider@aider.chat>")}]),
)
add(
    KNOWN,
    True,
    ["Jules"],
    "Jules bot, corpus:69568434800",
    pr(
        author_login="google-labs-jules[bot]",
        body="This change was made by Jules.\n\nhttps://jules.google.com/task/1234567",
    ),
)
add(
    KNOWN,
    True,
    ["Jules"],
    "Jules task link, team notes",
    pr(body="Fix\n\nTask: https://jules.google.com/task/88442211"),
)
add(
    KNOWN,
    True,
    ["Amp"],
    "Amp trailers, corpus:17125885276",
    pr(
        commits=[
            {
                "message": msg(
                    "Update log4j to 2.15.1",
                    "Co-authored-by: Amp <amp@ampcode.com>",
                    "Amp-Thread-ID: https://ampcode.com/threads/T-652c6d27-8ae1-4e61-923d-a4d40071cb4b",
                )
            }
        ]
    ),
)
add(
    KNOWN,
    True,
    ["Amp"],
    "Amp co-author, corpus:60786243695",
    pr(
        commits=[
            {"message": msg("fix(cli): optional signal", "Co-authored-by: Amp <amp@ampcode.com>")}
        ]
    ),
)
add(
    KNOWN,
    True,
    ["Gemini"],
    "run-gemini-cli bot, corpus:71083615999",
    pr(author_login="gemini-cli[bot]"),
)

# --- Family: other tools and other real forms of known tools -----------------------------------
OTHER = "other_tools"
TRAILER_FORMS = [
    ("OpenHands", "Co-authored-by: openhands <openhands@all-hands.dev>", "corpus:69790666739"),
    ("OpenHands", "Co-authored-by: openhands <openhands@openhands.dev>", "OpenHands domain change"),
    ("Crush", "Co-Authored-By: Crush <crush@charm.land>", "corpus:8108173586"),
    ("opencode", "Co-Authored-By: opencode <noreply@opencode.ai>", "corpus:46414204631"),
    ("Warp", "Co-Authored-By: Warp <agent@warp.dev>", "corpus:24935816582"),
    ("Warp", "Co-Authored-By: Oz <oz-agent@warp.dev>", "corpus:53205413057"),
    ("Replit Agent", "Replit-Commit-Author: Agent", "corpus:65836097228"),
    (
        "Factory Droid",
        "Co-authored-by: factory-droid[bot] <138933559+factory-droid[bot]@users.noreply.github.com>",
        "corpus:40540820320",
    ),
    ("v0", "Co-authored-by: v0[bot] <v0[bot]@users.noreply.github.com>", "corpus:54631381624"),
    ("Goose", "Co-Authored-By: goose <goose@block.xyz>", "corpus:42306360933"),
    (
        "Junie",
        "Co-authored-by: junie-agent <247260674+junie-agent@users.noreply.github.com>",
        "corpus:51774588320",
    ),
    (
        "Amazon Q Developer",
        "Co-authored-by: Amazon Q Developer <208079219+amazon-q-developer[bot]@users.noreply.github.com>",
        "corpus:69568434800",
    ),
    (
        "Devin",
        "Co-authored-by: Devin AI <158243242+devin-ai-integration[bot]@users.noreply.github.com>",
        "corpus:69568434800",
    ),
    (
        "Jules",
        "Co-authored-by: google-labs-jules[bot] <161369871+google-labs-jules[bot]@users.noreply.github.com>",
        "corpus:69568434800",
    ),
    (
        "Codex",
        "Co-authored-by: Codex <noreply@openai.com>",
        "vendor no-reply rule, corpus:53623209109",
    ),
    (
        "Claude Code",
        "co-authored-by: Claude <noreply@anthropic.com>",
        "lowercase key, corpus:45235061419",
    ),
    (
        "Cursor",
        "co-authored-by: cursor agent <cursoragent@cursor.com>",
        "lowercase key, corpus:59865229196",
    ),
    ("Amp", "CO-AUTHORED-BY: Amp <amp@ampcode.com>", "upper-case key, corpus:60786243695"),
    ("Crush", "Assisted-by: Crush:grok-4.6", "Assisted-by form, corpus:69535050452"),
    (
        "Claude Code",
        "Assisted-by: Claude Code:claude-opus-4-8",
        "Assisted-by form, corpus:58019030273",
    ),
    (
        "Copilot",
        "Assisted-by: GitHub Copilot:GPT-5.3-Codex",
        "Assisted-by form, corpus:54559900073",
    ),
    (
        "Other",
        "Assisted-by: Zed Agent:claude-sonnet-4",
        "Assisted-by with an unlisted agent (kernel form)",
    ),
    ("Continue", "Co-Authored-By: Continue <noreply@continue.dev>", "corpus:49239421994"),
    ("Roo Code", "Co-authored-by: Roomote <roomote@roocode.com>", "corpus:55745190290"),
    ("Tabnine", "Co-Authored-By: Tabnine Agent <noreply@tabnine.com>", "corpus:2966210417"),
    (
        "Windsurf",
        "Co-authored-by: Windsurf <windsurf@codeium.com>",
        "named-domain rule; form seen in corpus:52085948757",
    ),
    (
        "Gemini",
        "Co-authored-by: Gemini <gemini@google.com>",
        "named-domain rule; form seen in corpus:60306819011",
    ),
]
for tool, trailer, source in TRAILER_FORMS:
    for position in (0, 1, 2):  # the marker in the 1st, 2nd or 3rd commit
        commits = [{"message": msg(rng.choice(SUBJECTS))} for _ in range(position)]
        commits.append({"message": msg(rng.choice(SUBJECTS), trailer)})
        add(
            OTHER,
            True,
            [tool],
            f"{tool} trailer as written in public commits: {source}",
            pr(commits=commits),
        )
BOT_AUTHORS = [
    ("Claude Code", "claude[bot]", "corpus:68990275936"),
    ("Claude Code", "claude", "GraphQL Bot login without [bot]"),
    ("opencode", "opencode-agent[bot]", "corpus:60561972400"),
    ("Factory Droid", "factory-droid[bot]", "corpus:58714944175"),
    ("Lovable", "lovable-dev[bot]", "corpus:7115978562"),
    ("Sweep", "sweep-ai[bot]", "corpus:1625753414"),
    ("Codegen", "codegen-sh[bot]", "corpus:55531547285"),
    ("Amazon Q Developer", "amazon-q-developer[bot]", "corpus:59458487386"),
    ("Kiro", "kiro-agent[bot]", "corpus:71633365956"),
    ("Kilo Code", "kilo-code-bot[bot]", "corpus:71108723068"),
    ("Tembo", "tembo[bot]", "corpus:58540553188"),
    ("Mentat", "mentatbot[bot]", "corpus:3487982952"),
    ("Roo Code", "roomote[bot]", "corpus:55745190290"),
    ("OpenHands", "openhands-agent", "corpus:68990275936"),
    ("OpenHands", "openhands-ai[bot]", "corpus:71095481281"),
    ("Junie", "junie-agent", "corpus:51774588320"),
    ("Gemini", "gemini-cli[bot]", "corpus:71083615999"),
]
for tool, login, source in BOT_AUTHORS:
    is_bot = login.endswith("[bot]") or login in ("claude", "openhands-agent", "junie-agent")
    add(
        OTHER,
        True,
        [tool],
        f"{tool} opens PRs as {login}: {source}",
        pr(
            author_login=login,
            author_is_bot=is_bot,
            body=f"{rng.choice(SUBJECTS)}.\n\nResolves #{rng.randint(1, 99)}",
        ),
    )
    add(
        OTHER,
        True,
        [tool],
        f"{tool} commits as {login}: {source}",
        pr(
            commits=[
                {"message": msg(rng.choice(SUBJECTS))},
                {
                    "message": "Changes",
                    "author_name": login,
                    "author_email": "",
                    "author_login": login if login.endswith("[bot]") else f"{login}[bot]",
                },
            ]
        ),
    )
for tool, login in [("Lovable", "gpt-engineer-app[bot]"), ("v0", "v0[bot]")]:
    add(
        OTHER,
        True,
        [tool],
        f"{tool} commit identity {login}: corpus:58874295739 / corpus:66707191700",
        pr(
            commits=[
                {
                    "message": "Use tech stack vite_react_shadcn_ts",
                    "author_name": login,
                    "author_email": f"{login}@users.noreply.github.com",
                    "author_login": login,
                }
            ]
        ),
    )
FOOTERS = [
    ("Crush", "💘 Generated with Crush", "corpus:8108173586"),
    ("opencode", "🤖 Generated with [opencode](https://opencode.ai)", "corpus:46414204631"),
    (
        "Qwen Code",
        "🤖 Generated with [Qwen Code](https://github.com/QwenLM/qwen-code)",
        "corpus:51822345642",
    ),
    (
        "Qwen Code",
        "<sub>🤖 Generated with [Qwen Code](https://github.com/QwenLM/qwen-code) — verification round 4</sub>",
        "corpus:71447677387",
    ),
    ("Kilo Code", "🤖 Generated with [Kilo Code](https://kilocode.ai)", "corpus:55897561567"),
    ("Cline", "🤖 Generated with Cline", "corpus:66888530769"),
    ("Continue", "Generated with Continue (https://continue.dev)", "corpus:49239421994"),
    ("Kiro", "Kiro session: https://app.kiro.dev/session/3f1c2b", "corpus:55047699699"),
    ("Claude Code", "Generated with Claude Code", "footer without the link, corpus:53972390790"),
]
for tool, footer, source in FOOTERS:
    add(
        OTHER,
        True,
        [tool],
        f"{tool} footer in the PR body: {source}",
        pr(
            body=f"## Summary\n\n{rng.choice(SUBJECTS)}.\n\n## Test plan\n\n- [x] tests pass\n\n{footer}"
        ),
    )
    add(
        OTHER,
        True,
        [tool],
        f"{tool} footer in a later commit: {source}",
        pr(
            commits=[
                {"message": msg("wip")},
                {"message": msg(rng.choice(SUBJECTS), body=f"Details.\n\n{footer}")},
            ]
        ),
    )

# --- Family: prose disclosures -----------------------------------------------------------------
PROSE = "prose"
DISCLOSURES = [
    ("Drafted with ChatGPT, then edited by hand.", "ChatGPT"),
    ("Most of this was written with the help of GitHub Copilot; I reviewed every line.", "Copilot"),
    ("I used Claude Code to write the migration and the tests.", "Claude Code"),
    (
        "AI disclosure: the parser was generated using Gemini CLI and then simplified by me.",
        "Gemini",
    ),
    ("This PR is AI-assisted. I checked the output and ran the suite.", "Other"),
    ("Code written with Cursor, reviewed and tested manually.", "Cursor"),
    ("The regex was generated by ChatGPT (o3) and I added the tests.", "ChatGPT"),
    ("We used Windsurf to port the module from Python 2.", "Windsurf"),
    ("Refactored with Claude's help; behaviour unchanged.", "Claude Code"),
    ("Implemented using an AI assistant (Copilot Chat), then cleaned up.", "Copilot"),
    ("Disclosure: scaffolded with Kiro, logic written by me.", "Kiro"),
    ("I asked ChatGPT to draft the docstrings.", "ChatGPT"),
    ("Generated the fixtures with an LLM and checked them by hand.", "Other"),
    ("Built with Lovable, exported to this repo.", "Lovable"),
    ("The first version was produced with Aider, then I split it into commits.", "Aider"),
    ("Written partly using OpenAI Codex.", "Codex"),
    ("Portions of this change were created with Cline.", "Cline"),
    ("This was vibe-coded with Replit Agent and then hardened.", "Replit Agent"),
    ("Translated from the Go version with the help of Claude Code.", "Claude Code"),
    ("Note: the SQL was written with GPT-4o and benchmarked afterwards.", "ChatGPT"),
    ("I had Copilot generate the boilerplate for the serializers.", "Copilot"),
    ("Drafted using Junie in IntelliJ.", "Junie"),
    ("- [x] This PR was written with AI assistance (Claude)", "Claude Code"),
    ("Tests were generated with Amazon Q and adjusted.", "Amazon Q Developer"),
    ("This change was partly AI-generated; see the commit notes.", "Other"),
    ("Developed with OpenHands, reviewed by @ghopper.", "OpenHands"),
    ("Converted the config loader with Qwen Code.", "Qwen Code"),
    ("Wrote this with the assistance of Gemini.", "Gemini"),
    ("Most of the UI was made with v0.dev and adapted.", "v0"),
    ("Initial implementation created with Devin, then reworked by hand.", "Devin"),
]
for text, tool in DISCLOSURES:
    add(
        PROSE,
        True,
        [tool],
        "first-person disclosure in the style of public PR descriptions (issue 10's examples)",
        pr(body=f"{rng.choice(SUBJECTS)}.\n\n{text}"),
    )
for text, tool in DISCLOSURES[:6]:
    add(
        PROSE,
        True,
        [tool],
        "the same disclosure in a commit message",
        pr(commits=[{"message": msg(rng.choice(SUBJECTS), body=text)}]),
    )

# --- Review-only -------------------------------------------------------------------------------
REV = "review_only"
SUMMARIES = [
    (
        "CodeRabbit",
        "<!-- This is an auto-generated comment: release notes by coderabbit.ai -->\n## Summary by CodeRabbit\n\n* **New Features**\n  * Adds CSV export.\n<!-- end of auto-generated comment: release notes by coderabbit.ai -->",
        "corpus:59951786496",
    ),
    (
        "CodeRabbit",
        "## Summary by CodeRabbit\n\n* **Bug Fixes**\n  * Handles missing timestamps.",
        "corpus:59951786496",
    ),
    (
        "Sourcery",
        "## Summary by Sourcery\n\nBug Fixes:\n- Resolve unbound variable error in the rebuild command",
        "corpus:53586845238",
    ),
    (
        "Sourcery",
        "## Summary by Sourcery\n\nBuild:\n- Bump google.golang.org/grpc from v1.79.3 to v1.80.0.",
        "corpus:55358993473",
    ),
    (
        "cubic",
        "<!-- This is an auto-generated description by cubic. -->\n---\n## Summary by cubic\nFixes three broken links in the docs.",
        "corpus:71565649609",
    ),
    (
        "Ellipsis",
        "> [!IMPORTANT]\n> Adds CSV export.\n>\n> <sup>This description was created by [Ellipsis](https://www.ellipsis.dev) for 1a2b3c.</sup>",
        "corpus:63122946786",
    ),
    (
        "Qodo",
        "## PR Reviewer Guide 🔍\n\n<!-- pr-agent:review:full -->\n⏱️ Estimated effort to review: 2",
        "corpus:70269488652",
    ),
    (
        "Greptile",
        "<h3>Greptile Summary</h3>\n\n- Adds support for an ignore marker",
        "corpus:40940549087",
    ),
]
for tool, summary, source in SUMMARIES:
    for _ in range(2):
        add(
            REV,
            False,
            [tool],
            f"{tool} summary in the PR body: {source}",
            pr(body=f"{rng.choice(SUBJECTS)}.\n\n{summary}"),
            review_only=True,
        )
REVIEWERS = [
    ("CodeRabbit", "coderabbitai[bot]"),
    ("Copilot", "copilot-pull-request-reviewer[bot]"),
    ("Copilot", "Copilot"),
    ("Gemini", "gemini-code-assist[bot]"),
    ("Cursor", "cursor[bot]"),
    ("Codex", "chatgpt-codex-connector[bot]"),
    ("Devin", "devin-ai-integration[bot]"),
    ("Claude Code", "claude[bot]"),
    ("Amazon Q Developer", "amazon-q-developer[bot]"),
    ("Augment Code", "augmentcode[bot]"),
    ("Sourcery", "sourcery-ai[bot]"),
    ("Greptile", "greptile-apps[bot]"),
    ("Ellipsis", "ellipsis-dev[bot]"),
    ("Qodo", "qodo-merge-pro[bot]"),
    ("Qodo", "qodo-code-review[bot]"),
    ("cubic", "cubic-dev-ai[bot]"),
]
for tool, login in REVIEWERS:
    data = pr(reviews=[login, "ghopper"])
    if login == "Copilot":
        data["reviews"][0]["reviewer_is_bot"] = True
    add(REV, False, [tool], f"{tool} reviews as {login} (catalogue source)", data, review_only=True)
add(
    REV,
    False,
    ["Gemini"],
    "applied review suggestion co-authored by the review bot, corpus:61799776924",
    pr(
        commits=[
            {
                "message": msg(
                    "Apply suggestion from code review",
                    "Co-authored-by: gemini-code-assist[bot] <176961590+gemini-code-assist[bot]@users.noreply.github.com>",
                )
            }
        ],
        reviews=["gemini-code-assist[bot]"],
    ),
    review_only=True,
)
add(
    REV,
    False,
    ["CodeRabbit"],
    "CodeRabbit summary plus review",
    pr(body="Fix.\n\n## Summary by CodeRabbit\n\n* Refactor", reviews=["coderabbitai[bot]"]),
    review_only=True,
)

# --- Traps ----------------------------------------------------------------------------------
T_PERSON, T_WORD, T_SDK, T_NOAI, T_QUOTE = (
    "trap_person",
    "trap_word",
    "trap_sdk_bump",
    "trap_no_ai",
    "trap_quoted",
)
for first, last in [
    ("Claude", "Martin"),
    ("Claude", "Dupont"),
    ("Devin", "Okafor"),
    ("Devin", "Booker"),
    ("Jules", "Verne"),
    ("Amp", "Singh"),
    ("Cursor", "Li"),
    ("Aider", "Khan"),
]:
    low = first.lower()
    add(
        T_PERSON,
        False,
        [],
        "a person named after a tool (issue 10 trap family)",
        pr(
            author_login=f"{low}-{last.lower()}",
            head_branch=f"{low}/fix-{rng.randint(1, 99)}",
            commits=[
                {
                    "message": msg(rng.choice(SUBJECTS)),
                    "author_name": f"{first} {last}",
                    "author_email": f"{low}.{last.lower()}@example.com",
                    "author_login": f"{low}-{last.lower()}",
                }
            ],
        ),
    )
    add(
        T_PERSON,
        False,
        [],
        "co-authored by a person named after a tool",
        pr(
            commits=[
                {
                    "message": msg(
                        rng.choice(SUBJECTS),
                        f"Co-authored-by: {first} {last} <{low}@{last.lower()}.dev>",
                    )
                }
            ]
        ),
    )
add(
    T_PERSON,
    False,
    [],
    "a person whose GitHub login is a tool name (noreply without [bot])",
    pr(
        commits=[
            {
                "message": msg("Fix"),
                "author_email": "4242+claude@users.noreply.github.com",
                "author_login": "claude",
            }
        ],
        author_login="claude",
    ),
)
add(
    T_PERSON,
    False,
    [],
    "thanks to people named Jules and Devin",
    pr(body="Thanks to Jules and Devin for pairing on this."),
)
WORDS = [
    ("Fix cursor jumping to the end of the input", "The text cursor no longer jumps after paste."),
    ("Add cursor-based pagination", "Replaces offset pagination with a cursor."),
    ("Continue on empty pages", "continue instead of break when a page is empty"),
    ("Amp up the retry budget", "Raise retries to 5."),
    ("Fix the goose animation", "The goose sprite no longer flickers."),
    ("Crush duplicate events", "Deduplicate events before insert."),
    ("Reset link generated with continueUrl", "The reset link is generated with continueUrl set."),
    ("Sweep stale sessions nightly", "A periodic sweep of expired sessions."),
    ("Warp speed: batch inserts", "Use COPY for the metrics table."),
    ("Codegen: regenerate the GraphQL client", "Generated by codegen from schema.graphql."),
    ("Nightly cleanup", "Generated by sweep job every night."),
    ("Faster page loads", "Made with warp speed and a lot of coffee."),
    ("Cascade deletes", "Created with cascade deletes on the reviews table."),
    ("New logo", "Made by Oz, our designer."),
    ("Credits page", "Icons made by Claude Monet and Devin Booker."),
    ("Pairing notes", "Co-authored-by: Claude Martin <claude@google.com>"),
    ("Gemini constellation icon", "Adds zodiac icons including Gemini."),
    ("Cascade deletes to reviews", "on_delete=CASCADE for reviews."),
    ("Copilot seat in the billing page", "Shows the seat count for the co-pilot plan."),
    ("Generated migrations", "Generated by Django 5.2 on 2026-11-30."),
    (
        "Cursor blink rate setting",
        "Generated with the cursor keys held down the list scrolls fast.",
    ),
]
for title, body in WORDS:
    add(
        T_WORD,
        False,
        [],
        "a tool name used as an ordinary word (issue 10 trap family)",
        pr(title=title, body=body, head_branch=f"fix/{title.split()[1].lower()}"),
    )
    add(
        T_WORD,
        False,
        [],
        "the same word in a commit message",
        pr(commits=[{"message": msg(title, body=body)}]),
    )
SDK = [
    (
        "Bump @anthropic-ai/sdk from 0.20.0 to 0.21.0",
        "dependabot[bot]",
        "dependabot/npm_and_yarn/anthropic-ai/sdk-0.21.0",
    ),
    ("Bump openai from 1.40.0 to 1.41.0", "dependabot[bot]", "dependabot/pip/openai-1.41.0"),
    (
        "Update dependency @anthropic-ai/claude-code to v1.0.2",
        "renovate[bot]",
        "renovate/anthropic-ai-claude-code-1.x",
    ),
    (
        "chore(deps): update anthropics/claude-code-action action to v1",
        "renovate[bot]",
        "renovate/anthropics-claude-code-action-1.x",
    ),
    (
        "Bump @google/genai from 1.2.0 to 1.3.0",
        "dependabot[bot]",
        "dependabot/npm_and_yarn/google/genai-1.3.0",
    ),
    (
        "Bump langchain-openai from 0.1.0 to 0.2.0",
        "dependabot[bot]",
        "dependabot/pip/langchain-openai-0.2.0",
    ),
]
for title, bot, branch in SDK:
    notes = (
        "<details><summary>Release notes</summary><blockquote>\n<h2>v0.21.0</h2>\n"
        "<p>Co-Authored-By: Claude &lt;noreply@anthropic.com&gt;</p>\n</blockquote></details>\n"
        "Commits\n- Co-Authored-By: Claude <noreply@anthropic.com>\n- 🤖 Generated with [Claude Code](https://claude.ai/code)"
    )
    add(
        T_SDK,
        False,
        [],
        "an AI SDK dependency bump by a dependency bot (issue 10 trap family)",
        pr(
            title=title,
            body=f"Bumps the package.\n{notes}",
            author_login=bot,
            author_is_bot=True,
            head_branch=branch,
            commits=[
                {
                    "message": f"{title}\n\nSigned-off-by: dependabot[bot] <support@github.com>",
                    "author_name": bot,
                    "author_email": "49699333+dependabot[bot]@users.noreply.github.com",
                    "author_login": bot,
                }
            ],
        ),
    )
    add(
        T_SDK,
        False,
        [],
        "a person upgrading an AI SDK",
        pr(
            title=title.replace("Bump", "Upgrade"),
            body="Upgrade the SDK; the Claude API client needs the new streaming call.",
        ),
    )
NOAI = [
    "AI disclosure: No AI was used to write this change.",
    "- [x] No AI was used in this PR (no Copilot, Claude Code or Cursor).",
    "This was not written with Copilot or ChatGPT.",
    "Written without AI, by hand.",
    "- [ ] I used AI to write this PR\n- [x] I wrote it myself",
    "Tested with Copilot disabled.",
    "No LLM tools were used for this change.",
    "I did not use ChatGPT or Claude for this.",
    "AI usage: none.",
    "Not AI-generated.",
]
for text in NOAI:
    add(
        T_NOAI,
        False,
        [],
        "a 'no AI' disclosure (issue 10 trap family)",
        pr(body=f"{rng.choice(SUBJECTS)}.\n\n{text}"),
    )
    add(
        T_NOAI,
        False,
        [],
        "a 'no AI' disclosure with an agent-like branch name",
        pr(body=text, head_branch=f"cursor/{rng.randint(1, 99)}-blink"),
    )
QUOTES = [
    "We now strip `Co-Authored-By: Claude <noreply@anthropic.com>` from squashed messages.",
    "```\nCo-authored-by: Cursor Agent <cursoragent@cursor.com>\n```\nis what the agent writes; this PR parses it.",
    "> 🤖 Generated with [Claude Code](https://claude.ai/code)\n\nThat footer is removed by the new hook.",
    "Example of a log line:\n\n    Co-authored-by: Amp <amp@ampcode.com>\n\nWe detect it now.",
    "Docs: contributors add `Assisted-by: AGENT_NAME:MODEL_VERSION` when using AI.",
    "<blockquote>Made-with: Cursor</blockquote> is the trailer we filter.",
    "The regex matches `Link to Devin run:` and `chatgpt.com/codex/tasks/`.",
    "Quoting the reviewer:\n> Generated with Crush looks like a marker, please ignore it",
]
for text in QUOTES:
    add(
        T_QUOTE, False, [], "a marker quoted in prose or code (issue 10 trap family)", pr(body=text)
    )
    add(
        T_QUOTE,
        False,
        [],
        "a marker quoted in a commit message",
        pr(commits=[{"message": msg("Document AI trailers", body=text)}]),
    )

# --- Plain human PRs -------------------------------------------------------------------------
for _ in range(30):
    add("human", False, [], "ordinary human PR (synthetic text, no AI involvement)", pr())
MENTIONS = [
    ("Add a Claude API integration", "Wires the Anthropic SDK into the summariser."),
    ("Detect AI-generated PRs", "Adds trailers and bot ids to the detector."),
    ("Support Copilot metrics endpoint", "Reads the Copilot usage API."),
    ("Document how we use ChatGPT in support", "Adds a page on our support macros."),
    ("Add OpenAI provider option", "The LLM base URL is configurable now."),
    ("Gemini model list update", "Adds gemini-2.5-pro to the allowed models."),
]
for title, body in MENTIONS:
    add(
        "mentions",
        False,
        [],
        "a PR about an AI product, not written with it",
        pr(title=title, body=body),
    )

# --- Verbatim excerpts of public PR bodies and commits (as found by the research search) ------
VERBATIM = [
    (
        "known_tools",
        True,
        ["Claude Code"],
        "53408623816",
        {
            "body": "- [x] Run on a system with full ClaudeBox installation\n\n🤖 Generated with [Claude Code](https://claude.ai/code)\n\n## Summary by Sourcery\n\nIntroduce a comprehensive uninstall.sh script to fully remove ClaudeBox components"
        },
    ),
    (
        "other_tools",
        True,
        ["Claude Code"],
        "53972390790",
        {
            "body": "tests.\n\nGenerated with Claude Code\n\n<!-- This is an auto-generated description by cubic. -->\n---\n## Summary by cubic\nAdds the `ai-regression-testing` skill with practical patterns and helpers to catch regressions"
        },
    ),
    (
        "review_only",
        False,
        ["Sourcery"],
        "53586845238",
        {
            "body": "`claudebox rebuild` failed because the image name was being\nreferenced before it was calculated. Do the calculation earlier.\n\n## Summary by Sourcery\n\nBug Fixes:\n\n- Resolve unbound variable error in the rebuild command by precomputing the image name"
        },
    ),
    (
        "review_only",
        False,
        ["Sourcery"],
        "53716022011",
        {
            "body": "Duplicate group IDs aren't good practice\nin general, but in the context of ClaudeBox, shouldn't cause any\nproblems.\n\n## Summary by Sourcery\n\nBug Fixes:\n\n- Add the -o option to groupadd to allow duplicate group IDs"
        },
    ),
    (
        "review_only",
        False,
        ["cubic"],
        "71565649609",
        {
            "body": "No changeset\nneeded per CONTRIBUTING.md.\n\n\n<!-- This is an auto-generated description by cubic. -->\n---\n## Summary by cubic\nFixes three broken links in the v3 docs."
        },
    ),
    (
        "trap_sdk_bump",
        False,
        [],
        "55190338290",
        {
            "title": "Update gRPC and OpenTelemetry dependencies",
            "author_login": "renovate[bot]",
            "author_is_bot": True,
            "head_branch": "renovate/grpc",
            "body": "This PR contains the following updates.\n\n## Summary by Sourcery\n\nUpdate gRPC and OpenTelemetry dependencies to their latest compatible versions.",
        },
    ),
    (
        "other_tools",
        True,
        ["Replit Agent"],
        "65836097228",
        {
            "commits": [
                {
                    "message": "Start tidy: remove dead files, park unused features, new schema and API contract\n\n## Clean up .replit configuration\n\nReplit-Commit-Author: Agent\n"
                }
            ]
        },
    ),
    (
        "other_tools",
        True,
        ["Amp"],
        "60786243695",
        {
            "commits": [
                {
                    "message": "fix(cli): embed the optional signal where trpc-cli expects it\n\nAmp-Thread-ID: https://ampcode.com/threads/T-019c90c6-c261-75dd-be9e-48cc2e28ccdb\nCo-authored-by: Amp <amp@ampcode.com>"
                }
            ]
        },
    ),
    (
        "other_tools",
        True,
        ["Qwen Code"],
        "71447677387",
        {
            "body": "Verified on the assets branch.\n\n---\n<sub>🤖 Generated with [Qwen Code](https://github.com/QwenLM/qwen-code) — maintainer verification round 4, driven locally by @wenshao</sub>"
        },
    ),
    (
        "trap_quoted",
        False,
        [],
        "66242625912",
        {
            "body": "Our hook rejects these:\n\n```js\n/Made-with: Cursor/i,\n/Co-authored-by: aider.*<noreply@aider\\.chat>/i,\n```"
        },
    ),
]
for family, ai, tools, ref, fields in VERBATIM:
    data = pr(**{k: v for k, v in fields.items() if k != "commits"})
    if "commits" in fields:
        data["commits"] = [{**data["commits"][0], **c} for c in fields["commits"]]
    add(
        family,
        ai,
        tools,
        f"verbatim excerpt of a public PR/commit, corpus:{ref}",
        data,
        review_only=family == "review_only",
    )

OUT.write_text("".join(json.dumps(e, ensure_ascii=False, sort_keys=True) + "\n" for e in entries))
print(f"{len(entries)} PRs -> {OUT}")
