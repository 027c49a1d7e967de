"""The llm_processing stage end to end on PR rows in the database: signatures for every PR,
the LLM for the most recent unsettled ones (through the local OpenAI-compatible server), the
final verdict, the cache, fallbacks, and the run's summary and progress."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from onboarding.models import GitHubConnection, Repository
from pipeline import transitions
from pipeline.models import (
    AIVerdict,
    PipelineRun,
    PullRequest,
    PullRequestCommit,
    PullRequestReview,
    StageAttempt,
)
from pipeline.stages import detect, sync
from pipeline.status import STAGE_ORDER, PipelineStatus
from tests.conftest import wait_for
from tests.fixtures.github import DEMO_TOOL_NAMES

NOW = timezone.now()


def make_pr(repository, number: int, body: str = "", age_days: float = 0, **fields) -> PullRequest:
    created = NOW - timedelta(days=age_days)
    commit_message = fields.pop("commit_message", f"Change {number}")
    pr = PullRequest.objects.create(
        team=repository.team,
        repository=repository,
        number=number,
        title=fields.pop("title", f"Change {number}"),
        body=body,
        state=PullRequest.State.MERGED,
        author_login=fields.pop("author_login", "ada"),
        created_at=created,
        updated_at=created,
        merged_at=created + timedelta(hours=5),
        **fields,
    )
    PullRequestCommit.objects.create(
        pull_request=pr,
        sha=f"{number:040x}",
        message=commit_message,
        author_name="Ada",
        author_email="ada@example.com",
    )
    return pr


def make_run(team, repositories) -> PipelineRun:
    return PipelineRun.objects.create(
        team=team,
        stage=PipelineStatus.LLM_PROCESSING,
        repository_ids=[r.pk for r in repositories],
        started_at=NOW,
    )


def llm_configured(server, **extra):
    values = {
        "OPENAI_API_KEY": "test-key",
        "OPENAI_BASE_URL": server.base_url,
        "LLM_MODEL": "stub-model",
        "LLM_TIMEOUT_SECONDS": 1.0,
        "LLM_MAX_RETRIES": 1,
    }
    return override_settings(**{**values, **extra})


def verdict_of(pr: PullRequest) -> AIVerdict:
    return AIVerdict.objects.get(pull_request=pr)


@pytest.fixture
def mixed_prs(repositories):
    repo = repositories[0]
    return {
        "claude": make_pr(
            repo,
            1,
            commit_message="Add cache\n\nCo-Authored-By: Claude <noreply@anthropic.com>",
        ),
        "llm_positive": make_pr(repo, 2, "I let the agent write this. LLM-positive", age_days=1),
        "llm_unsure": make_pr(repo, 3, "Tidy. LLM-unsure", age_days=2),
        "human": make_pr(repo, 4, "No AI was used. Fixes the cursor jump.", age_days=3),
    }


@pytest.mark.django_db
@override_settings(OPENAI_API_KEY="", OPENAI_BASE_URL="")
def test_without_llm_the_stage_uses_signatures_only_and_says_so(team, repositories, mixed_prs):
    run = make_run(team, repositories)

    counts = detect.run(run)

    claude = verdict_of(mixed_prs["claude"])
    assert claude.is_ai_assisted and claude.source == AIVerdict.Source.SIGNATURE
    assert claude.tools == ["Claude Code"]
    assert claude.signature_hits[0]["evidence"] == (
        "Co-Authored-By: Claude <noreply@anthropic.com>"
    )
    for name in ("llm_positive", "llm_unsure", "human"):
        verdict = verdict_of(mixed_prs[name])
        assert not verdict.is_ai_assisted and verdict.source == AIVerdict.Source.NONE
        assert verdict.llm_assisted is None
    run.refresh_from_db()
    assert run.summary["llm"]["configured"] is False
    assert "signatures only" in run.summary["llm"]["message"]
    assert counts["prs"] == 4 and counts["ai_assisted"] == 1 and counts["llm_sent"] == 0
    assert run.progress["prs_to_analyse"] == 4 and run.progress["prs_analysed"] == 4


@pytest.mark.django_db
def test_llm_settles_what_signatures_did_not(team, repositories, mixed_prs, llm_server):
    run = make_run(team, repositories)

    with llm_configured(llm_server):
        counts = detect.run(run)

    # The signature PR is never sent; the three others are.
    assert len(llm_server.completions()) == 3
    assert llm_server.calls_mentioning("noreply@anthropic.com") == []
    positive = verdict_of(mixed_prs["llm_positive"])
    assert positive.is_ai_assisted and positive.source == AIVerdict.Source.LLM
    assert positive.tools == ["Cursor"] and positive.llm_reason
    unsure = verdict_of(mixed_prs["llm_unsure"])  # 0.40 < threshold 0.7
    assert not unsure.is_ai_assisted and unsure.llm_confidence == pytest.approx(0.4)
    assert unsure.source == AIVerdict.Source.NONE
    human = verdict_of(mixed_prs["human"])
    assert not human.is_ai_assisted and human.llm_assisted is False
    run.refresh_from_db()
    llm_summary = run.summary["llm"]
    assert llm_summary["configured"] is True and llm_summary["classified"] == 3
    assert llm_summary["message"] == ""
    assert (
        llm_summary["total_tokens"]
        == llm_summary["prompt_tokens"] + llm_summary["completion_tokens"]
        > 0
    )
    assert counts["ai_assisted"] == 2 and counts["llm_assisted"] == 1
    assert run.progress["prs_analysed"] == 4 and run.progress["llm_classified"] == 3


@pytest.mark.django_db
def test_a_rerun_reuses_cached_answers_and_duplicates_nothing(
    team, repositories, mixed_prs, llm_server
):
    run = make_run(team, repositories)
    with llm_configured(llm_server):
        detect.run(run)
        first_tokens = PipelineRun.objects.get(pk=run.pk).summary["llm"]["total_tokens"]
        counts = detect.run(run)

    assert len(llm_server.completions()) == 3  # none more
    assert counts["llm_cached"] == 3 and counts["llm_sent"] == 0
    assert AIVerdict.objects.count() == 4
    assert verdict_of(mixed_prs["llm_positive"]).is_ai_assisted
    run.refresh_from_db()
    assert run.summary["llm"]["total_tokens"] == first_tokens


@pytest.mark.django_db
def test_a_changed_pr_is_asked_again(team, repositories, mixed_prs, llm_server):
    run = make_run(team, repositories)
    with llm_configured(llm_server):
        detect.run(run)
        PullRequest.objects.filter(pk=mixed_prs["human"].pk).update(body="Rewritten. LLM-positive")
        detect.run(run)

    assert len(llm_server.completions()) == 4
    assert len(llm_server.calls_mentioning("Rewritten")) == 1
    assert verdict_of(mixed_prs["human"]).is_ai_assisted


@pytest.mark.django_db
def test_llm_failures_fall_back_to_signatures_and_are_counted(team, repositories, llm_server):
    repo = repositories[0]
    prs = {
        kind: make_pr(repo, n, f"Body {kind}", age_days=n)
        for n, kind in enumerate(["LLM-timeout", "LLM-refuse", "LLM-malformed", "LLM-500"], 1)
    }
    ok = make_pr(repo, 9, "LLM-positive", age_days=9)
    llm_server.timeout_sleep = 3
    run = make_run(team, repositories)

    with llm_configured(llm_server, LLM_TIMEOUT_SECONDS=0.5, LLM_MAX_RETRIES=0):
        counts = detect.run(run)

    for kind, pr in prs.items():
        verdict = verdict_of(pr)
        assert not verdict.is_ai_assisted and verdict.source == AIVerdict.Source.NONE, kind
        assert verdict.llm_error and verdict.llm_content_hash == "", kind
    assert verdict_of(prs["LLM-timeout"]).llm_error.startswith("timeout")
    assert verdict_of(ok).is_ai_assisted
    run.refresh_from_db()
    assert run.summary["llm"]["failed"] == {
        "timeout": 1,
        "refusal": 1,
        "malformed": 1,
        "server_error": 1,
    }
    assert counts["llm_failed"] == 4
    assert run.summary["llm"]["message"].startswith("The LLM could not classify 4 of 5 PRs")
    # Failed answers are not cached: the next attempt asks again.
    with llm_configured(llm_server, LLM_TIMEOUT_SECONDS=0.5, LLM_MAX_RETRIES=0):
        detect.run(run)
    assert len(llm_server.calls_mentioning("LLM-refuse")) == 2
    assert len(llm_server.calls_mentioning("LLM-positive")) == 1


@pytest.mark.django_db
def test_only_the_most_recent_unsettled_prs_go_to_the_llm(team, repositories, llm_server):
    repo = repositories[0]
    signed = make_pr(repo, 1, "", age_days=0, head_branch="codex/fix")
    recent = [make_pr(repo, n, f"recent {n}", age_days=n) for n in (2, 3)]
    older = [make_pr(repo, n, f"older {n}", age_days=n) for n in (10, 11)]
    run = make_run(team, repositories)

    with llm_configured(llm_server, LLM_ONBOARDING_LIMIT=2):
        detect.run(run)

    sent = {r.user_text for r in llm_server.completions()}
    assert len(sent) == 2
    assert all(any(f"recent {pr.number}" in text for text in sent) for pr in recent)
    for pr in older:
        assert verdict_of(pr).llm_assisted is None and not verdict_of(pr).is_ai_assisted
    assert verdict_of(signed).tools == ["Codex"]


@pytest.mark.django_db
@override_settings(OPENAI_API_KEY="", OPENAI_BASE_URL="")
def test_only_the_runs_repositories_are_analysed(team, repositories):
    inside = make_pr(repositories[0], 1, "", head_branch="devin/1-x")
    outside = make_pr(repositories[1], 1, "", head_branch="devin/2-y")
    run = make_run(team, repositories[:1])

    counts = detect.run(run)

    assert counts["prs"] == 1
    assert verdict_of(inside).is_ai_assisted
    assert not AIVerdict.objects.filter(pull_request=outside).exists()


@pytest.mark.django_db
@override_settings(OPENAI_API_KEY="", OPENAI_BASE_URL="")
def test_a_team_without_prs_completes_with_zero_counts(team, repositories):
    counts = detect.run(make_run(team, repositories))

    assert counts["prs"] == 0 and counts["ai_assisted"] == 0


@pytest.mark.django_db(transaction=True)
def test_the_stage_runs_in_a_real_worker_with_the_llm(
    start_worker, team, repositories, mixed_prs, llm_server
):
    quick = "tests.pipeline.fault_stages.quick"
    stages = {s: quick for s in STAGE_ORDER if s != PipelineStatus.LLM_PROCESSING}
    start_worker(
        {
            "PIPELINE_STAGE_OVERRIDES": ",".join(f"{s}={path}" for s, path in stages.items()),
            "TEST_OPENAI_API_KEY": "test-key",
            "TEST_OPENAI_BASE_URL": llm_server.base_url,
        }
    )

    run = transitions.start_pipeline(team, [r.pk for r in repositories])

    wait_for(lambda: PipelineRun.objects.get(pk=run.pk).state == PipelineRun.State.COMPLETE)
    attempt = StageAttempt.objects.get(run=run, stage=PipelineStatus.LLM_PROCESSING)
    assert attempt.outcome == StageAttempt.Outcome.SUCCEEDED
    assert attempt.counts["ai_assisted"] == 2 and attempt.counts["llm_sent"] == 3
    assert PipelineRun.objects.get(pk=run.pk).summary["llm"]["classified"] == 3
    assert verdict_of(mixed_prs["llm_positive"]).source == AIVerdict.Source.LLM


@pytest.mark.django_db(transaction=True)
def test_progress_moves_while_the_llm_answers(team, repositories, llm_server):
    repo = repositories[0]
    for n in range(1, 33):
        make_pr(repo, n, f"change {n}", age_days=n)
    llm_server.latency = 0.25
    run = make_run(team, repositories)
    seen: list[int] = []
    failures: list[BaseException] = []

    def stage() -> None:
        try:
            with llm_configured(llm_server, LLM_CONCURRENCY=2):
                detect.run(run)
        except BaseException as exc:  # reported by the test thread
            failures.append(exc)
        finally:
            connection.close()

    worker = threading.Thread(target=stage)
    worker.start()
    while worker.is_alive():
        progress = PipelineRun.objects.get(pk=run.pk).progress
        if progress.get("llm_to_classify"):
            seen.append(progress["prs_analysed"])
        time.sleep(0.1)
    worker.join()

    assert not failures
    intermediate = sorted({value for value in seen if 0 < value < 32})
    assert len(intermediate) >= 2, seen  # the page saw the count climb, not jump to the end
    assert PipelineRun.objects.get(pk=run.pk).progress["prs_analysed"] == 32


@pytest.mark.django_db
def test_an_ai_review_alone_does_not_make_a_pr_ai_assisted(team, repositories, llm_server):
    repo = repositories[0]
    reviewed = make_pr(repo, 1, "Plain human change")
    reviewed_and_agent = make_pr(repo, 2, "Agent wrote it. LLM-positive", age_days=1)
    for pr in (reviewed, reviewed_and_agent):
        PullRequestReview.objects.create(
            pull_request=pr,
            node_id=f"R{pr.number}",
            state="COMMENTED",
            reviewer_login="coderabbitai[bot]",
            reviewer_is_bot=True,
        )
    run = make_run(team, repositories)

    with llm_configured(llm_server):
        detect.run(run)

    human = verdict_of(reviewed)
    assert not human.is_ai_assisted and human.tools == []
    assert human.signature_hits == [
        {
            "tool": "CodeRabbit",
            "marker": "reviewer bot",
            "evidence": "reviewed by coderabbitai[bot]",
            "kind": "review",
        }
    ]
    agent = verdict_of(reviewed_and_agent)
    assert agent.is_ai_assisted and agent.source == AIVerdict.Source.LLM
    assert agent.tools == ["Cursor", "CodeRabbit"]
    assert len(llm_server.completions()) == 2  # the review did not settle either PR


@pytest.mark.django_db
@override_settings(OPENAI_API_KEY="", OPENAI_BASE_URL="")
def test_on_the_synced_demo_organisation_exactly_the_ai_prs_are_flagged(
    team, demo_github_small, django_capture_on_commit_callbacks
):
    """The real sync over HTTP from the bundled demo GitHub, then this stage: every PR's verdict
    matches the demo's ground truth (AI kinds with their tool; humans and traps clean)."""
    github = GitHubConnection(
        team=team, kind="demo", api_url=demo_github_small.api_url, account_login="octo-demo"
    )
    github.set_token(demo_github_small.token)
    github.save()
    repositories = [
        Repository.objects.create(
            team=team, github_id=repo.database_id, full_name=repo.full_name, selected=True
        )
        for repo in demo_github_small.dataset.repositories
    ]
    run = transitions.start_pipeline(team, [r.pk for r in repositories])
    with django_capture_on_commit_callbacks(execute=True):
        sync.run(run)

    counts = detect.run(run)

    truth = {
        (pr.repository.full_name, pr.number): pr for pr in demo_github_small.dataset.pull_requests
    }
    wrong = []
    kinds = set()
    for verdict in AIVerdict.objects.select_related("pull_request__repository"):
        pr = verdict.pull_request
        demo = truth[(pr.repository.full_name, pr.number)]
        kinds.add(demo.kind)
        expected = DEMO_TOOL_NAMES.get(demo.ai_tool or "")
        got = verdict.tools[0] if verdict.is_ai_assisted else None
        if got != expected:
            wrong.append((pr.repository.full_name, pr.number, demo.kind, verdict.tools))
    assert counts["prs"] == AIVerdict.objects.count() > 0
    assert {"claude_code", "trap_claude_person", "trap_no_ai_disclosure"} <= kinds
    assert wrong == []


