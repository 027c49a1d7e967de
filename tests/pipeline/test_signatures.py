"""The signature catalogue, table-driven: one positive per tool and marker kind, and the traps
that must match nothing (people named Claude or Devin, ordinary words, AI disclosures)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from pipeline.models import PullRequest, PullRequestCommit, PullRequestReview
from pipeline.signatures import (
    CATALOGUE_VERSION,
    CommitText,
    PRText,
    ReviewText,
    detect,
    pr_text_from_model,
    settles,
    tools_of,
)
from tests.fixtures.github import DEMO_TOOL_NAMES


def commit(message: str = "Fix the thing", **fields) -> CommitText:
    return CommitText(message=message, **fields)


POSITIVES: list[tuple[str, PRText, str, str]] = [
    # (case, PR, tool expected, marker expected (substring))
    (
        "claude co-author trailer (parsed)",
        PRText(commits=(commit(co_authors=(("Claude", "noreply@anthropic.com"),)),)),
        "Claude Code",
        "co-author trailer",
    ),
    (
        "claude model-named co-author in the message",
        PRText(
            commits=(
                commit("Add cache\n\nCo-Authored-By: Claude Opus 4.5 <noreply@anthropic.com>"),
            )
        ),
        "Claude Code",
        "co-author trailer",
    ),
    (
        "claude code footer in the body",
        PRText(
            body="Adds retries.\n\n🤖 Generated with [Claude Code](https://claude.com/claude-code)"
        ),
        "Claude Code",
        "generated-with footer in PR body",
    ),
    (
        "claude branch",
        PRText(head_branch="claude/fix-login-redirect"),
        "Claude Code",
        "branch prefix claude/",
    ),
    (
        "copilot coding agent opens the PR (GraphQL login, bot flag)",
        PRText(author_login="copilot-swe-agent", author_is_bot=True),
        "Copilot",
        "PR author bot",
    ),
    (
        "copilot coding agent (REST login)",
        PRText(author_login="copilot-swe-agent[bot]"),
        "Copilot",
        "PR author bot",
    ),
    (
        "copilot co-author noreply address",
        PRText(
            commits=(
                commit(co_authors=(("Copilot", "198982749+Copilot@users.noreply.github.com"),)),
            )
        ),
        "Copilot",
        "co-author trailer",
    ),
    (
        "copilot agent tips block",
        PRText(body="Fixes #12\n<!-- START COPILOT CODING AGENT TIPS -->\n---\nTips"),
        "Copilot",
        "coding agent tips block",
    ),
    (
        "copilot reviewer",
        PRText(
            reviews=(
                ReviewText(reviewer_login="copilot-pull-request-reviewer", reviewer_is_bot=True),
            )
        ),
        "Copilot",
        "reviewer bot",
    ),
    (
        "copilot branch",
        PRText(head_branch="copilot/fix-123"),
        "Copilot",
        "branch prefix copilot/",
    ),
    (
        "cursor agent co-author",
        PRText(
            commits=(commit("Refactor\n\nCo-authored-by: Cursor Agent <cursoragent@cursor.com>"),)
        ),
        "Cursor",
        "co-author trailer",
    ),
    (
        "cursor made-with trailer",
        PRText(commits=(commit("Tidy imports\n\nMade-with: Cursor"),)),
        "Cursor",
        "Made-with trailer in commit message",
    ),
    (
        "cursor branch",
        PRText(head_branch="cursor/add-dark-mode-1a2b"),
        "Cursor",
        "branch prefix cursor/",
    ),
    (
        "devin bot author",
        PRText(author_login="devin-ai-integration[bot]"),
        "Devin",
        "PR author bot",
    ),
    (
        "devin run link",
        PRText(body="Link to Devin run: https://app.devin.ai/sessions/abc123\nRequested by: Ada"),
        "Devin",
        "Devin run link in PR body",
    ),
    (
        "devin branch",
        PRText(head_branch="devin/1718000000-add-cache"),
        "Devin",
        "branch prefix devin/",
    ),
    (
        "codex task link",
        PRText(body="Codex Task: https://chatgpt.com/codex/tasks/task_e_68a1b2c3"),
        "Codex",
        "Codex task link in PR body",
    ),
    (
        "codex branch",
        PRText(head_branch="codex/fix-flaky-test"),
        "Codex",
        "branch prefix codex/",
    ),
    (
        "aider commit prefix",
        PRText(commits=(commit("aider: Add retry to the fetcher"),)),
        "Aider",
        "aider: commit prefix",
    ),
    (
        "aider author suffix",
        PRText(
            commits=(commit(author_name="Ada Lovelace (aider)", author_email="ada@example.com"),)
        ),
        "Aider",
        "(aider) author suffix",
    ),
    (
        "aider co-author with model",
        PRText(
            commits=(
                commit(
                    "Fix\n\nCo-authored-by: aider (anthropic/claude-sonnet-4) <aider@aider.chat>"
                ),
            )
        ),
        "Aider",
        "co-author trailer",
    ),
    (
        "jules bot author",
        PRText(author_login="google-labs-jules", author_is_bot=True),
        "Jules",
        "PR author bot",
    ),
    (
        "amp co-author",
        PRText(commits=(commit(co_authors=(("Amp", "amp@ampcode.com"),)),)),
        "Amp",
        "co-author trailer",
    ),
    (
        "gemini code assist reviewer",
        PRText(reviews=(ReviewText(reviewer_login="gemini-code-assist[bot]"),)),
        "Gemini",
        "reviewer bot",
    ),
    (
        "coderabbit reviewer",
        PRText(reviews=(ReviewText(reviewer_login="coderabbitai", reviewer_is_bot=True),)),
        "CodeRabbit",
        "reviewer bot",
    ),
    (
        "coderabbit summary in the body",
        PRText(body="## Summary by CodeRabbit\n\n* New Features\n  * Adds export"),
        "CodeRabbit",
        "CodeRabbit summary in PR body",
    ),
]


@pytest.mark.parametrize(
    "pr, tool, marker", [p[1:] for p in POSITIVES], ids=[p[0] for p in POSITIVES]
)
def test_marker_is_detected_with_its_tool_and_evidence(pr, tool, marker):
    hits = detect(pr)

    assert [h.tool for h in hits] == [tool]
    assert marker in hits[0].marker
    assert hits[0].evidence  # the user can read why
    # An AI reviewer, or its summary in the body, is evidence of review, not of authorship.
    review_only = marker in ("reviewer bot", "CodeRabbit summary in PR body")
    assert settles(hits) is not review_only


def test_the_original_ten_tools_each_have_a_positive_case():
    # Every other catalogue tool is covered by the labelled corpus (tests/data, test_corpus.py).
    assert {p[2] for p in POSITIVES} == {
        "Claude Code",
        "Copilot",
        "Cursor",
        "Devin",
        "Codex",
        "Aider",
        "Jules",
        "Amp",
        "Gemini",
        "CodeRabbit",
    }


TRAPS: list[tuple[str, PRText]] = [
    (
        "a person named Claude",
        PRText(
            author_login="claude",
            commits=(
                commit(author_name="Claude Martin", author_email="claude.martin@example.com"),
                commit("Fix\n\nCo-authored-by: Claude Dupont <claude@dupont.fr>"),
            ),
        ),
    ),
    (
        "a person named Devin",
        PRText(
            author_login="devin",
            body="Thanks Devin for the review! cc @devin",
            commits=(commit(author_name="Devin Smith", author_email="devin@example.com"),),
            reviews=(ReviewText(reviewer_login="devin"),),
        ),
    ),
    (
        "ordinary words",
        PRText(
            title="Fix cursor position when you continue typing",
            body="The cursor jumps; continue from the last line. Copilot-like autocomplete is out"
            " of scope.",
            head_branch="fix/cursor-jump",
            commits=(commit("Keep the cursor where it was and continue"),),
        ),
    ),
    (
        "a no-AI disclosure",
        PRText(
            body="## AI disclosure\n- [x] No AI was used\n- [ ] Claude Code\n- [ ] Copilot\n"
            "- [ ] Cursor\nI did not use Codex, Devin or aider either.",
        ),
    ),
    (
        "a PR documenting the markers in code",
        PRText(
            body="Detect agents by their trailers:\n```\n"
            "Co-Authored-By: Claude <noreply@anthropic.com>"
            "\nLink to Devin run: https://app.devin.ai/sessions/x\n```\nand `Made-with: Cursor`."
        ),
    ),
    (
        "a human branch that merely contains a tool name",
        PRText(head_branch="feature/claude-integration"),
    ),
    (
        "a human reviewer whose login is a tool name",
        PRText(reviews=(ReviewText(reviewer_login="coderabbitai", reviewer_is_bot=False),)),
    ),
    (
        "anthropic employee e-mail, not the noreply address",
        PRText(commits=(commit(author_name="Claude", author_email="claude@anthropic.com"),)),
    ),
]


@pytest.mark.parametrize("pr", [t[1] for t in TRAPS], ids=[t[0] for t in TRAPS])
def test_trap_matches_nothing(pr):
    assert detect(pr) == []


def test_a_no_ai_disclosure_outweighs_a_branch_name_but_not_a_tools_own_marker():
    disclosure = "Fixes the blinking caret.\n\nAI disclosure: No AI was used."
    human = PRText(head_branch="cursor/fix-blink", body=disclosure)
    unchecked = PRText(head_branch="cursor/fix-blink", body="- [ ] No AI was used\n- [x] Cursor")
    contradicted = PRText(
        body=disclosure,
        commits=(commit("Fix\n\nCo-authored-by: Cursor Agent <cursoragent@cursor.com>"),),
    )

    assert detect(human) == []
    assert tools_of(detect(unchecked)) == ["Cursor"]
    assert [h.marker for h in detect(contradicted)] == ["co-author trailer"]


def test_a_persons_own_name_as_branch_prefix_is_not_a_marker():
    person = PRText(
        author_login="devin-okafor",
        head_branch="devin/checkout-form-validation",
        commits=(commit(author_name="Devin Okafor", author_email="devin.okafor@example.com"),),
    )
    agent = PRText(
        author_login="devin-ai-integration[bot]",
        head_branch="devin/1718000000-add-cache",
        commits=(
            commit(
                author_name="Devin AI",
                author_email="158243242+devin-ai-integration[bot]@users.noreply.github.com",
            ),
        ),
    )

    assert detect(person) == []
    assert {h.marker for h in detect(agent)} == {
        "PR author bot",
        "branch prefix devin/",
        "commit author e-mail",
    }


def test_catalogue_agrees_with_the_demo_organisations_ground_truth():
    """Every AI PR of the bundled demo organisation is attributed to exactly its tool, and no
    human, dependabot or trap PR has an authoring hit."""
    from onboarding.demo_github.dataset import build_dataset

    wrong = []
    kinds = set()
    for pr in build_dataset().pull_requests:
        text = PRText(
            title=pr.title,
            body=pr.body,
            author_login=pr.author.rest_login,
            author_is_bot=pr.author.is_bot,
            head_branch=pr.head_ref,
            commits=tuple(
                CommitText(c.message, c.author_name, c.author_email, c.author_login or "")
                for c in pr.commits
            ),
            reviews=tuple(ReviewText(r.author.rest_login, r.author.is_bot) for r in pr.reviews),
        )
        authored = tools_of(h for h in detect(text) if h.kind == "authoring")
        expected = [DEMO_TOOL_NAMES[pr.ai_tool]] if pr.ai_tool else []
        kinds.add(pr.kind)
        if authored != expected:
            wrong.append((pr.repository.name, pr.number, pr.kind, authored))

    assert {"trap_claude_person", "trap_devin_person", "trap_cursor_word"} <= kinds
    assert wrong == []


def test_several_tools_and_repeated_markers_are_reported_once_each():
    trailer = "Co-authored-by: Claude <noreply@anthropic.com>"
    pr = PRText(
        head_branch="cursor/feature",
        commits=tuple(commit(f"Step {i}\n\n{trailer}") for i in range(20)),
        reviews=(ReviewText(reviewer_login="coderabbitai[bot]"),),
    )

    hits = detect(pr)

    assert sorted((h.tool, h.marker) for h in hits) == [
        ("Claude Code", "co-author trailer"),
        ("CodeRabbit", "reviewer bot"),
        ("Cursor", "branch prefix cursor/"),
    ]
    assert tools_of(hits) == ["Claude Code", "Cursor", "CodeRabbit"]


def test_evidence_is_a_short_excerpt_of_the_matching_line():
    body = "x" * 5000 + "\nCodex Task: https://chatgpt.com/codex/tasks/task_e_1 " + "y" * 400
    (hit,) = detect(PRText(body=body))

    assert "chatgpt.com/codex/tasks/" in hit.evidence
    assert len(hit.evidence) <= 160


@pytest.mark.django_db
def test_adapter_reads_commits_co_authors_and_reviews_from_the_models(team, repositories):
    now = timezone.now()
    pr = PullRequest.objects.create(
        team=team,
        repository=repositories[0],
        number=7,
        title="Add cache",
        body="",
        state=PullRequest.State.OPEN,
        author_login="ada",
        created_at=now,
        updated_at=now,
    )
    PullRequestCommit.objects.create(
        pull_request=pr,
        sha="a" * 40,
        message="Add cache",
        author_name="Ada",
        author_email="ada@example.com",
        co_authors=[{"name": "Amp", "email": "amp@ampcode.com"}],
    )
    PullRequestReview.objects.create(
        pull_request=pr,
        node_id="R1",
        state="COMMENTED",
        reviewer_login="gemini-code-assist",
        reviewer_is_bot=True,
    )

    hits = detect(pr_text_from_model(pr))

    assert tools_of(hits) == ["Amp", "Gemini"]
    assert CATALOGUE_VERSION
