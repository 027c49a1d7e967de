"""A deterministic synthetic GitHub organisation for the demo server.

Same seed, size and anchor date give the same data, byte for byte: the generator draws from one
``random.Random(seed)`` in a fixed order and every date is an offset from ``now``. A 2,000-PR
dataset takes well under a second and a few MB, so each process builds it once (``get_dataset``).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import math
import random
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from onboarding.demo_github import cast
from onboarding.demo_github.markers import AI_TOOL_OF_KIND, KIND_SHARES, KIND_VARIANTS, build_style

DEFAULT_SEED = 20_261_123
DEFAULT_PR_COUNT = 2000
DEFAULT_DAYS = 120


def node_id(prefix: str, *parts: object) -> str:
    """An opaque global id shaped like GitHub's (``PR_kwDO...``)."""
    raw = ":".join(str(p) for p in parts).encode()
    return f"{prefix}_kwDO{base64.urlsafe_b64encode(raw).decode().rstrip('=')}"


def default_now() -> datetime:
    """The current UTC time truncated to the day: the dataset changes once a day, not per call."""
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass(slots=True)
class Account:
    login: str  # as GraphQL shows it; REST adds "[bot]" for bots
    name: str
    email: str
    database_id: int
    is_bot: bool
    node_id: str
    created_at: datetime

    @property
    def rest_login(self) -> str:
        return f"{self.login}[bot]" if self.is_bot else self.login


@dataclass(slots=True)
class Repository:
    name: str
    owner: str
    description: str
    language: str
    database_id: int
    node_id: str
    created_at: datetime
    private: bool = True
    default_branch: str = "main"
    pushed_at: datetime | None = None

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass(slots=True)
class Commit:
    oid: str
    message: str
    authored_date: datetime
    author_name: str
    author_email: str
    author_login: str | None  # the GitHub user the e-mail belongs to, if any


@dataclass(slots=True)
class Review:
    node_id: str
    database_id: int
    state: str  # APPROVED, CHANGES_REQUESTED, COMMENTED
    submitted_at: datetime
    author: Account
    body: str


@dataclass(slots=True)
class PullRequest:
    repository: Repository
    number: int
    database_id: int
    title: str
    body: str
    state: str  # OPEN, CLOSED, MERGED
    is_draft: bool
    created_at: datetime
    updated_at: datetime
    merged_at: datetime | None
    closed_at: datetime | None
    additions: int
    deletions: int
    changed_files: int
    head_ref: str
    author: Account
    labels: list[str]
    commits: list[Commit]
    reviews: list[Review]
    kind: str  # ground truth: "human", an AI kind, "dependabot" or a trap kind
    node_id: str = ""

    @property
    def ai_tool(self) -> str | None:
        return AI_TOOL_OF_KIND.get(self.kind)


@dataclass
class Dataset:
    now: datetime
    seed: int
    org: Account
    viewer: Account
    people: dict[str, Account]
    bots: dict[str, Account]
    repositories: list[Repository]
    personal_repositories: list[Repository]
    # Per repository name, PRs sorted by updatedAt descending (the sync's order).
    pulls_by_updated: dict[str, list[PullRequest]] = field(default_factory=dict)
    pulls_by_number: dict[str, dict[int, PullRequest]] = field(default_factory=dict)
    by_node_id: dict[str, object] = field(default_factory=dict)

    @property
    def pull_requests(self) -> list[PullRequest]:
        return [pr for repo in self.repositories for pr in self.pulls_by_updated[repo.name]]

    def account(self, login: str) -> Account | None:
        return self.people.get(login) or self.bots.get(login.removesuffix("[bot]"))

    def repository(self, owner: str, name: str) -> Repository | None:
        for repo in self.repositories + self.personal_repositories:
            if repo.owner.lower() == owner.lower() and repo.name.lower() == name.lower():
                return repo
        return None


def _account(login: str, name: str, email: str, db_id: int, is_bot: bool, now: datetime) -> Account:
    prefix = "BOT" if is_bot else "U"
    created = now - timedelta(days=400 + db_id % 2000)
    return Account(login, name, email, db_id, is_bot, node_id(prefix, db_id), created)


def _slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40]