@pytest.mark.django_db
def test_a_rejected_api_key_leaves_signature_verdicts_and_a_clear_note(
    team, repositories, mixed_prs, llm_server
):
    llm_server.fail_next(1, status=401)
    run = make_run(team, repositories)

    with llm_configured(llm_server, LLM_CONCURRENCY=1, OPENAI_API_KEY="sk-secret-123"):
        counts = detect.run(run)

    assert len(llm_server.completions()) == 1  # no storm of refused calls
    assert counts["ai_assisted"] == 1  # the signature PR; the rest fell back
    run.refresh_from_db()
    note = run.summary["llm"]["message"]
    assert "could not classify 3 of 3 PRs" in note and "HTTP 401" in note
    stored = json.dumps(run.summary) + json.dumps(
        list(AIVerdict.objects.values_list("llm_error", flat=True))
    )
    assert "sk-secret-123" not in stored


@pytest.mark.django_db
def test_the_llm_batch_takes_ambiguous_ai_text_first(team, repositories, llm_server):
    repo = repositories[0]
    recent = [make_pr(repo, n, f"recent {n}", age_days=n) for n in (1, 2, 3)]
    # Older, and no signature or clear disclosure: but it talks about an AI tool.
    ambiguous = make_pr(repo, 9, "Claude helped me think through the locking here.", age_days=9)
    disclosed = make_pr(repo, 10, "Drafted with ChatGPT, then edited by hand.", age_days=10)
    run = make_run(team, repositories)

    with llm_configured(llm_server, LLM_ONBOARDING_LIMIT=2):
        detect.run(run)

    sent = [r.user_text for r in llm_server.completions()]
    assert len(sent) == 2
    assert any("Claude helped me" in text for text in sent)  # first, though older
    assert any("recent 1" in text for text in sent)  # then the most recent
    assert not any("Drafted with ChatGPT" in text for text in sent)  # settled by prose
    assert verdict_of(disclosed).is_ai_assisted and verdict_of(disclosed).tools == ["ChatGPT"]
    assert verdict_of(ambiguous).llm_assisted is not None
    assert all(verdict_of(pr).llm_assisted is None for pr in recent[1:])
    run.refresh_from_db()
    assert run.summary["llm"]["prioritised"] == 1
