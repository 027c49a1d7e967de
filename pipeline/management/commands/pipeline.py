"""manage.py pipeline start|status [--watch]|check|retry|cancel|restart

``--team`` takes a team id, or a name only when exactly one team has it: staff acting on the
wrong one of two "Acme" teams is worse than being asked for the id. cancel, restart and retry
take ``--reason`` and are written to the audit log like the admin's actions."""

from __future__ import annotations

import argparse
import getpass

from django.core.management.base import BaseCommand, CommandError

from onboarding.models import Repository, Team
from pipeline import rescue, staff_actions, transitions
from pipeline import watch as pipeline_watch
from pipeline.errors import InvalidSelection
from pipeline.invariant import find_drift
from pipeline.models import PipelineRun


class Command(BaseCommand):
    help = "Start, inspect, retry and check onboarding pipelines."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        start = sub.add_parser("start", help="start a team's pipeline")
        start.add_argument("--team", required=True, help="team id or exact name")
        start.add_argument(
            "--repos", default="", help="comma-separated repository ids (default: all the team's)"
        )
        status = sub.add_parser("status", help="show pipeline status")
        status.add_argument("--team", help="team id or exact name (default: all teams)")
        status.add_argument(
            "--watch", action="store_true", help="live view of running pipelines (Ctrl-C stops)"
        )
        status.add_argument("--redraws", type=int, default=None, help=argparse.SUPPRESS)
        retry = sub.add_parser("retry", help="resume a failed pipeline from its failed stage")
        retry.add_argument("--team", required=True)
        retry.add_argument("--reason", default="retried from the command line")
        cancel = sub.add_parser("cancel", help="cancel a running pipeline (ends its job)")
        cancel.add_argument("--team", required=True)
        cancel.add_argument("--reason", required=True, help="kept in the audit log")
        restart = sub.add_parser("restart", help="start a team's latest run over from scratch")
        restart.add_argument("--team", required=True)
        restart.add_argument("--reason", required=True, help="kept in the audit log")
        sub.add_parser("check", help="check the status/queue invariant; exits 1 on drift")

    def handle(self, *args, action: str, **options):
        return getattr(self, f"handle_{action}")(**options)

    def _team(self, value: str) -> Team:
        if value.isdigit():
            team = Team.objects.filter(pk=int(value)).first()
            if team is None:
                raise CommandError(f"No team with id {value}.")
            return team
        teams = list(Team.objects.filter(name=value).order_by("pk")[:10])
        if not teams:
            raise CommandError(f"No team named {value!r}.")
        if len(teams) > 1:
            ids = ", ".join(str(t.pk) for t in teams)
            raise CommandError(
                f"{len(teams)} teams are named {value!r} (ids {ids}); use --team ID."
            )
        return teams[0]

    def _act(self, action: str, team: str, reason: str) -> None:
        result = staff_actions.act_on_team(
            f"manage.py ({getpass.getuser()})", action, self._team(team), reason
        )
        if not result.succeeded:
            raise CommandError(result.message)
        self.stdout.write(result.message)

    def handle_cancel(self, *, team: str, reason: str, **options):
        self._act(staff_actions.Action.CANCEL, team, reason)

    def handle_restart(self, *, team: str, reason: str, **options):
        self._act(staff_actions.Action.RESTART, team, reason)

    def handle_start(self, *, team: str, repos: str, **options):
        team_obj = self._team(team)
        ids = [r for r in repos.split(",") if r.strip()] or list(
            Repository.objects.filter(team=team_obj).values_list("pk", flat=True)
        )
        try:
            run = transitions.start_pipeline(team_obj, ids)
        except InvalidSelection as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"run {run.pk} of team {team_obj.name!r}: {run.stage}")

    def handle_retry(self, *, team: str, reason: str, **options):
        self._act(staff_actions.Action.RETRY, team, reason)

    def handle_status(self, *, team: str | None = None, watch: bool = False, **options):
        if watch:
            team_id = self._team(team).pk if team else None
            try:
                pipeline_watch.watch(
                    lambda text: (self.stdout.write(text, ending=""), self.stdout.flush()),
                    team_id=team_id,
                    clear=self.stdout.isatty(),
                    max_redraws=options.get("redraws"),
                )
            except KeyboardInterrupt:
                pass
            return
        teams = [self._team(team)] if team else Team.objects.order_by("pk")
        for team_obj in teams:
            run = PipelineRun.objects.filter(team=team_obj).first()
            line = f"team {team_obj.pk} {team_obj.name!r}: {team_obj.pipeline_status}"
            if team_obj.pipeline_error:
                line += f" ({team_obj.pipeline_error})"
            self.stdout.write(line)
            if run is None:
                continue
            for attempt in run.attempts.all():
                took = f"{attempt.duration_ms} ms" if attempt.duration_ms is not None else "..."
                self.stdout.write(
                    f"  {attempt.stage:<20} #{attempt.attempt} {attempt.outcome:<11} {took:>10}"
                    f"  {attempt.counts or ''} {attempt.error}"
                )

    def handle_check(self, **options):
        drift = find_drift()
        # A stage job held by a dead worker still counts as the live job (no drift), but it
        # is not moving: say so, with its age, until a worker's rescuer supersedes it.
        for job in rescue.awaiting_rescue():
            age = f"{job['age_seconds']:.0f}s" if job["age_seconds"] is not None else "?"
            self.stdout.write(
                f"AWAITING RESCUE job={job['id']} run={job['run_id']} stage={job['stage']} "
                f"started {age} ago, worker {job['worker_id']}: {job['reason']}"
            )
        if not drift:
            self.stdout.write("no drift: every running pipeline has exactly one live job")
            return
        for row in drift:
            self.stdout.write(
                f"DRIFT team={row.team_id} status={row.pipeline_status} run={row.run_id} "
                f"jobs={row.live_job_ids}: {row.problem}"
            )
        raise CommandError(f"{len(drift)} team(s) drifting", returncode=1)
