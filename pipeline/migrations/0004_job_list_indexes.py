"""Indexes on procrastinate's job table for the operators' job list and the run lookups
(``(args ->> 'run_id')::bigint`` is how every stage job names its run). Created concurrently so a
deploy never locks a big, busy job table."""

from django.db import migrations

INDEXES = {
    "pipeline_jobs_run_id_idx": "(((args ->> 'run_id')::bigint))",
    "pipeline_jobs_status_id_idx": "(status, id)",
    "pipeline_jobs_task_name_id_idx": "(task_name, id)",
    "pipeline_jobs_queue_name_id_idx": "(queue_name, id)",
}


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("pipeline", "0003_run_kinds_and_audit_log"),
        ("procrastinate", "0041_post_retry_failed_job"),
    ]

    operations = [
        migrations.RunSQL(
            sql=f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON procrastinate_jobs {columns}",
            reverse_sql=f"DROP INDEX CONCURRENTLY IF EXISTS {name}",
        )
        for name, columns in INDEXES.items()
    ]
