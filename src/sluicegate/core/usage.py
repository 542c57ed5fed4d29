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
        prompt_details = usage.get("prompt_tokens_details") or {}
        completion_details = usage.get("completion_tokens_details") or {}
        return cls(
            input_tokens=prompt,
            output_tokens=completion,
            total_tokens=usage.get("total_tokens") or prompt + completion,
            cached_input_tokens=prompt_details.get("cached_tokens") or 0,
            cache_creation_input_tokens=prompt_details.get("cache_creation_tokens") or 0,
            reasoning_tokens=completion_details.get("reasoning_tokens") or 0,
        )
