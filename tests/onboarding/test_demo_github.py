"""The bundled demo GitHub, seen by clients: unmodified PyGithub over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import github
import pytest

from onboarding.demo_github.schema import load_schema
from tests.fixtures.github import ORG, PR_PAGE, all_pull_requests, pr_page
from tests.fixtures.github import pygithub_client as client

# Talking to it with PyGithub -----------------------------------------------------------------


def test_pygithub_lists_the_demo_organisation_repositories_across_pages(demo_github):
    gh = client(demo_github, per_page=4)

    repos = list(gh.get_organization(ORG).get_repos())

    assert [r.full_name for r in repos] == [
        f"{ORG}/{name}" for name in ("api", "web", "data-pipeline", "mobile", "infra", "docs")
    ]
    assert all(r.private and r.default_branch == "main" for r in repos)
    pages = [r for r in demo_github.requests if r.path == f"/api/v3/orgs/{ORG}/repos"]
    assert len(pages) == 2  # 6 repositories at 4 per page, followed through the Link header


def test_pygithub_sees_the_token_owner_their_organisations_and_repositories(demo_github):
    gh = client(demo_github, per_page=3)

    user = gh.get_user()
    assert user.login == "demo-lead"
    assert [org.login for org in user.get_orgs()] == [ORG]
    names = [r.full_name for r in user.get_repos()]
    assert "demo-lead/dotfiles" in names and f"{ORG}/api" in names and len(names) == 7
    assert gh.get_repo(f"{ORG}/web").language == "TypeScript"
    assert gh.oauth_scopes == ["read:org", "repo", "user"]


def test_responses_carry_githubs_headers(demo_github):
    request = urllib.request.Request(
        f"{demo_github.api_url}/user", headers={"Authorization": "Bearer demo-token"}
    )
    with urllib.request.urlopen(request) as response:
        headers = response.headers
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert headers["X-RateLimit-Limit"] == "5000"
    assert headers["X-RateLimit-Remaining"] == "4999"
    assert headers["X-RateLimit-Used"] == "1"
    assert headers["X-RateLimit-Resource"] == "core"
    assert int(headers["X-RateLimit-Reset"]) > time.time()
    assert re.fullmatch(r"[0-9A-F]{4}(:[0-9A-F]+){4}", headers["X-GitHub-Request-Id"])


def test_conditional_request_with_etag_gets_a_free_304(demo_github):
    url = f"{demo_github.api_url}/repos/{ORG}/api"
    auth = {"Authorization": "token demo-token"}
    with urllib.request.urlopen(urllib.request.Request(url, headers=auth)) as response:
        etag = response.headers["ETag"]
    conditional = urllib.request.Request(url, headers=auth | {"If-None-Match": etag})
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(conditional)
    assert answer.value.code == 304
    assert answer.value.headers["X-RateLimit-Remaining"] == "4999"  # only the first one paid


def test_rest_pull_request_details_match_the_graphql_data(demo_github):
    gh = client(demo_github, per_page=100)
    pr = next(p for p in demo_github.dataset.pull_requests if len(p.reviews) >= 2)

    rest_pr = gh.get_repo(pr.repository.full_name).get_pull(pr.number)

    assert (rest_pr.title, rest_pr.merged, rest_pr.additions) == (
        pr.title,
        pr.merged_at is not None,
        pr.additions,
    )
    assert [c.sha for c in rest_pr.get_commits()] == [c.oid for c in pr.commits]
    assert [(r.state, r.user.login) for r in rest_pr.get_reviews()] == [
        (r.state, r.author.rest_login) for r in pr.reviews
    ]


def test_graphql_page_lists_prs_newest_updated_first_with_commits_and_reviews(demo_github):
    gh = client(demo_github)

    headers, data = pr_page(gh, "api", first=30)

    connection = data["data"]["repository"]["pullRequests"]
    nodes = connection["nodes"]
    assert len(nodes) == 30 and connection["pageInfo"]["hasNextPage"]
    assert connection["totalCount"] == len(demo_github.dataset.pulls_by_updated["api"])
    updated = [n["updatedAt"] for n in nodes]
    assert updated == sorted(updated, reverse=True)
    assert all(n["commits"]["totalCount"] >= 1 and n["commits"]["nodes"] for n in nodes)
    assert any(n["reviews"]["nodes"] for n in nodes)
    commit = nodes[0]["commits"]["nodes"][0]["commit"]
    assert re.fullmatch(r"[0-9a-f]{40}", commit["oid"]) and commit["author"]["email"]
    assert headers["x-ratelimit-resource"] == "graphql"


def test_graphql_paging_returns_every_pr_once(demo_github):
    gh = client(demo_github)

    nodes = all_pull_requests(gh, "web", first=100)

    numbers = [n["number"] for n in nodes]
    assert len(numbers) == len(set(numbers)) == len(demo_github.dataset.pulls_by_number["web"])
    assert {n["state"] for n in nodes} == {"OPEN", "CLOSED", "MERGED"}


def test_graphql_bot_authors_are_bots_without_the_bot_suffix(demo_github):
    gh = client(demo_github)

    nodes = all_pull_requests(gh, "api")

    bot_logins = {n["author"]["login"] for n in nodes if n["author"]["__typename"] == "Bot"}
    assert {"copilot-swe-agent", "devin-ai-integration", "dependabot"} <= bot_logins
    assert not any(login.endswith("[bot]") for login in bot_logins)
    reviewers = {
        (r["author"]["login"], r["author"]["__typename"])
        for n in nodes
        for r in n["reviews"]["nodes"]
    }
    assert ("coderabbitai", "Bot") in reviewers
    assert any(kind == "User" for _, kind in reviewers)


def test_graphql_rejects_documents_the_real_schema_rejects(demo_github):
    gh = client(demo_github)

    with pytest.raises(github.GithubException) as error:
        gh.requester.graphql_query("query { viewer { login noSuchField } }", {})

    assert "noSuchField" in error.value.data["errors"][0]["message"]


def test_graphql_first_above_100_is_refused_like_github(demo_github):
    gh = client(demo_github)

    with pytest.raises(github.GithubException) as error:
        pr_page(gh, "api", first=101)

    assert error.value.data["errors"][0]["type"] == "EXCESSIVE_PAGINATION"


def test_graphql_cost_is_reported_and_spent_per_token(demo_github):
    gh = client(demo_github)

    _, first = pr_page(gh, "api", first=100)
    _, second = pr_page(gh, "api", first=100)
    _, small = gh.requester.graphql_query("query { viewer { login } rateLimit { cost } }", {})

    # 1 page of PRs + 100 PRs x (labels, commits, reviews) connections = 301 requests -> 3 points
    assert first["data"]["rateLimit"]["cost"] == 3
    assert first["data"]["rateLimit"]["remaining"] == 4997
    assert second["data"]["rateLimit"]["remaining"] == 4994
    assert small["data"] == {"viewer": {"login": "demo-lead"}, "rateLimit": {"cost": 1}}
    assert [r.graphql_cost for r in demo_github.requests] == [3, 3, 1]


def test_graphql_node_lookup_finds_a_pull_request(demo_github):
    gh = client(demo_github)
    _, page = pr_page(gh, "docs", first=1)
    pr = page["data"]["repository"]["pullRequests"]["nodes"][0]

    query = "query($id: ID!) { node(id: $id) { __typename ... on PullRequest { number title } } }"
    _, data = gh.requester.graphql_query(query, {"id": pr["id"]})

    assert data["data"]["node"] == {
        "__typename": "PullRequest",
        "number": pr["number"],
        "title": pr["title"],
    }


def test_unmodelled_fields_read_as_empty_instead_of_failing(demo_github):
    gh = client(demo_github)
    query = (
        'query { repository(owner: "tformance-demo", name: "api") { pullRequests(first: 1) '
        "{ nodes { number mergeable reviewDecision totalCommentsCount } } } }"
    )

    _, data = gh.requester.graphql_query(query, {})

    assert "errors" not in data
    assert data["data"]["repository"]["pullRequests"]["nodes"][0]["number"] > 0


def test_a_long_prs_commits_page_on_through_pull_request_by_number(demo_github):
    gh = client(demo_github)
    huge = max(demo_github.dataset.pull_requests, key=lambda pr: len(pr.commits))
    query = """
    query($name: String!, $number: Int!, $after: String) {
      repository(owner: "tformance-demo", name: $name) { pullRequest(number: $number) {
        commits(first: 50, after: $after) {
          totalCount pageInfo { hasNextPage endCursor } nodes { commit { oid } } } } } }
    """
    variables = {"name": huge.repository.name, "number": huge.number, "after": None}
    oids = []
    while True:
        _, data = gh.requester.graphql_query(query, variables)
        commits = data["data"]["repository"]["pullRequest"]["commits"]
        oids += [node["commit"]["oid"] for node in commits["nodes"]]
        if not commits["pageInfo"]["hasNextPage"]:
            break
        variables["after"] = commits["pageInfo"]["endCursor"]

    assert commits["totalCount"] == len(huge.commits) > 100
    assert oids == [commit.oid for commit in huge.commits]
    with pytest.raises(github.UnknownObjectException):
        gh.requester.graphql_query(query, variables | {"number": 99999, "after": None})


def test_commit_authors_list_the_co_authors_from_trailers(demo_github_small):
    gh = client(demo_github_small)
    query = """
    query($name: String!) { repository(owner: "tformance-demo", name: $name) {
      pullRequests(first: 100) { nodes { commits(first: 100) { nodes { commit {
        message authors(first: 5) { nodes { name email user { login } } } } } } } } } }
    """
    commits = [
        node["commit"]
        for repo in demo_github_small.dataset.pulls_by_number
        for pr in gh.requester.graphql_query(query, {"name": repo})[1]["data"]["repository"][
            "pullRequests"
        ]["nodes"]
        for node in pr["commits"]["nodes"]
    ]

    claude = next(c for c in commits if "Co-Authored-By: Claude <noreply" in c["message"])
    names = [(a["name"], a["email"]) for a in claude["authors"]["nodes"]]
    assert names[1:] == [("Claude", "noreply@anthropic.com")]
    assert claude["authors"]["nodes"][0]["user"]["login"]
    plain = next(c for c in commits if "co-authored-by" not in c["message"].lower())
    assert len(plain["authors"]["nodes"]) == 1


def test_rate_limit_endpoint_is_free_and_reports_both_budgets(demo_github):
    gh = client(demo_github)
    pr_page(gh, "api")

    overview = gh.get_rate_limit()

    assert overview.resources.graphql.remaining == 4997
    assert overview.resources.core.remaining == 5000
    assert [r.path for r in demo_github.requests] == ["/api/graphql", "/api/v3/rate_limit"]


def test_shared_schema_validates_documents():
    from graphql import parse, validate

    assert validate(load_schema(), parse(PR_PAGE)) == []
    assert validate(load_schema(), parse("query { viewer { nope } }"))


# Misbehaving on purpose ----------------------------------------------------------------------


def test_wrong_token_is_bad_credentials(demo_github):
    with pytest.raises(github.BadCredentialsException) as error:
        client(demo_github, token="ghp_not-a-real-token").get_repo(f"{ORG}/api")
    assert error.value.status == 401
    assert error.value.data["message"] == "Bad credentials"


def test_request_without_a_token_requires_authentication(demo_github):
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(f"{demo_github.api_url}/user")

    assert answer.value.code == 401
    assert json.load(answer.value)["message"] == "Requires authentication"


def test_concurrent_clients_spend_the_budget_exactly(demo_github):
    def query_five_times(_: int) -> None:
        gh = client(demo_github)
        for _ in range(5):
            pr_page(gh, "docs", first=20)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(query_five_times, range(16)))

    # 80 queries of 1 + 20 x 3 nested connections = 61 requests -> 1 point each
    _, data = client(demo_github).requester.graphql_query("query { rateLimit { remaining } }", {})
    assert data["data"]["rateLimit"]["remaining"] == 5000 - 80 - 1
    assert [r.status for r in demo_github.requests].count(200) == 81


def test_revoked_token_is_refused_everywhere(demo_github):
    gh = client(demo_github)
    assert gh.get_user().login == "demo-lead"

    demo_github.unauthorized()

    with pytest.raises(github.BadCredentialsException):
        gh.get_repo(f"{ORG}/api")
    with pytest.raises(github.BadCredentialsException):
        pr_page(gh, "api")


def test_spent_rest_budget_answers_rate_limit_exceeded_until_reset(demo_github):
    gh = client(demo_github)
    demo_github.rate_limited(remaining=0, reset_in=120)

    with pytest.raises(github.RateLimitExceededException) as error:
        gh.get_repo(f"{ORG}/api")

    assert error.value.status == 403
    assert error.value.headers["x-ratelimit-remaining"] == "0"
    reset = int(error.value.headers["x-ratelimit-reset"])
    assert 100 < reset - time.time() <= 120


def test_nearly_spent_graphql_budget_shows_in_ratelimit_and_then_refuses(demo_github):
    gh = client(demo_github)
    demo_github.rate_limited(remaining=4, reset_in=600, resource="graphql")

    _, data = pr_page(gh, "api")  # costs 3 of the 4 left
    assert data["data"]["rateLimit"]["remaining"] == 1
    reset_at = datetime.strptime(data["data"]["rateLimit"]["resetAt"], "%Y-%m-%dT%H:%M:%SZ")
    assert 500 < reset_at.replace(tzinfo=UTC).timestamp() - time.time() <= 600

    with pytest.raises(github.GithubException) as error:
        pr_page(gh, "api")
    assert error.value.data["errors"][0]["type"] == "RATE_LIMITED"
    assert error.value.headers["x-ratelimit-remaining"] == "1"
    assert gh.get_user().login == "demo-lead"  # REST has its own budget


def test_budget_comes_back_after_the_reset(demo_github):
    gh = client(demo_github)
    demo_github.rate_limited(remaining=0, reset_in=3600)
    with pytest.raises(github.RateLimitExceededException):
        gh.get_repo(f"{ORG}/api")

    # The reset time passes (moved into the past rather than slept for: no clock race).
    demo_github.rate_limited(remaining=0, reset_in=-1)

    assert gh.get_user().login == "demo-lead"


def test_secondary_limit_answers_retry_after_for_the_next_requests_only(demo_github):
    gh = client(demo_github)
    demo_github.secondary_limit(count=2, status=429, retry_after=1)

    for _ in range(2):
        with pytest.raises(github.GithubException) as error:
            pr_page(gh, "api", first=10)
        assert error.value.status == 429
        assert error.value.headers["retry-after"] == "1"
        assert "secondary rate limit" in error.value.data["message"]

    assert pr_page(gh, "api", first=10)[1]["data"]["repository"]


def test_pygithub_default_retry_honours_retry_after_on_a_secondary_limit(demo_github):
    gh = client(demo_github, retry=github.GithubRetry(total=3))
    demo_github.secondary_limit(count=1, status=403, retry_after=1)

    started = time.monotonic()
    assert gh.get_user().login == "demo-lead"

    assert time.monotonic() - started >= 1.0
    assert [r.status for r in demo_github.requests] == [403, 200]


def test_bad_gateway_answers_githubs_html_502_for_the_next_requests(demo_github):
    gh = client(demo_github)
    demo_github.bad_gateway(count=1)

    with pytest.raises(github.GithubException) as error:
        pr_page(gh, "api")

    assert error.value.status == 502
    assert "502 Bad Gateway" in str(error.value.data)
    assert pr_page(gh, "api")[1]["data"]["repository"]


def test_slow_mode_adds_latency(demo_github):
    gh = client(demo_github)
    demo_github.slow(1.5)

    started = time.monotonic()
    assert gh.get_user().login == "demo-lead"
    assert time.monotonic() - started >= 1.5

    # Off again: well under the latency it had (a wide margin for a loaded machine).
    demo_github.slow(0)
    started = time.monotonic()
    gh.get_repo(f"{ORG}/api")
    assert time.monotonic() - started < 1.5


def test_large_pages_time_out_so_a_client_can_shrink_them(demo_github):
    gh = client(demo_github)
    demo_github.timeout_on_large_pages(max_first=50, status=504)

    with pytest.raises(github.GithubException) as error:
        pr_page(gh, "api", first=100)
    assert error.value.status == 504
    _, data = pr_page(gh, "api", first=50)

    assert len(data["data"]["repository"]["pullRequests"]["nodes"]) == 50
    assert [(r.status, r.graphql_first) for r in demo_github.requests] == [(504, 100), (200, 50)]


def test_missing_repository_is_404_in_rest_and_not_found_in_graphql(demo_github):
    gh = client(demo_github)
    demo_github.missing_repo("mobile")

    with pytest.raises(github.UnknownObjectException):
        gh.get_repo(f"{ORG}/mobile")
    with pytest.raises(github.UnknownObjectException) as error:
        pr_page(gh, "mobile")
    assert error.value.data["errors"][0]["type"] == "NOT_FOUND"
    assert f"{ORG}/mobile" not in [r.full_name for r in gh.get_organization(ORG).get_repos()]
    assert pr_page(gh, "api")[1]["data"]["repository"]  # the others are still there


def test_switches_work_over_http_and_reset_restores_good_behaviour(demo_github):
    def control(command: dict) -> int:
        request = urllib.request.Request(
            f"{demo_github.base_url}/_demo/control",
            data=json.dumps(command).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    gh = client(demo_github)
    assert control({"mode": "bad_gateway", "count": 5}) == 200
    with pytest.raises(github.GithubException):
        gh.get_repo(f"{ORG}/api")
    assert control({"mode": "reset"}) == 200
    assert gh.get_user().login == "demo-lead"
    assert control({"mode": "drop_tables"}) == 400
    assert control({"mode": "slow", "seconds": "not a number", "extra": 1}) == 400

    with urllib.request.urlopen(f"{demo_github.base_url}/_demo/requests") as response:
        log = json.load(response)
    assert demo_github.token not in json.dumps(log)
    assert [(e["path"], e["status"]) for e in log] == [
        (f"/api/v3/repos/{ORG}/api", 502),
        ("/api/v3/user", 200),
    ]