def _kinds(rng: random.Random, count: int) -> list[str]:
    """Exact counts per kind (every variant of each when the dataset has room), shuffled."""
    kinds: list[str] = []
    roomy = count >= 3 * len(KIND_SHARES)
    for kind, share in KIND_SHARES.items():
        kinds += [kind] * max(KIND_VARIANTS.get(kind, 1) if roomy else 0, round(share * count))
    kinds = kinds[:count]
    kinds += ["human"] * (count - len(kinds))
    rng.shuffle(kinds)
    return kinds


def _created_at(rng: random.Random, now: datetime, days: int) -> datetime:
    # Work happens on weekdays in office hours, mostly.
    while True:
        day = now - timedelta(days=rng.uniform(0, days))
        if day.weekday() < 5 or rng.random() < 0.15:
            break
    hour = min(max(rng.gauss(13, 2.8), 6), 22)
    created = day.replace(hour=int(hour), minute=rng.randrange(60), second=rng.randrange(60))
    return min(created, now - timedelta(minutes=rng.randint(5, 600))).replace(microsecond=0)


def _seconds(moment: datetime) -> datetime:
    """GitHub's timestamps have whole seconds."""
    return moment.replace(microsecond=0)


def build_dataset(
    now: datetime | None = None,
    *,
    seed: int = DEFAULT_SEED,
    pr_count: int = DEFAULT_PR_COUNT,
    days: int = DEFAULT_DAYS,
    extra_repositories: int = 0,
) -> Dataset:
    """Generate the demo organisation with ``pr_count`` PRs created in the last ``days`` days.

    ``extra_repositories`` adds that many more organisation repositories without pull requests
    (``archive-0001``, ...): a large organisation for the repository picker."""
    now = now or default_now()
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)  # a naive anchor is taken as UTC, like GitHub's times
    now = _seconds(now)
    rng = random.Random(seed)
    people = {
        login: _account(
            login,
            name,
            f"{login.replace('-', '.')}@tformance-demo.dev",
            5000 + i * 7919,
            False,
            now,
        )
        for i, (login, name, _) in enumerate(cast.HUMANS)
    }
    bots = {
        login: _account(login, name, email, db_id, True, now)
        for login, (name, db_id, email) in cast.BOTS.items()
    }
    org = _account(cast.ORG_LOGIN, cast.ORG_NAME, "", cast.ORG_DATABASE_ID, False, now)
    org.node_id = node_id("O", cast.ORG_DATABASE_ID)
    viewer = people[cast.VIEWER_LOGIN]
    repositories = [
        Repository(
            name,
            cast.ORG_LOGIN,
            description,
            language,
            700_000 + i * 101,
            node_id("R", 700_000 + i * 101),
            now - timedelta(days=900 - i * 60),
        )
        for i, (name, description, language, _, _) in enumerate(cast.REPOSITORIES)
    ]
    personal = [
        Repository(
            name,
            viewer.login,
            description,
            language,
            690_000 + i,
            node_id("R", 690_000 + i),
            now - timedelta(days=1500),
            private=False,
        )
        for i, (name, description, language) in enumerate(cast.PERSONAL_REPOSITORIES)
    ]
    dataset = Dataset(now, seed, org, viewer, people, bots, repositories, personal)

    humans = [people[login] for login, _, _ in cast.HUMANS]
    weights = [activity for _, _, activity in cast.HUMANS]
    repo_weights = [share for *_, share, _ in cast.REPOSITORIES]
    drafts: dict[str, list[PullRequest]] = {repo.name: [] for repo in repositories}
    occurrences: dict[str, int] = {}
    for kind in _kinds(rng, pr_count):
        repo = rng.choices(repositories, repo_weights)[0]
        occurrence = occurrences[kind] = occurrences.get(kind, -1) + 1
        pr = _pull_request(rng, dataset, repo, kind, humans, weights, days, occurrence)
        drafts[repo.name].append(pr)

    database_id = 1_800_000_000
    for (name, *_rest, first_number), repo in zip(cast.REPOSITORIES, repositories, strict=True):
        pulls = sorted(drafts[name], key=lambda p: p.created_at)
        for offset, pr in enumerate(pulls):
            pr.number = first_number + offset
            database_id += 1 + rng.randrange(40)
            pr.database_id = database_id
            pr.node_id = node_id("PR", repo.database_id, pr.number)
            for index, review in enumerate(pr.reviews):
                review.database_id = database_id * 10 + index
                review.node_id = node_id("PRR", repo.database_id, pr.number, index)
                dataset.by_node_id[review.node_id] = review
            dataset.by_node_id[pr.node_id] = pr
        repo.pushed_at = max((p.updated_at for p in pulls), default=repo.created_at)
        dataset.pulls_by_number[name] = {pr.number: pr for pr in pulls}
        dataset.pulls_by_updated[name] = sorted(
            pulls, key=lambda p: (p.updated_at, p.number), reverse=True
        )
    for i in range(extra_repositories):
        database_id = 800_000 + i
        repo = Repository(
            f"archive-{i + 1:04d}",
            cast.ORG_LOGIN,
            "An older service, kept for reference",
            "Go",
            database_id,
            node_id("R", database_id),
            now - timedelta(days=2000 - i % 1000),
        )
        repo.pushed_at = repo.created_at
        repositories.append(repo)
        dataset.pulls_by_number[repo.name] = {}
        dataset.pulls_by_updated[repo.name] = []
    for account in [*people.values(), *bots.values(), org]:
        dataset.by_node_id[account.node_id] = account
    for repo in repositories + personal:
        dataset.by_node_id[repo.node_id] = repo
    return dataset


