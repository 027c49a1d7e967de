"""What a page of GitHub PR nodes becomes in the database: bulk upserts keyed by (repository,
number), (pull request, sha) and (pull request, review id), and the derived fields the later
stages read."""

from __future__ import annotations

import pytest
from django.utils import timezone

from pipeline.models import PipelineRun, PullRequest, PullRequestCommit, PullRequestReview
from pipeline.stages import sync

pytestmark = pytest.mark.django_db


def pr_node(number: int, **overrides) -> dict:
    node = {
        "id": f"PR_{number}",
        "number": number,
        "title": f"Change {number}",
        "body": "Body",
        "state": "MERGED",
        "isDraft": False,
        "createdAt": "2026-11-01T10:00:00Z",
        "updatedAt": "2026-11-02T10:00:00Z",
        "mergedAt": "2026-11-02T10:00:00Z",
        "closedAt": "2026-11-02T10:00:00Z",
        "additions": 10,
        "deletions": 2,
        "changedFiles": 3,
        "headRefName": "feature/x",
        "author": {"__typename": "User", "login": "ada"},
        "labels": {"nodes": [{"name": "backend"}]},
        "commits": {
            "totalCount": 1,
            "pageInfo": {"hasNextPage": False, "endCursor": None},
            "nodes": [
                {
                    "commit": {
                        "oid": f"{number:040x}",
                        "message": "Add thing\n\nCo-authored-by: Claude <noreply@anthropic.com>",
                        "authoredDate": "2026-11-01T09:00:00Z",
                        "author": {
                            "name": "Ada L",
                            "email": "ada@example.com",
                            "user": {"login": "ada"},
                        },
                    }
                }
            ],
        },
        "reviews": {
            "totalCount": 3,
            "nodes": [
                {
                    "id": f"PRR_{number}_1",
                    "state": "COMMENTED",
                    "submittedAt": "2026-11-01T10:05:00Z",
                    "author": {"__typename": "Bot", "login": "coderabbitai"},
                },
                {
                    "id": f"PRR_{number}_2",
                    "state": "CHANGES_REQUESTED",
                    "submittedAt": "2026-11-01T12:00:00Z",
                    "author": {"__typename": "User", "login": "grace"},
                },
                {
                    "id": f"PRR_{number}_3",
                    "state": "APPROVED",
                    "submittedAt": "2026-11-02T09:00:00Z",
                    "author": {"__typename": "User", "login": "grace"},
                },
            ],
        },
    }
    node.update(overrides)
    return node


@pytest.fixture
def run(team, repositories) -> PipelineRun:
    return PipelineRun.objects.create(
        team=team,
        stage="syncing",
        repository_ids=[r.pk for r in repositories],
        started_at=timezone.now(),
    )


def test_a_page_becomes_prs_with_commits_reviews_and_derived_fields(run, repositories):
    written = sync.save_page(run, repositories[0], [pr_node(1), pr_node(2, title="Revert x")])

    assert written == 2
    pr = PullRequest.objects.get(repository=repositories[0], number=1)
    assert pr.team_id == run.team_id
    assert pr.state == "merged" and pr.labels == ["backend"] and pr.head_branch == "feature/x"
    # First review: the first human reviewer, not the bot's instant comment.
    assert pr.first_review_at.isoformat() == "2026-11-01T12:00:00+00:00"
    assert pr.review_rounds == 1
    assert pr.is_revert is False
    assert PullRequest.objects.get(number=2).is_revert is True
    commit = PullRequestCommit.objects.get(pull_request=pr)
    assert commit.co_authors == [{"name": "Claude", "email": "noreply@anthropic.com"}]
    assert commit.author_login == "ada"
    bot_review = PullRequestReview.objects.get(node_id="PRR_1_1")
    # Stored the way REST names bots, which is how the AI markers name them.
    assert bot_review.reviewer_login == "coderabbitai[bot]" and bot_review.reviewer_is_bot


def test_saving_the_same_page_again_updates_without_duplicates(run, repositories):
    sync.save_page(run, repositories[0], [pr_node(1), pr_node(2)])
    changed = pr_node(2, title="Renamed", state="CLOSED")
    changed["reviews"]["nodes"][2]["state"] = "DISMISSED"

    sync.save_page(run, repositories[0], [pr_node(1), changed])

    assert PullRequest.objects.count() == 2
    assert PullRequestCommit.objects.count() == 2
    assert PullRequestReview.objects.count() == 6
    pr = PullRequest.objects.get(number=2)
    assert (pr.title, pr.state) == ("Renamed", "closed")
    assert PullRequestReview.objects.get(node_id="PRR_2_3").state == "DISMISSED"


def test_commits_rewritten_by_a_force_push_are_replaced(run, repositories):
    before = pr_node(5)
    before["commits"]["nodes"].append(
        {"commit": {**before["commits"]["nodes"][0]["commit"], "oid": "f" * 40}}
    )
    sync.save_page(run, repositories[0], [before])
    after = pr_node(5)
    after["commits"]["nodes"][0]["commit"]["oid"] = "a" * 40
    after["commits"]["pageInfo"] = {"hasNextPage": False, "endCursor": None}

    sync.save_page(run, repositories[0], [after])

    shas = PullRequestCommit.objects.filter(pull_request__number=5).values_list("sha", flat=True)
    assert list(shas) == ["a" * 40]


def test_the_same_number_in_two_repositories_is_two_prs(run, repositories):
    sync.save_page(run, repositories[0], [pr_node(7)])
    sync.save_page(run, repositories[1], [pr_node(7)])

    assert PullRequest.objects.filter(number=7).count() == 2


def test_a_bot_author_and_a_deleted_account_are_recorded_as_such(run, repositories):
    bot = pr_node(3, author={"__typename": "Bot", "login": "copilot-swe-agent"})
    ghost = pr_node(4, author=None)

    sync.save_page(run, repositories[0], [bot, ghost])

    pr = PullRequest.objects.get(number=3)
    assert (pr.author_login, pr.author_is_bot) == ("copilot-swe-agent[bot]", True)
    assert PullRequest.objects.get(number=4).author_login == "ghost"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("x\n\nCo-authored-by: Cursor Agent <cursoragent@cursor.com>", ["cursoragent@cursor.com"]),
        ("x\n\nCO-AUTHORED-BY:   Amp <amp@ampcode.com>  ", ["amp@ampcode.com"]),
        (
            "x\n\nCo-authored-by: A <a@x.dev>\nCo-authored-by: aider (gpt-4o) <aider@aider.chat>",
            ["a@x.dev", "aider@aider.chat"],
        ),
        ("Mentions Co-authored-by: inline, not a trailer <nope@x.dev> here", []),
        ("No trailers at all", []),
    ],
)
def test_co_author_trailers_are_parsed_from_commit_messages(message, expected):
    assert [c["email"] for c in sync.parse_co_authors(message)] == expected
