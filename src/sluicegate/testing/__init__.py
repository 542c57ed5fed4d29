"""The fake provider: an OpenAI-compatible LLM server for tests, benchmarks and the offline demo."""

from sluicegate.testing.fake_provider import FakeProvider, RecordedRequest
from sluicegate.testing.openai_format import MODELS
from sluicegate.testing.thread import FakeProviderThread

__all__ = ["MODELS", "FakeProvider", "FakeProviderThread", "RecordedRequest"]