def _pull_request(
    rng: random.Random,
    dataset: Dataset,
    repo: Repository,
    kind: str,
    humans: list[Account],
    weights: list[float],
    days: int,
    occurrence: int,
) -> PullRequest:
    now = dataset.now
    human = rng.choices(humans, weights)[0]
    created = _created_at(rng, now, days)
    subject = rng.choice(cast.SUBJECTS[repo.name])
    title = f"{rng.choice(cast.VERBS)} {subject}"
    style = build_style(
        kind,
        rng,
        human=human,
        bots=dataset.bots,
        people=dataset.people,
        slug=_slugify(subject),
        created_ts=int(created.timestamp()),
        occurrence=occurrence,
    )
    if kind == "dependabot":
        package, old, new = rng.choice(cast.DEPENDENCIES)
        title = f"Bump {package} from {old} to {new}"
        ecosystem = "pip" if repo.language == "Python" else "npm_and_yarn"
        style.branch = f"dependabot/{ecosystem}/{_slugify(package)}-{new}"
    title = style.title or title

    # Cycle time: log-normal around a day, from under an hour to a couple of weeks; agents'
    # PRs wait longer for a human to look at them.
    cycle = timedelta(seconds=int(3600 * min(rng.lognormvariate(math.log(18), 1.15), 24 * 21)))
    if style.author.is_bot and kind != "dependabot":
        cycle = timedelta(seconds=int(cycle.total_seconds() * 1.4))
    roll = rng.random()
    state, merged_at, closed_at = "MERGED", created + cycle, created + cycle
    if roll > 0.9 or created + cycle > now:
        state, merged_at, closed_at = "OPEN", None, None
    elif roll > 0.8:
        state, merged_at = "CLOSED", None
    is_draft = state == "OPEN" and rng.random() < 0.3
    end = closed_at or now

    additions = int(rng.lognormvariate(math.log(45), 1.35)) + 1
    if kind == "dependabot":
        additions = rng.randint(1, 12)
    deletions = int(additions * rng.uniform(0.02, 0.9))
    changed_files = max(
        1,
        min(additions + deletions, int(math.sqrt(additions + deletions) / 1.6) + rng.randint(0, 3)),
    )

    # About one human PR in 700 is a huge one, with more commits than one page holds.
    huge = kind == "human" and occurrence % 700 == 350
    commits = _commits(rng, repo, style, human, title, created, end, kind, huge)
    reviews = (
        []
        if is_draft
        else _reviews(rng, dataset, style.author, created, end, state, humans, weights)
    )
    labels = list(style.labels)
    if rng.random() < 0.45:
        labels += rng.sample(cast.LABELS, rng.choice([1, 1, 2]))
    body = _body(rng, title, repo, style.body_footer)

    last = max([created, *(c.authored_date for c in commits), *(r.submitted_at for r in reviews)])
    updated = min(max(last, closed_at or last) + timedelta(minutes=rng.randint(0, 90)), now)
    return PullRequest(
        repository=repo,
        number=0,
        database_id=0,
        title=title,
        body=body,
        state=state,
        is_draft=is_draft,
        created_at=created,
        updated_at=updated,
        merged_at=merged_at,
        closed_at=closed_at,
        additions=additions,
        deletions=deletions,
        changed_files=changed_files,
        head_ref=style.branch,
        author=style.author,
        labels=labels,
        commits=commits,
        reviews=reviews,
        kind=kind,
    )


