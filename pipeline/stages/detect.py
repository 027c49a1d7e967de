"""The llm_processing stage: which PRs were AI-assisted, and why.

1. Signatures for every PR of the run's repositories (fast, always on), upserted in batches.
2. The LLM for up to ``LLM_ONBOARDING_LIMIT`` PRs the signatures did not settle: first those
   whose text talks about AI without a clear disclosure (ambiguous prose), then the most recent;
   skipping those whose (content hash, prompt version) already has an answer, so a retried
   stage does not pay twice. The batch is chosen after every PR's signatures are known.

Final verdict: a signature hit of authorship wins; otherwise the LLM's verdict when its
confidence reaches ``LLM_CONFIDENCE_THRESHOLD``; otherwise not assisted. An AI *review*
(CodeRabbit, Copilot's reviewer, Gemini Code Assist) is kept as evidence and among the tools,
but alone does not make a PR AI-assisted: the question is who wrote the change, and review bots
on every PR would otherwise make every PR "AI". Re-running updates the one verdict row per PR,
never adds another. Without an LLM configured the stage completes on signatures alone
and ``run.summary["llm"]["configured"]`` says so.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection
from django.db.models import Prefetch, Q
from django.utils import timezone

from onboarding.models import Repository
from pipeline import llm
from pipeline.models import (
    AIVerdict,
    PipelineRun,
    PullRequest,
    PullRequestCommit,
    PullRequestReview,
    RunKind,
)
from pipeline.progress import report
from pipeline.signatures import (
    AUTHORING,
    CATALOGUE_VERSION,
    PRText,
    detect,
    needs_llm,
    pr_text_from_model,
    settles,
)

BATCH_SIZE = 500
# Write LLM answers and progress at least this often while calls are in flight.
FLUSH_EVERY_SECONDS = 1.0
FLUSH_EVERY_OUTCOMES = 16

SIGNATURE_FIELDS = ["team", "signature_hits", "catalogue_version"]
FINAL_FIELDS = ["is_ai_assisted", "source", "tools", "updated_at"]
LLM_FIELDS = [
    "llm_assisted",
    "llm_tools",
    "llm_confidence",
    "llm_reason",
    "llm_content_hash",
    "llm_prompt_version",
    "llm_error",
]


def apply_final_verdict(verdict: AIVerdict, *, use_llm: bool) -> None:
    """Set is_ai_assisted/source/tools from the signature hits and the LLM answer."""
    threshold = settings.LLM_CONFIDENCE_THRESHOLD
    llm_counts = (
        use_llm
        and verdict.llm_assisted is not None
        and verdict.llm_prompt_version == llm.PROMPT_VERSION
        and (verdict.llm_confidence or 0) >= threshold
    )
    hits = verdict.signature_hits or []
    authored_by = {h["tool"] for h in hits if h.get("kind", AUTHORING) == AUTHORING}
    reviewed_by = {h["tool"] for h in hits} - authored_by
    if authored_by:
        verdict.is_ai_assisted = True
        verdict.source = AIVerdict.Source.SIGNATURE
        verdict.tools = _ordered(authored_by) + _ordered(reviewed_by)
    elif llm_counts:
        verdict.is_ai_assisted = bool(verdict.llm_assisted)
        verdict.source = AIVerdict.Source.LLM
        verdict.tools = (
            _ordered(set(verdict.llm_tools) - reviewed_by) + _ordered(reviewed_by)
            if verdict.llm_assisted
            else []
        )
    else:
        verdict.is_ai_assisted = False
        verdict.source = AIVerdict.Source.NONE
        verdict.tools = []


def _ordered(tools: set[str]) -> list[str]:
    """Tools in catalogue order (stable across runs, so re-runs rewrite identical rows)."""
    return [tool for tool in llm.TOOL_CHOICES if tool in tools]


@dataclass
class LLMTally:
    """What the run summary and the status page say about the LLM."""

    configured: bool
    model: str = ""
    candidates: int = 0
    cached: int = 0
    sent: int = 0
    classified: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    earlier_attempts_tokens: int = 0
    last_error: str = ""
    prioritised: int = 0  # candidates chosen first because their text talks about AI

    def as_json(self) -> dict:
        if not self.configured:
            return {
                "configured": False,
                "message": "No LLM is configured: AI detection used signatures only.",
            }
        this_attempt = self.prompt_tokens + self.completion_tokens
        failed_total = sum(self.failed.values())
        message = ""
        if failed_total:
            cause = f" ({self.last_error})" if self.last_error else ""
            message = (
                f"The LLM could not classify {failed_total} of {self.candidates} PRs{cause}; "
                "signatures alone judged them."
            )
        return {
            "configured": True,
            "model": self.model,
            "prompt_version": llm.PROMPT_VERSION,
            "candidates": self.candidates,
            "prioritised": self.prioritised,
            "cached": self.cached,
            "sent": self.sent,
            "classified": self.classified,
            "failed": dict(self.failed),
            "failed_total": failed_total,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            # Tokens the whole run paid for, including attempts before a retry.
            "total_tokens": self.earlier_attempts_tokens + this_attempt,
            "last_error": self.last_error,
            "message": message,
        }


def llm_limit(run: PipelineRun) -> int:
    """PRs one run may send to the LLM: scheduled runs have their own (larger) cap."""
    if run.kind == RunKind.ONBOARDING:
        return settings.LLM_ONBOARDING_LIMIT
    return settings.LLM_NIGHTLY_LIMIT


def run(run: PipelineRun) -> dict:
    repository_ids = run.repository_ids or list(
        Repository.objects.filter(team_id=run.team_id, selected=True).values_list("pk", flat=True)
    )
    prs = PullRequest.objects.filter(team_id=run.team_id, repository_id__in=repository_ids)
    if run.kind == RunKind.NIGHTLY:
        # Only what this run's sync wrote (new or changed PRs), and any PR still without a
        # verdict; a re-score run looks at everything again.
        prs = prs.filter(Q(synced_at__gte=run.started_at) | Q(ai_verdict__isnull=True))
    ordered_ids = list(prs.order_by("-created_at", "-pk").values_list("pk", flat=True))
    total = len(ordered_ids)
    config = llm.LLMSettings.from_django()
    tally = LLMTally(configured=config is not None)
    step = LLMStep(run, config, tally) if config is not None else None
    report(run, prs_to_analyse=total, prs_analysed=0)

    signature_assisted = 0
    # The LLM's batch (capped): PRs whose text talks about AI but that no signature settled
    # come first, then the most recent unsettled ones; newest first within each group.
    limit = llm_limit(run) if step is not None else 0
    hinted: list[tuple[int, PRText]] = []
    plain: list[tuple[int, PRText]] = []
    try:
        for start in range(0, total, BATCH_SIZE):
            chunk = ordered_ids[start : start + BATCH_SIZE]
            rows, unsettled = _signature_verdicts(run, chunk, use_llm=step is not None)
            AIVerdict.objects.bulk_create(
                rows,
                update_conflicts=True,
                unique_fields=["pull_request"],
                update_fields=SIGNATURE_FIELDS + FINAL_FIELDS,
            )
            signature_assisted += sum(1 for r in rows if r.source == AIVerdict.Source.SIGNATURE)
            for pk, text in unsettled:
                group = hinted if needs_llm(text) else plain
                if len(group) < limit:
                    group.append((pk, text))
            if step is None:
                report(run, prs_analysed=min(start + BATCH_SIZE, total))
        if step is not None:
            candidates = (hinted + plain)[:limit]
            tally.prioritised = len(hinted[:limit])
            step.add(candidates)
            step.settled = total - len(step.candidates)
            step.start()
            step.finish()
    finally:
        if step is not None:
            step.close()
    _write_llm_summary(run, tally)
    # llm_classified counts PRs the LLM step is done with (answered, cached or fallen back);
    # the summary says how many fell back.
    report(run, prs_analysed=total, llm_classified=tally.candidates)

    verdicts = AIVerdict.objects.filter(pull_request__in=prs)
    return {
        "prs": total,
        "ai_assisted": verdicts.filter(is_ai_assisted=True).count(),
        "signature_assisted": signature_assisted,
        "llm_assisted": verdicts.filter(is_ai_assisted=True, source=AIVerdict.Source.LLM).count(),
        "llm_sent": tally.sent,
        "llm_cached": tally.cached,
        "llm_failed": sum(tally.failed.values()),
        "catalogue_version": CATALOGUE_VERSION,
    }


def _signature_verdicts(
    run: PipelineRun, chunk: list[int], *, use_llm: bool
) -> tuple[list[AIVerdict], list[tuple[int, PRText]]]:
    """Verdict rows for the PRs ``chunk`` (newest first) and the PRs no signature settled."""
    batch = PullRequest.objects.filter(pk__in=chunk).prefetch_related(
        Prefetch(
            "commits",
            queryset=PullRequestCommit.objects.only(
                "pull_request_id",
                "message",
                "author_name",
                "author_email",
                "author_login",
                "co_authors",
            ).order_by("authored_at", "pk"),
        ),
        Prefetch(
            "reviews",
            queryset=PullRequestReview.objects.only(
                "pull_request_id", "reviewer_login", "reviewer_is_bot"
            ).order_by("submitted_at", "pk"),  # a stable order keeps the content hash stable
        ),
    )
    by_id = {pr.pk: pr for pr in batch}
    existing = {v.pull_request_id: v for v in AIVerdict.objects.filter(pull_request_id__in=chunk)}
    rows: list[AIVerdict] = []
    unsettled: list[tuple[int, PRText]] = []
    for pk in chunk:
        pr = by_id.get(pk)
        if pr is None:  # deleted since we listed it
            continue
        text = pr_text_from_model(pr)
        hits = detect(text)
        # A fresh row (no pk): the upsert is keyed on the PR, and it leaves the stored LLM
        # answer alone; the answer is copied only to compute the final verdict.
        verdict = AIVerdict(
            pull_request_id=pk,
            team_id=run.team_id,
            signature_hits=[hit.as_json() for hit in hits],
            catalogue_version=CATALOGUE_VERSION,
        )
        previous = existing.get(pk)
        if previous is not None:
            for name in LLM_FIELDS:
                setattr(verdict, name, getattr(previous, name))
        apply_final_verdict(verdict, use_llm=use_llm)
        rows.append(verdict)
        if not settles(hits):  # an AI review alone leaves authorship to the LLM
            unsettled.append((pk, text))
    return rows, unsettled


class LLMStep:
    """The LLM for the PRs signatures did not settle: collects the candidates, skips those
    already answered for the same content and prompt, classifies the rest in the background
    and writes answers, summary and progress as they come (in the stage's own thread)."""

    def __init__(self, run: PipelineRun, config: llm.LLMSettings, tally: LLMTally) -> None:
        self.run = run
        self.config = config
        self.tally = tally
        self.limit = llm_limit(run)
        self.candidates: list[tuple[int, PRText]] = []
        self.settled = 0  # PRs done without the LLM (for the progress count)
        self.finished = 0  # candidates answered, cached or fallen back
        self.job: llm.Classification | None = None
        self.started = False
        self.verdicts: dict[int, AIVerdict] = {}
        self.pending: list[llm.LLMOutcome] = []
        self.last_flush = time.monotonic()
        tally.model = config.model
        tally.earlier_attempts_tokens = _earlier_tokens(run)

    def add(self, unsettled: list[tuple[int, PRText]]) -> None:
        if not self.started:
            self.candidates.extend(unsettled[: max(0, self.limit - len(self.candidates))])

    def start(self) -> None:
        if self.started:
            return
        self.started = True
        self.verdicts = {
            v.pull_request_id: v
            for v in AIVerdict.objects.filter(pull_request_id__in=[pk for pk, _ in self.candidates])
        }
        requests: list[llm.LLMRequest] = []
        for pk, text in self.candidates:
            request = llm.build_request(pk, text, self.config.model)
            stored = self.verdicts[pk]
            if (
                stored.llm_content_hash == request.content_hash
                and stored.llm_prompt_version == llm.PROMPT_VERSION
                and stored.llm_assisted is not None
            ):
                self.tally.cached += 1
            else:
                requests.append(request)
        self.tally.candidates = len(self.candidates)
        self.finished = self.tally.cached
        if requests:
            self.job = llm.Classification(requests, self.config)
        self._report(llm_to_classify=len(self.candidates))

    def write(self, outcomes: list[llm.LLMOutcome], *, force: bool = False) -> None:
        """Buffer ``outcomes``; write them when enough have come or enough time has passed."""
        self.pending.extend(outcomes)
        due = (
            force
            or len(self.pending) >= FLUSH_EVERY_OUTCOMES
            or time.monotonic() - self.last_flush >= FLUSH_EVERY_SECONDS
        )
        if not due:
            return
        if self.pending:
            rows = [_record_outcome(self.verdicts[o.key], o, self.tally) for o in self.pending]
            AIVerdict.objects.bulk_update(rows, LLM_FIELDS + FINAL_FIELDS)
            self.finished += len(self.pending)
            self.pending.clear()
            _write_llm_summary(self.run, self.tally)
        self.last_flush = time.monotonic()
        self._report()

    def finish(self) -> None:
        if self.job is not None:
            for outcome in self.job:
                self.write([outcome])
        self.write([], force=True)

    def close(self) -> None:
        if self.job is not None:
            self.job.close()

    def _report(self, **extra: int) -> None:
        report(
            self.run,
            prs_analysed=self.settled + self.finished,
            llm_classified=self.finished,
            **extra,
        )


def _record_outcome(verdict: AIVerdict, outcome: llm.LLMOutcome, tally: LLMTally) -> AIVerdict:
    tally.prompt_tokens += outcome.prompt_tokens
    tally.completion_tokens += outcome.completion_tokens
    if outcome.error not in (llm.Failure.OVER_BUDGET, llm.Failure.NOT_SENT):
        tally.sent += 1
    if outcome.verdict is not None:
        tally.classified += 1
        verdict.llm_assisted = outcome.verdict.ai_assisted
        verdict.llm_tools = list(outcome.verdict.tools)
        verdict.llm_confidence = outcome.verdict.confidence
        verdict.llm_reason = outcome.verdict.reason
        verdict.llm_content_hash = outcome.content_hash
        verdict.llm_prompt_version = llm.PROMPT_VERSION
        verdict.llm_error = ""
    else:
        tally.failed[outcome.error] = tally.failed.get(outcome.error, 0) + 1
        if outcome.detail:
            tally.last_error = outcome.detail
        # Fall back to the signature verdict; an empty hash means "ask again next time".
        verdict.llm_assisted = None
        verdict.llm_tools = []
        verdict.llm_confidence = None
        verdict.llm_reason = ""
        verdict.llm_content_hash = ""
        verdict.llm_prompt_version = ""
        message = f"{outcome.error}: {outcome.detail}" if outcome.detail else outcome.error
        verdict.llm_error = message[:200]
    apply_final_verdict(verdict, use_llm=True)
    verdict.updated_at = timezone.now()  # bulk_update does not apply auto_now
    return verdict


def _earlier_tokens(run: PipelineRun) -> int:
    summary = PipelineRun.objects.values_list("summary", flat=True).get(pk=run.pk) or {}
    return int((summary.get("llm") or {}).get("total_tokens") or 0)


def _write_llm_summary(run: PipelineRun, tally: LLMTally) -> None:
    """Merge the LLM tally into run.summary without touching other stages' keys."""
    data = tally.as_json()
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE pipeline_pipelinerun"
            " SET summary = summary || jsonb_build_object('llm', %s::jsonb) WHERE id = %s",
            [json.dumps(data), run.pk],
        )
    run.summary = {**(run.summary or {}), "llm": data}
