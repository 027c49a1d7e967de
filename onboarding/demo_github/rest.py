"""The REST v3 subset the product (through PyGithub) uses, over the demo dataset.

Shapes follow GitHub's documented responses (https://docs.github.com/en/rest): the fields
PyGithub's ``NamedUser``, ``AuthenticatedUser``, ``Organization`` and ``Repository`` read, and
``per_page``/``page`` pagination with RFC 8288 ``Link`` headers, which PyGithub's
``PaginatedList`` follows.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from onboarding.demo_github import cast
from onboarding.demo_github.dataset import (
    Account,
    Commit,
    Dataset,
    PullRequest,
    Repository,
    Review,
)

DOCS = "https://docs.github.com/rest"


def iso(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


class RestError(Exception):
    def __init__(self, status: int, message: str, docs: str = DOCS) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"message": message, "documentation_url": docs, "status": str(status)}


def account_json(account: Account, api: str, web: str, *, full: bool = False) -> dict[str, Any]:
    kind = "Bot" if account.is_bot else "User"
    path = "orgs" if account.login == cast.ORG_LOGIN else "users"
    if path == "orgs":
        kind = "Organization"
    login = account.rest_login
    data: dict[str, Any] = {
        "login": login,
        "id": account.database_id,
        "node_id": account.node_id,
        "avatar_url": f"{web}/avatars/{account.database_id}",
        "gravatar_id": "",
        "url": f"{api}/{path}/{login}",
        "html_url": f"{web}/{login}",
        "repos_url": f"{api}/{path}/{login}/repos",
        "type": kind,
        "site_admin": False,
    }
    if full:
        data |= {
            "name": account.name,
            "company": None,
            "blog": "",
            "location": None,
            "email": account.email or None,
            "bio": None,
            "public_repos": 0,
            "followers": 0,
            "following": 0,
            "created_at": iso(account.created_at),
            "updated_at": iso(account.created_at),
        }
    return data


def org_json(dataset: Dataset, api: str, web: str) -> dict[str, Any]:
    org = dataset.org
    data = account_json(org, api, web, full=True)
    data |= {"description": "Demo organisation of the tformance product", "is_verified": False}
    data["public_repos"] = 0
    data["total_private_repos"] = len(dataset.repositories)
    return data


def repository_json(dataset: Dataset, repo: Repository, api: str, web: str) -> dict[str, Any]:
    owner = dataset.org if repo.owner == dataset.org.login else dataset.viewer
    url = f"{api}/repos/{repo.full_name}"
    open_pulls = sum(1 for pr in dataset.pulls_by_updated.get(repo.name, []) if pr.state == "OPEN")
    return {
        "id": repo.database_id,
        "node_id": repo.node_id,
        "name": repo.name,
        "full_name": repo.full_name,
        "private": repo.private,
        "owner": account_json(owner, api, web),
        "html_url": f"{web}/{repo.full_name}",
        "description": repo.description,
        "fork": False,
        "url": url,
        "pulls_url": f"{url}/pulls{{/number}}",
        "created_at": iso(repo.created_at),
        "updated_at": iso(repo.pushed_at or repo.created_at),
        "pushed_at": iso(repo.pushed_at or repo.created_at),
        "git_url": f"git://{web.split('://', 1)[-1]}/{repo.full_name}.git",
        "clone_url": f"{web}/{repo.full_name}.git",
        "homepage": None,
        "size": 1000 + repo.database_id % 50_000,
        "stargazers_count": repo.database_id % 17,
        "watchers_count": repo.database_id % 17,
        "language": repo.language,
        "has_issues": True,
        "forks_count": 0,
        "archived": False,
        "disabled": False,
        "open_issues_count": open_pulls,
        "visibility": "private" if repo.private else "public",
        "default_branch": repo.default_branch,
        "permissions": {
            "admin": False,
            "maintain": False,
            "push": True,
            "triage": True,
            "pull": True,
        },
    }


def pull_json(dataset: Dataset, pr: PullRequest, api: str, web: str) -> dict[str, Any]:
    """One PR as ``GET /repos/{o}/{r}/pulls/{n}`` returns it (the per-PR REST baseline)."""
    repo_url = f"{api}/repos/{pr.repository.full_name}"
    return {
        "id": pr.database_id,
        "node_id": pr.node_id,
        "number": pr.number,
        "url": f"{repo_url}/pulls/{pr.number}",
        "html_url": f"{web}/{pr.repository.full_name}/pull/{pr.number}",
        "state": "open" if pr.state == "OPEN" else "closed",
        "draft": pr.is_draft,
        "title": pr.title,
        "body": pr.body or None,
        "user": account_json(pr.author, api, web),
        "labels": [{"name": name} for name in pr.labels],
        "created_at": iso(pr.created_at),
        "updated_at": iso(pr.updated_at),
        "closed_at": iso(pr.closed_at),
        "merged_at": iso(pr.merged_at),
        "merged": pr.merged_at is not None,
        "head": {"ref": pr.head_ref, "label": f"{pr.repository.owner}:{pr.head_ref}"},
        "base": {"ref": pr.repository.default_branch},
        "additions": pr.additions,
        "deletions": pr.deletions,
        "changed_files": pr.changed_files,
        "commits": len(pr.commits),
    }


def commit_json(commit: Commit) -> dict[str, Any]:
    person = {
        "name": commit.author_name,
        "email": commit.author_email,
        "date": iso(commit.authored_date),
    }
    return {
        "sha": commit.oid,
        "commit": {"message": commit.message, "author": person, "committer": person},
    }


def review_json(review: Review, api: str, web: str) -> dict[str, Any]:
    return {
        "id": review.database_id,
        "node_id": review.node_id,
        "user": account_json(review.author, api, web),
        "body": review.body,
        "state": review.state,
        "submitted_at": iso(review.submitted_at),
    }


def paginate(
    items: list[Any], query: dict[str, str], page_url: str
) -> tuple[list[Any], dict[str, str]]:
    """Slice one page and build GitHub's ``Link`` header (next, last, first, prev)."""
    try:
        per_page = min(max(int(query.get("per_page", 30)), 1), 100)
        page = max(int(query.get("page", 1)), 1)
    except ValueError as exc:
        raise RestError(422, "Invalid page or per_page parameter") from exc
    last = max(math.ceil(len(items) / per_page), 1)
    links = []

    def link(number: int, rel: str) -> str:
        return f'<{page_url}?{urlencode({**query, "page": number})}>; rel="{rel}"'

    if page > 1:
        links.append(link(page - 1, "prev"))
    if page < last:
        links += [link(page + 1, "next"), link(last, "last")]
    if page > 1:
        links.append(link(1, "first"))
    headers = {"Link": ", ".join(links)} if links else {}
    return items[(page - 1) * per_page : page * per_page], headers


