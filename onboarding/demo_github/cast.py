"""Who and what the demo organisation is made of: people, bots, repositories, words.

Fixed tables, so the generated dataset is stable across runs and machines. Names include the
traps the AI detection must not fall for: people called Claude and Devin.
"""

from __future__ import annotations

ORG_LOGIN = "tformance-demo"
ORG_NAME = "tformance demo"
ORG_DATABASE_ID = 90_210_001
VIEWER_LOGIN = "demo-lead"

# (login, display name, relative activity). The first one is the token's owner (the viewer).
HUMANS: list[tuple[str, str, float]] = [
    (VIEWER_LOGIN, "Dana Lee", 0.6),
    ("amara-okoye", "Amara Okoye", 1.6),
    ("bjorn-lind", "Björn Lind", 1.2),
    ("cmartin", "Claude Martin", 1.0),  # trap: a person named Claude
    ("devin-okafor", "Devin Okafor", 0.9),  # trap: a person named Devin
    ("elif-kaya", "Elif Kaya", 1.4),
    ("farah-haddad", "Farah Haddad", 1.1),
    ("gus-moreno", "Gustavo Moreno", 0.8),
    ("hana-sato", "Hana Sato", 1.3),
    ("ivan-petrov", "Ivan Petrov", 0.7),
    ("jules-fontaine", "Jules Fontaine", 0.6),  # trap next to the Jules bot
    ("kofi-mensah", "Kofi Mensah", 1.0),
    ("lena-vogel", "Lena Vogel", 0.9),
    ("mateo-rossi", "Mateo Rossi", 0.5),
    ("nia-brooks", "Nia Brooks", 0.4),
]

# GitHub App bots: login as GraphQL shows it (REST adds "[bot]"), display name, database id,
# and the noreply e-mail GitHub attributes their commits to.
BOTS: dict[str, tuple[str, int, str]] = {
    "copilot-swe-agent": ("Copilot", 198_982_749, "198982749+Copilot@users.noreply.github.com"),
    "devin-ai-integration": (
        "Devin AI",
        158_243_242,
        "158243242+devin-ai-integration[bot]@users.noreply.github.com",
    ),
    "google-labs-jules": (
        "google-labs-jules[bot]",
        161_369_871,
        "161369871+google-labs-jules[bot]@users.noreply.github.com",
    ),
    "dependabot": (
        "dependabot[bot]",
        49_699_333,
        "49699333+dependabot[bot]@users.noreply.github.com",
    ),
    "coderabbitai": (
        "CodeRabbit",
        136_622_811,
        "136622811+coderabbitai[bot]@users.noreply.github.com",
    ),
    "copilot-pull-request-reviewer": (
        "Copilot",
        175_728_472,
        "175728472+Copilot@users.noreply.github.com",
    ),
    "gemini-code-assist": (
        "gemini-code-assist[bot]",
        176_961_590,
        "176961590+gemini-code-assist[bot]@users.noreply.github.com",
    ),
}

# (name, description, language, share of the PRs, first PR number inside the window)
REPOSITORIES: list[tuple[str, str, str, float, int]] = [
    ("api", "Billing and accounts HTTP API", "Python", 0.30, 1412),
    ("web", "Customer web app", "TypeScript", 0.25, 2270),
    ("data-pipeline", "Nightly ETL and reporting jobs", "Python", 0.14, 388),
    ("mobile", "iOS and Android app", "Kotlin", 0.12, 905),
    ("infra", "Terraform and deployment tooling", "HCL", 0.11, 611),
    ("docs", "Developer documentation site", "MDX", 0.08, 143),
]

# A personal repository of the viewer, so /user/repos is more than the organisation's.
PERSONAL_REPOSITORIES: list[tuple[str, str, str]] = [
    ("dotfiles", "My shell and editor settings", "Shell"),
]

VERBS = ["Add", "Fix", "Refactor", "Remove", "Speed up", "Handle", "Support", "Clean up", "Rename"]
SUBJECTS: dict[str, list[str]] = {
    "api": [
        "invoice export",
        "webhook retries",
        "subscription proration",
        "tax rate lookup",
        "OAuth token refresh",
        "account merge endpoint",
        "idempotency keys",
        "audit log writes",
        "currency rounding",
        "customer search",
    ],
    "web": [
        "checkout form validation",
        "dark mode toggle",
        "settings page layout",
        "date picker locale",
        "onboarding wizard",
        "table sorting",
        "toast notifications",
        "invoice PDF preview",
        "bundle size",
        "session timeout banner",
    ],
    "data-pipeline": [
        "daily revenue rollup",
        "late-arriving events",
        "warehouse schema migration",
        "dedup step",
        "backfill script",
        "S3 partitioning",
        "churn report",
    ],
    "mobile": [
        "push notification opt-in",
        "offline sync queue",
        "biometric login",
        "image caching",
        "deep links",
        "crash on rotation",
    ],
    "infra": [
        "staging database size",
        "CI cache keys",
        "Terraform state locking",
        "log retention",
        "autoscaling thresholds",
        "TLS certificate renewal",
    ],
    "docs": [
        "quickstart guide",
        "API reference examples",
        "webhooks page",
        "changelog",
        "broken links",
    ],
}
FOLLOW_UP_MESSAGES = [
    "Address review comments",
    "Add tests",
    "Fix lint",
    "Update snapshot",
    "Rename variable for clarity",
    "Handle empty input",
    "WIP",
    "Merge branch 'main' into {branch}",
    "Typo",
    "Simplify error handling",
]
LABELS = ["bug", "enhancement", "refactor", "performance", "tech-debt", "security", "ui", "tests"]
DEPENDENCIES = [
    ("django", "5.2.7", "5.2.8"),
    ("react", "19.1.0", "19.2.0"),
    ("boto3", "1.40.1", "1.40.9"),
    ("eslint", "9.30.0", "9.31.0"),
    ("kotlinx-coroutines-core", "1.10.1", "1.10.2"),
    ("hashicorp/aws", "6.2.0", "6.3.0"),
    ("requests", "2.32.4", "2.32.5"),
]
REVIEW_COMMENTS = {
    "APPROVED": ["LGTM", "Looks good, thanks!", "Ship it", "", "Nice cleanup"],
    "CHANGES_REQUESTED": [
        "Please add a test for the empty case.",
        "This breaks the retry path, see inline comments.",
        "Can we avoid the extra query here?",
    ],
    "COMMENTED": ["A couple of nits inline.", "Question about the migration order.", ""],
}
