"""Response guardrails: whole answers, and streams through a rolling hold-back window (OpenAI, Anthropic)."""

from __future__ import annotations

from typing import Any

import orjson

from sluicegate.guardrails.engine import GuardRule, act, enforce, walk

SIDE = "response"


def _fixer(rules: tuple[GuardRule, ...]):
    return lambda text: enforce(rules, text, SIDE)


def guard_unary(rules: tuple[GuardRule, ...], api: str, out: bytes) -> bytes:
    """A whole JSON answer with the rules applied (re-serialized only when something changed)."""
    try:
        body = orjson.loads(out)
    except orjson.JSONDecodeError:
        return out
    if not isinstance(body, dict) or "error" in body:
        return out
    fix, changed = _fixer(rules), False
    if api == "anthropic":
        for block in body.get("content") or ():
            if isinstance(block, dict):
                for key in ("text", "input"):
                    if key in block:
                        block[key], did = _deep(block[key], fix)
                        changed = changed or did
    else:
        for choice in body.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            if isinstance(choice.get("text"), str):  # legacy completions
                choice["text"], did = walk(choice["text"], fix)
                changed = changed or did
            message = choice.get("message")
            if not isinstance(message, dict):
                continue
            if "content" in message:
                message["content"], did = walk(message["content"], fix)
                changed = changed or did
            for call in message.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                    function["arguments"], did = walk(function["arguments"], fix)
                    changed = changed or did
    return orjson.dumps(body) if changed else out


def _deep(value: Any, fix: Any) -> tuple[Any, bool]:
    """Every string inside a JSON value (tool-call input) fixed."""
    if isinstance(value, str):
        new = fix(value)
        return new, new != value
    changed = False
    if isinstance(value, list):
        items = enumerate(value)
    elif isinstance(value, dict):
        items = value.items()
    else:
        return value, False
    for key, item in list(items):
        new, did = _deep(item, fix)
        if did:
            value[key], changed = new, True
    return value, changed


class StreamGuard:
    """Applies response rules to an SSE stream: text deltas are held back by a window, then released.

    A match split across chunks is caught because nothing within `window` characters of the newest text
    goes out; what goes out is final (redacted, counted, or the stream is ended by GuardrailBlocked).
    """

    def __init__(self, rules: tuple[GuardRule, ...], api: str) -> None:
        self.rules = rules
        self.api = api
        self.window = max(rule.window for rule in rules)
        self.buffer = b""
        self.pending: dict[int, str] = {}  # choice / content-block index -> text held back
        self.template: dict[str, Any] | None = None  # the last OpenAI chunk, to carry flushed text

    def __call__(self, data: bytes, end: bool) -> bytes:
        """Client bytes in, client bytes out (whole events only; a partial event waits for its end)."""
        self.buffer += data
        cut = self.buffer.rfind(b"\n\n")
        if cut < 0:
            if not end:
                return b""
            events, self.buffer = b"", self.buffer
        else:
            events, self.buffer = self.buffer[: cut + 2], self.buffer[cut + 2 :]
        out = [self._event(event) for event in events.split(b"\n\n") if event.strip()]
        if end:
            out.append(self._flush_all())
            out.append(self.buffer)
            self.buffer = b""
        return b"".join(out)

    def _release(self, index: int, text: str, final: bool) -> str:
        """The part of the held text for `index` that can go out now, with the rules applied."""
        held = self.pending.get(index, "") + text
        limit = len(held) if final else len(held) - self.window
        if limit <= 0:
            self.pending[index] = held
            return ""
        by_rule = [(rule, rule.findings(held)) for rule in self.rules]
        for _, found in by_rule:  # a match the cut would split stays held whole
            for start, end, _, _ in found:
                if start < limit < end:
                    limit = start
        ready, self.pending[index] = held[:limit], held[limit:]
        for rule, found in by_rule:
            done = [f for f in found if f[1] <= limit]
            if done:
                ready = act(rule, ready, done, SIDE) if rule.action != "Redact" else ready
        if any(rule.action == "Redact" for rule in self.rules):
            ready = enforce(tuple(r for r in self.rules if r.action == "Redact"), ready, SIDE)
        if final:
            self.pending.pop(index, None)
        return ready

    def _event(self, event: bytes) -> bytes:
        lines = event.split(b"\n")
        at = next((i for i, line in enumerate(lines) if line.startswith(b"data:")), None)
        if at is None:
            return event + b"\n\n"
        payload = lines[at][5:].strip()
        if payload == b"[DONE]":
            return self._flush_all() + event + b"\n\n"
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return event + b"\n\n"
        if not isinstance(data, dict):
            return event + b"\n\n"
        prefix = b""
        if self.api == "anthropic":
            changed, prefix = self._anthropic(data)
        else:
            changed = self._openai(data)
        if not changed:
            return prefix + event + b"\n\n"
        lines[at] = b"data: " + orjson.dumps(data)
        return prefix + b"\n".join(lines) + b"\n\n"

    def _openai(self, data: dict[str, Any]) -> bool:
        changed = False
        for choice in data.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            delta = choice.get("delta")
            final = choice.get("finish_reason") is not None
            text = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(text, str) or (final and self.pending.get(index)):
                self.template = data
                released = self._release(index, text or "", final)
                if isinstance(delta, dict) and (released or isinstance(text, str)):
                    delta["content"] = released
                    changed = True
        return changed

    def _anthropic(self, data: dict[str, Any]) -> tuple[bool, bytes]:
        kind = data.get("type")
        index = data.get("index", 0)
        if kind == "content_block_delta":
            delta = data.get("delta")
            if (
                isinstance(delta, dict)
                and delta.get("type") == "text_delta"
                and isinstance(delta.get("text"), str)
            ):
                delta["text"] = self._release(index, delta["text"], False)
                return True, b""
        elif kind == "content_block_stop" and self.pending.get(index):
            return False, self._anthropic_delta(index, self._release(index, "", True))
        elif kind == "message_stop":
            return False, self._flush_all()
        return False, b""

    @staticmethod
    def _anthropic_delta(index: int, text: str) -> bytes:
        body = {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}
        return b"event: content_block_delta\ndata: " + orjson.dumps(body) + b"\n\n"

    def _flush_all(self) -> bytes:
        """Events carrying every text still held (before [DONE], message_stop or the end)."""
        out = []
        for index in [i for i, text in self.pending.items() if text]:
            text = self._release(index, "", True)
            if self.api == "anthropic":
                out.append(self._anthropic_delta(index, text))
            else:
                chunk = dict(self.template or {"object": "chat.completion.chunk"})
                chunk["choices"] = [{"index": index, "delta": {"content": text}, "finish_reason": None}]
                chunk.pop("usage", None)
                out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
        self.pending.clear()
        return b"".join(out)
