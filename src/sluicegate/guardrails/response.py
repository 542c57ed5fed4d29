"""Response guardrails: whole answers, and streams through a rolling hold-back window (OpenAI, Anthropic)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from sluicegate.guardrails.engine import GuardRule, act, count, enforce, walk

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


def response_texts(api: str, out: bytes) -> list[str]:
    """The completion texts of a whole JSON answer (for a moderation backend); none for errors, non-JSON."""
    try:
        body = orjson.loads(out)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(body, dict) or "error" in body:
        return []
    texts: list[str] = []
    if api == "anthropic":
        for block in body.get("content") or ():
            if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
                texts.append(block["text"])
        return texts
    for choice in body.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        if isinstance(choice.get("text"), str):
            texts.append(choice["text"])
        message = choice.get("message")
        if isinstance(message, dict):
            walk(message.get("content"), lambda text: texts.append(text) or text)
    return texts


# --- JSON-aware redaction of tool-call arguments ----------------------------------------------------------

_STRUCTURE = frozenset('{}[],:" \t\r\n')
JsonState = tuple[bool, int]  # (inside a string?, escape: 0 none, -1 after a backslash, n hex digits to come)
JSON_START: JsonState = (False, 0)


def scan_json(text: str, state: JsonState) -> tuple[bytearray, dict[int, tuple[int, int]], JsonState]:
    """Per character of a piece of JSON text: 1 string content, 0 part of a bare value, 2 to keep (quotes,
    structure, the rest of an escape begun before the piece); each escape sequence's span; the state after."""
    kinds = bytearray(len(text))
    escapes: dict[int, tuple[int, int]] = {}
    in_string, escape = state
    begun = -1 if escape else 0  # where the current escape began; -1: in text already sent
    for i, ch in enumerate(text):
        if not in_string:
            if ch in _STRUCTURE:
                kinds[i] = 2
                in_string = ch == '"'
            continue
        if escape:
            kinds[i] = 1 if begun >= 0 else 2
            escape = (4 if ch == "u" else 0) if escape == -1 else escape - 1
            if not escape and begun >= 0:
                escapes.update(dict.fromkeys(range(begun, i + 1), (begun, i + 1)))
        elif ch == "\\":
            kinds[i], escape, begun = 1, -1, i
        elif ch == '"':
            kinds[i], in_string = 2, False
        else:
            kinds[i] = 1
    return kinds, escapes, (in_string, escape)


def redact_json(text: str, found: list[tuple[int, int, str, str]], state: JsonState) -> str:
    """Raw JSON text with each finding masked so that it stays valid JSON: inside a string the mask is
    JSON-escaped (a cut escape sequence is masked whole); a bare value (a number) becomes the mask as a
    string; quotes and structure between are kept."""
    kinds, escapes, _ = scan_json(text, state)
    parts: list[str] = []
    at = 0
    for start, end, _, mask in found:
        if start < at:
            continue
        i = start
        while i < end:
            kind, j = kinds[i], i
            while j < end and kinds[j] == kind:
                j += 1
            run_start, run_end, i = i, j, j
            if kind == 2:
                continue
            if kind == 1:
                run_start = max(escapes.get(run_start, (run_start, 0))[0], at)
                run_end = escapes.get(run_end - 1, (0, run_end))[1]
                replacement = orjson.dumps(mask).decode()[1:-1]
            else:  # a bare value: the whole token, as a string
                while run_start > at and kinds[run_start - 1] == 0:
                    run_start -= 1
                while run_end < len(text) and kinds[run_end] == 0:
                    run_end += 1
                replacement = orjson.dumps(mask).decode()
            parts += (text[at:run_start], replacement)
            at = i = max(run_end, i)
    parts.append(text[at:])
    return "".join(parts)


