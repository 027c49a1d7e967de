"""The bundled demo GitHub: a local server that speaks GitHub's REST and GraphQL APIs over a
deterministic synthetic organisation, for development, demos and tests (no internet needed)."""

from onboarding.demo_github.schema import load_schema
from onboarding.demo_github.server import DEFAULT_TOKEN, DemoGitHubServer

__all__ = ["DEFAULT_TOKEN", "DemoGitHubServer", "load_schema"]
