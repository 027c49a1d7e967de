"""The demo GitHub's data as a client sees it: size, realism, AI markers, traps, determinism;
and ``manage.py demo_github``."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import github
import pytest

from onboarding.demo_github.dataset import build_dataset
from onboarding.demo_github.server import DemoGitHubServer
from tests.fixtures.github import ORG, SMALL_PR_COUNT, all_pull_requests
from tests.fixtures.github import pygithub_client as client

BASE_DIR = Path(__file__).resolve().parents[2]


def every_pull_request(server: DemoGitHubServer) -> list[dict]:
    gh = client(server)
    return [pr for repo in server.dataset.pulls_by_number for pr in all_pull_requests(gh, repo)]


def commit_texts(pr: dict) -> list[str]:
    return [
        f"{c['message']}\n{c['author']['name']} <{c['author']['email']}>"
        for c in (node["commit"] for node in pr["commits"]["nodes"])
    ]


def test_dataset_is_the_same_for_the_same_seed_and_anchor():
    anchor = datetime(2026, 3, 2, tzinfo=UTC)

    def fingerprint(dataset) -> list[tuple]:
        return [
            (
                pr.repository.name,
                pr.number,
                pr.title,
                pr.body,
                pr.state,
                pr.updated_at,
                pr.author.login,
                pr.head_ref,
                [(c.oid, c.message, c.authored_date) for c in pr.commits],
                [(r.state, r.submitted_at, r.author.login) for r in pr.reviews],
            )
            for pr in dataset.pull_requests
        ]

    first = fingerprint(build_dataset(anchor, pr_count=300))
    assert fingerprint(build_dataset(anchor, pr_count=300)) == first
    assert fingerprint(build_dataset(anchor, pr_count=300, seed=7)) != first


def test_demo_organisation_has_2000_prs_over_120_days_from_many_people(demo_github):
    pulls = every_pull_request(demo_github)
    now = demo_github.dataset.now

    created = [datetime.fromisoformat(pr["createdAt"]) for pr in pulls]
    assert len(pulls) == 2000
    assert (now - min(created)).days in (118, 119, 120) and max(created) < now
    assert all(datetime.fromisoformat(pr["updatedAt"]) <= now for pr in pulls)
    humans = {pr["author"]["login"] for pr in pulls if pr["author"]["__typename"] == "User"}
    assert len(humans) >= 15
    states = {
        state: sum(pr["state"] == state for pr in pulls) for state in ("MERGED", "CLOSED", "OPEN")
    }
    assert states["MERGED"] > 1200 and states["CLOSED"] > 100 and states["OPEN"] > 100
    assert any(pr["isDraft"] for pr in pulls) and any(pr["labels"]["nodes"] for pr in pulls)


def test_demo_prs_have_long_tailed_sizes_and_cycle_times_from_hours_to_days(demo_github):
    pulls = every_pull_request(demo_github)

    sizes = sorted(pr["additions"] + pr["deletions"] for pr in pulls)
    assert sizes[int(len(sizes) * 0.95)] > 5 * sizes[len(sizes) // 2]
    cycle_hours = sorted(
        (
            datetime.fromisoformat(pr["mergedAt"]) - datetime.fromisoformat(pr["createdAt"])
        ).total_seconds()
        / 3600
        for pr in pulls
        if pr["mergedAt"]
    )
    assert cycle_hours[0] < 2 and cycle_hours[-1] > 24 * 5
    review_states = {r["state"] for pr in pulls for r in pr["reviews"]["nodes"]}
    assert {"APPROVED", "CHANGES_REQUESTED", "COMMENTED"} <= review_states
    assert max(pr["commits"]["totalCount"] for pr in pulls) > 100  # more than one page of commits


MARKER_FAMILIES = {
    "Claude Code co-author": lambda pr, commits: "Claude <noreply@anthropic.com>" in commits,
    "Claude model co-author": lambda pr, commits: (
        "Claude Opus 4.5 <noreply@anthropic.com>" in commits
    ),
    "Claude Code footer": lambda pr, commits: "Generated with [Claude Code](" in (pr["body"] or ""),
    "Copilot agent author": lambda pr, commits: pr["author"]["login"] == "copilot-swe-agent",
    "Copilot tips comment": lambda pr, commits: (
        "<!-- START COPILOT CODING AGENT TIPS -->" in pr["body"]
    ),
    "Copilot commit e-mail": lambda pr, commits: "+Copilot@users.noreply.github.com" in commits,
    "Cursor agent co-author": lambda pr, commits: (
        "Cursor Agent <cursoragent@cursor.com>" in commits
    ),
    "Made with Cursor": lambda pr, commits: "Made-with: Cursor" in commits,
    "Devin bot author": lambda pr, commits: pr["author"]["login"] == "devin-ai-integration",
    "Devin run link": lambda pr, commits: "Link to Devin run: https://app.devin.ai/" in pr["body"],
    "Codex task link": lambda pr, commits: "chatgpt.com/codex/tasks/" in (pr["body"] or ""),
    "aider prefix": lambda pr, commits: re.search(r"^aider: ", commits, re.M) is not None,
    "aider author suffix": lambda pr, commits: re.search(r" \(aider\) <", commits) is not None,
    "aider co-author": lambda pr, commits: "<aider@aider.chat>" in commits,
    "Jules bot author": lambda pr, commits: pr["author"]["login"] == "google-labs-jules",
    "Amp co-author": lambda pr, commits: "Amp <amp@ampcode.com>" in commits,
    **{
        f"branch {prefix}": (lambda p: lambda pr, commits: pr["headRefName"].startswith(p))(prefix)
        for prefix in ("codex/", "claude/", "copilot/", "cursor/", "devin/")
    },
}
AI_EVIDENCE = re.compile(
    r"anthropic\.com|cursor\.com|Made-with: Cursor|Claude Code|app\.devin\.ai|chatgpt\.com/codex"
    r"|aider|ampcode|COPILOT|jules\.google"
)
TRAPS = {
    "a person named Claude": lambda pr, commits: "Claude Martin <" in commits,
    "a person named Devin": lambda pr, commits: "Devin Okafor <" in commits,
    "the word cursor": lambda pr, commits: re.search(
        r"\bcursor\b", pr["title"] + (pr["body"] or "")
    ),
    "a no-AI disclosure": lambda pr, commits: "No AI was used" in (pr["body"] or ""),
}


@pytest.mark.parametrize("family", sorted(MARKER_FAMILIES))
def test_demo_data_carries_each_ai_marker_family(demo_github_small, family):
    pulls = every_pull_request(demo_github_small)

    hits = [pr for pr in pulls if MARKER_FAMILIES[family](pr, "\n".join(commit_texts(pr)))]

    assert hits, f"no PR with {family}"


@pytest.mark.parametrize("trap", sorted(TRAPS))
def test_demo_data_has_human_prs_with_trap_texts_and_no_ai_evidence(demo_github_small, trap):
    pulls = every_pull_request(demo_github_small)

    traps = [
        pr
        for pr in pulls
        if TRAPS[trap](pr, "\n".join(commit_texts(pr)))
        and pr["author"]["__typename"] == "User"
        and not AI_EVIDENCE.search(pr["body"] + "\n".join(commit_texts(pr)) + pr["headRefName"])
    ]

    assert traps, f"no clean human PR with {trap}"


def _as_graphql_sees(pr) -> tuple[dict, str]:
    """The fields the predicates above read, straight from the generator (no server)."""
    shaped = {
        "title": pr.title,
        "body": pr.body,
        "headRefName": pr.head_ref,
        "author": {
            "login": pr.author.login,
            "__typename": "Bot" if pr.author.is_bot else "User",
        },
    }
    commits = "\n".join(f"{c.message}\n{c.author_name} <{c.author_email}>" for c in pr.commits)
    return shaped, commits


def test_small_demo_data_holds_every_marker_family_and_trap_on_30_consecutive_dates():
    """The dataset is anchored on the day it is built: its content must not depend on luck."""
    first = datetime(2026, 11, 20, tzinfo=UTC)
    missing = []
    for day in range(30):
        anchor = first + timedelta(days=day)
        dataset = build_dataset(anchor, pr_count=SMALL_PR_COUNT)
        pulls = [_as_graphql_sees(pr) for pr in dataset.pull_requests]
        for family, found in MARKER_FAMILIES.items():
            if not any(found(pr, commits) for pr, commits in pulls):
                missing.append((anchor.date(), family))
        for trap, found in TRAPS.items():
            clean = [
                pr
                for pr, commits in pulls
                if found(pr, commits)
                and pr["author"]["__typename"] == "User"
                and not AI_EVIDENCE.search(pr["body"] + commits + pr["headRefName"])
            ]
            if not clean:
                missing.append((anchor.date(), trap))

    assert missing == []


def test_manage_py_demo_github_serves_until_sigterm(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "manage.py", "demo_github", "--port", "0", "--prs", "60"],
        cwd=BASE_DIR,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        output = "".join(lines)
        api_url = re.search(r"GITHUB_API_URL=(\S+)", output).group(1)
        assert "Token: demo-token" in output
        gh = github.Github(auth=github.Auth.Token("demo-token"), base_url=api_url, retry=None)
        assert gh.get_repo(f"{ORG}/api").full_name == f"{ORG}/api"
    finally:
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=15)
    assert process.returncode == 0
    assert "Demo GitHub stopped." in rest