class StreamGuard:
    """Applies response rules to an SSE stream: text and tool-argument deltas are held back by a window.

    A match split across chunks is caught because nothing within `window` characters of the newest text
    goes out; what goes out is final (redacted, counted, or the stream is ended by GuardrailBlocked).
    Tool-call arguments (OpenAI `delta.tool_calls[].function.arguments`, Anthropic `input_json_delta`) are
    raw JSON text: they get the same detectors and window, and Redact keeps them valid JSON.
    With `collect`, the text released per choice / content block is kept for a moderation backend.
    """

    def __init__(
        self, rules: tuple[GuardRule, ...], api: str, collect: bool = False, window: int = 0
    ) -> None:
        self.rules = rules
        self.redact = tuple(rule for rule in rules if rule.action == "Redact")
        self.api = api
        self.window = max(window, *(rule.window for rule in rules)) if rules else window
        self.buffer = b""
        # held-back text per key: a choice / content-block index (int) for text, an Anthropic tool block's
        # index or an OpenAI (choice index, tool call index) for tool arguments (those keys are in `json`)
        self.pending: dict[Any, str] = {}
        self.json: dict[Any, JsonState] = {}
        self.template: dict[str, Any] | None = None  # the last OpenAI chunk, to carry flushed text
        self.collected: dict[Any, list[str]] | None = {} if collect else None
        self.collected_chars = 0
        self.finishing = False  # a choice, content block or message ended since the owner last looked

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

    def texts(self) -> list[str]:
        """The text so far (released, then held back), one string per choice / content block."""
        collected = self.collected or {}
        keys = [*collected, *(k for k in self.pending if k not in collected and k not in self.json)]
        return ["".join(collected.get(k, ())) + self.pending.get(k, "") for k in keys]

    def _release(self, key: Any, text: str, final: bool) -> str:
        """The part of the held text for `key` that can go out now, with the rules applied."""
        held = self.pending.get(key, "") + text
        limit = len(held) if final else len(held) - self.window
        if limit <= 0:
            self.pending[key] = held
            return ""
        by_rule = [(rule, rule.findings(held)) for rule in self.rules]
        for _, found in by_rule:  # a match the cut would split stays held whole
            for start, end, _, _ in found:
                if start < limit < end:
                    limit = start
        ready, self.pending[key] = held[:limit], held[limit:]
        for rule, found in by_rule:
            done = [f for f in found if f[1] <= limit]
            if done:
                ready = act(rule, ready, done, SIDE) if rule.action != "Redact" else ready
        state = self.json.get(key)
        if state is not None:
            for rule in self.redact:
                if found := rule.findings(ready):
                    for _, _, detector, _ in found:
                        count(rule, detector, SIDE)
                    ready = redact_json(ready, found, state)
            self.json[key] = scan_json(ready, state)[2]
        else:
            if self.redact:
                ready = enforce(self.redact, ready, SIDE)
            if self.collected is not None and ready:
                self.collected.setdefault(key, []).append(ready)
                self.collected_chars += len(ready)
        if final:
            self.pending.pop(key, None)
        return ready

    def _event(self, event: bytes) -> bytes:
        lines = event.split(b"\n")
        at = next((i for i, line in enumerate(lines) if line.startswith(b"data:")), None)
        if at is None:
            return event + b"\n\n"
        payload = lines[at][5:].strip()
        if payload == b"[DONE]":
            self.finishing = True
            return self._flush_all() + event + b"\n\n"
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return event + b"\n\n"
        if not isinstance(data, dict):
            return event + b"\n\n"
        if self.api == "anthropic":
            changed, prefix = self._anthropic(data)
        else:
            changed, prefix = self._openai(data)
        if not changed:
            return prefix + event + b"\n\n"
        lines[at] = b"data: " + orjson.dumps(data)
        return prefix + b"\n".join(lines) + b"\n\n"

    def _openai(self, data: dict[str, Any]) -> tuple[bool, bytes]:
        changed, prefix = False, b""
        for choice in data.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            delta = choice.get("delta")
            final = choice.get("finish_reason") is not None
            if not isinstance(delta, dict):
                delta = {}
            for call in delta.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                    key = (index, call.get("index", 0))
                    self.json.setdefault(key, JSON_START)
                    self.template = data
                    released = self._release(key, function["arguments"], False)
                    if released != function["arguments"]:
                        function["arguments"], changed = released, True
            text = delta.get("content")
            if isinstance(text, str) or (final and self.pending.get(index)):
                self.template = data
                released = self._release(index, text or "", final)
                if released != text and (released or isinstance(text, str)):
                    delta["content"] = released
                    choice["delta"] = delta
                    changed = True
            if final:
                self.finishing = True
                prefix += self._flush([k for k in self.pending if isinstance(k, tuple) and k[0] == index])
        return changed, prefix

    def _anthropic(self, data: dict[str, Any]) -> tuple[bool, bytes]:
        kind = data.get("type")
        index = data.get("index", 0)
        if kind == "content_block_delta":
            delta = data.get("delta")
            if not isinstance(delta, dict):
                return False, b""
            field = {"text_delta": "text", "input_json_delta": "partial_json"}.get(delta.get("type"))
            if field is None or not isinstance(delta.get(field), str):
                return False, b""
            if field == "partial_json":
                self.json.setdefault(index, JSON_START)
            released = self._release(index, delta[field], False)
            if released == delta[field]:
                return False, b""
            delta[field] = released
            return True, b""
        if kind == "content_block_stop":
            self.finishing = True
            return False, self._flush([index] if self.pending.get(index) else [])
        if kind in ("message_delta", "message_stop"):
            self.finishing = True
            return False, self._flush_all()
        return False, b""

    def _flush(self, keys: list[Any]) -> bytes:
        """Events carrying the text still held for these keys, in the client API's shape."""
        out = []
        for key in keys:
            text = self._release(key, "", True)
            is_json = self.json.pop(key, None) is not None
            if self.api == "anthropic":
                field, kind = ("partial_json", "input_json_delta") if is_json else ("text", "text_delta")
                body = {"type": "content_block_delta", "index": key, "delta": {"type": kind, field: text}}
                out.append(b"event: content_block_delta\ndata: " + orjson.dumps(body) + b"\n\n")
                continue
            if isinstance(key, tuple):
                call = {"index": key[1], "function": {"arguments": text}}
                choice = {"index": key[0], "delta": {"tool_calls": [call]}, "finish_reason": None}
            else:
                choice = {"index": key, "delta": {"content": text}, "finish_reason": None}
            chunk = dict(self.template or {"object": "chat.completion.chunk"})
            chunk["choices"] = [choice]
            chunk.pop("usage", None)
            out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
        return b"".join(out)

    def _flush_all(self) -> bytes:
        """Events carrying every text still held (before [DONE], message_stop or the end)."""
        out = self._flush([key for key, text in self.pending.items() if text])
        self.pending.clear()
        return out


class ModeratedStream:
    """A StreamGuard whose released text also goes to a moderation backend, at the end of each choice or
    content block (before the text it released then goes out) and every `stride` new characters.

    Text already sent cannot be recalled: a flag ends the stream with an error event after it.
    """

    def __init__(
        self, guard: StreamGuard, check: Callable[[list[str]], Awaitable[None]], stride: int
    ) -> None:
        self.guard = guard
        self.check = check
        self.stride = stride
        self.checked = 0  # collected characters the last check saw

    def __call__(self, data: bytes, end: bool) -> bytes | Awaitable[bytes]:
        out = self.guard(data, end)
        guard = self.guard
        new = guard.collected_chars - self.checked
        if new and (end or guard.finishing or new >= self.stride):
            guard.finishing = False
            return self._moderated(out)
        guard.finishing = False
        return out

    async def _moderated(self, out: bytes) -> bytes:
        self.checked = self.guard.collected_chars
        await self.check(self.guard.texts())
        return out
