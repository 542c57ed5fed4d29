"""Provider wire formats the fake speaks besides OpenAI: each module offers one Dialect, listed here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from sluicegate.testing.knobs import Knobs

if TYPE_CHECKING:
    from sluicegate.testing.fake_provider import FakeProvider


@dataclass(frozen=True, slots=True)
class Dialect:
    """One provider's API: which requests it takes, how it answers them and how it answers errors."""

    name: str
    matches: Callable[[str, str], bool]  # (method, path) -> whether this dialect answers
    handle: Callable[[FakeProvider, web.BaseRequest, bytes, Knobs], Awaitable[web.StreamResponse]]
    error: Callable[[Knobs], web.Response]  # the answer to x-fake-status, in this provider's error format


DIALECTS: list[Dialect] = []  # each provider module's DIALECT is appended below, one line each


def find_dialect(method: str, path: str) -> Dialect | None:
    """The dialect that answers this request, or None for the OpenAI API."""
    for dialect in DIALECTS:
        if dialect.matches(method, path):
            return dialect
    return None


from sluicegate.testing import fake_cohere  # noqa: E402  (the dialect modules import Dialect from here)

DIALECTS.append(fake_cohere.DIALECT)

from sluicegate.testing import fake_anthropic  # noqa: E402

DIALECTS.append(fake_anthropic.DIALECT)

from sluicegate.testing import fake_openai_scenarios  # noqa: E402

DIALECTS.append(fake_openai_scenarios.DIALECT)

from sluicegate.testing import fake_bedrock  # noqa: E402

DIALECTS.append(fake_bedrock.DIALECT)

from sluicegate.testing import fake_gemini  # noqa: E402

DIALECTS += [fake_gemini.DIALECT, fake_gemini.CLAUDE_DIALECT]

from sluicegate.testing import fake_moderation  # noqa: E402

DIALECTS.append(fake_moderation.DIALECT)