ROUTES = [
    ("user", re.compile(r"^/user$")),
    ("user_orgs", re.compile(r"^/user/orgs$")),
    ("user_repos", re.compile(r"^/user/repos$")),
    ("org", re.compile(r"^/orgs/(?P<org>[^/]+)$")),
    ("org_repos", re.compile(r"^/orgs/(?P<org>[^/]+)/repos$")),
    ("named_user", re.compile(r"^/users/(?P<login>[^/]+)$")),
    ("repo", re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)$")),
    ("pulls", re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)/pulls$")),
    ("pull", re.compile(r"^/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)/pulls/(?P<number>\d+)$")),
    (
        "pull_part",
        re.compile(
            r"^/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)/pulls/(?P<number>\d+)/(?P<part>commits|reviews)$"
        ),
    ),
]


def handle_get(
    dataset: Dataset,
    path: str,
    query: dict[str, str],
    *,
    api: str,
    web: str,
    missing: set[str],
) -> tuple[Any, dict[str, str]]:
    """Answer ``GET {api}{path}``; raises ``RestError`` for GitHub's error answers."""
    found = next(((r, m) for r, p in ROUTES if (m := p.match(path))), None)
    if found is None:
        raise RestError(404, "Not Found")
    route, args = found[0], found[1].groupdict()

    def visible(repos: list[Repository]) -> list[Repository]:
        return [r for r in repos if r.full_name.lower() not in missing]

    def lookup_repo() -> Repository:
        repo = dataset.repository(args["owner"], args["name"])
        if repo is None or repo.full_name.lower() in missing:
            raise RestError(404, "Not Found", f"{DOCS}/repos/repos#get-a-repository")
        return repo

    if route == "user":
        return account_json(dataset.viewer, api, web, full=True), {}
    if route == "user_orgs":
        return [account_json(dataset.org, api, web)], {}
    if route == "user_repos":
        repos = visible(dataset.personal_repositories + dataset.repositories)
        page, headers = paginate(repos, query, f"{api}/user/repos")
        return [repository_json(dataset, r, api, web) for r in page], headers
    if route in ("org", "org_repos"):
        if args["org"].lower() != dataset.org.login:
            raise RestError(404, "Not Found", f"{DOCS}/orgs/orgs#get-an-organization")
        if route == "org":
            return org_json(dataset, api, web), {}
        page, headers = paginate(
            visible(dataset.repositories), query, f"{api}/orgs/{dataset.org.login}/repos"
        )
        return [repository_json(dataset, r, api, web) for r in page], headers
    if route == "named_user":
        account = dataset.account(args["login"])
        if account is None:
            raise RestError(404, "Not Found", f"{DOCS}/users/users#get-a-user")
        return account_json(account, api, web, full=True), {}
    repo = lookup_repo()
    if route == "repo":
        return repository_json(dataset, repo, api, web), {}
    if route == "pulls":
        pulls = sorted(dataset.pulls_by_number.get(repo.name, {}).values(), key=lambda p: -p.number)
        state = query.get("state", "open")
        if state != "all":
            pulls = [p for p in pulls if (p.state == "OPEN") == (state == "open")]
        page, headers = paginate(pulls, query, f"{api}/repos/{repo.full_name}/pulls")
        return [pull_json(dataset, p, api, web) for p in page], headers
    pr = dataset.pulls_by_number.get(repo.name, {}).get(int(args["number"]))
    if pr is None:
        raise RestError(404, "Not Found", f"{DOCS}/pulls/pulls#get-a-pull-request")
    if route == "pull":
        return pull_json(dataset, pr, api, web), {}
    # One PR's commits or reviews: what a REST-only sync needs per PR on top of the list.
    page_url = f"{api}/repos/{repo.full_name}/pulls/{pr.number}/{args['part']}"
    if args["part"] == "commits":
        page, headers = paginate(pr.commits, query, page_url)
        return [commit_json(commit) for commit in page], headers
    page, headers = paginate(pr.reviews, query, page_url)
    return [review_json(review, api, web) for review in page], headers