def _body(rng: random.Random, title: str, repo: Repository, footer: str) -> str:
    if rng.random() < 0.12 and not footer:
        return ""  # people do open PRs with no description
    parts = [
        f"## Summary\n{title} in `{repo.name}`.",
        rng.choice(
            [
                "Customers reported this in support; this keeps the old behaviour behind a flag.",
                "Follow-up to the incident review from last sprint.",
                "Small change, mostly mechanical.",
                "See the linked issue for the background.",
            ]
        ),
        "## Testing\n" + rng.choice(["Unit tests added.", "Tested on staging.", "CI only."]),
    ]
    if footer:
        parts.append(footer)
    return "\n\n".join(parts)


def _commits(rng, repo, style, human, title, created, end, kind, huge) -> list[Commit]:
    count = 1 + min(int(rng.expovariate(1 / 2.2)), 40)
    if huge:
        count = rng.randint(101, 140)
    if kind == "dependabot":
        count = 1
    start = created - timedelta(hours=rng.uniform(0.2, 30))
    span = max((end - start).total_seconds(), 60)
    times = sorted(
        _seconds(start) + timedelta(seconds=int(rng.uniform(0, span * 0.95))) for _ in range(count)
    )
    author = style.author if not style.author.is_bot else human
    commits = []
    for index, authored in enumerate(times):
        by_tool = (
            index == 0 and style.tool_commit_share > 0 or rng.random() < style.tool_commit_share
        )
        message = (
            title if index == 0 else rng.choice(cast.FOLLOW_UP_MESSAGES).format(branch=style.branch)
        )
        if index == 0 and style.first_commit_message:
            message = style.first_commit_message
        name, email, login = author.name, author.email, author.login
        if by_tool:
            message = style.commit_prefix + message
            if style.trailers:
                message += "\n\n" + "\n".join(style.trailers)
            if style.tool_commit_name:
                name, email = style.tool_commit_name, style.tool_commit_email or email
                login = style.tool_commit_login
        if kind == "dependabot":
            name, email, login = style.author.name, style.author.email, None
            message += (
                f"\n\nBumps {title.split()[1]}.\n\n"
                "Signed-off-by: dependabot[bot] <support@github.com>"
            )
        digest = hashlib.sha1(f"{repo.name}:{created.isoformat()}:{index}:{message}".encode())
        commits.append(Commit(digest.hexdigest(), message, authored, name, email, login))
    return commits


def _reviews(rng, dataset, author, created, end, state, humans, weights) -> list[Review]:
    reviews: list[Review] = []
    if rng.random() < 0.18:
        bot = dataset.bots[
            rng.choice(["coderabbitai", "copilot-pull-request-reviewer", "gemini-code-assist"])
        ]
        at = created + timedelta(seconds=rng.randint(120, 900))
        if at < end:
            reviews.append(Review("", 0, "COMMENTED", at, bot, "Walkthrough: summary of changes."))
    reviewers = [h for h in humans if h.login != author.login]
    wait = timedelta(seconds=int(3600 * rng.lognormvariate(math.log(3.5), 1.1)))
    at = created + wait
    rounds = rng.choices([0, 1, 2, 3], [0.12, 0.6, 0.2, 0.08])[0]
    for round_index in range(rounds):
        if at >= end:
            break
        last = round_index == rounds - 1
        review_state = (
            "APPROVED"
            if last and state == "MERGED"
            else rng.choice(["CHANGES_REQUESTED", "COMMENTED", "CHANGES_REQUESTED"])
        )
        reviewer = rng.choices(reviewers, [weights[humans.index(r)] for r in reviewers])[0]
        reviews.append(
            Review(
                "", 0, review_state, at, reviewer, rng.choice(cast.REVIEW_COMMENTS[review_state])
            )
        )
        at += timedelta(seconds=int(3600 * rng.lognormvariate(math.log(4), 1.0)))
    reviews.sort(key=lambda r: r.submitted_at)
    return reviews


@functools.lru_cache(maxsize=4)
def get_dataset(
    now: datetime | None = None,
    seed: int = DEFAULT_SEED,
    pr_count: int = DEFAULT_PR_COUNT,
    days: int = DEFAULT_DAYS,
) -> Dataset:
    """``build_dataset`` once per process per arguments (servers share it read-only)."""
    return build_dataset(now, seed=seed, pr_count=pr_count, days=days)
