"""The building blocks of resource parsing: a checked mapping reader, metadata and references."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sluicegate.config.errors import NOT_SUPPORTED_YET, ConfigProblem

_DURATION = re.compile(r"^(?:[0-9]{1,5}(?:h|ms|m|s)){1,4}$")
_DURATION_PART = re.compile(r"([0-9]{1,5})(h|ms|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> float:
    """Seconds in a Gateway API duration such as "60s", "1m30s", "500ms"; ValueError if malformed."""
    if not _DURATION.match(text):
        raise ValueError(f'invalid duration "{text}" (expected e.g. "60s", "1m30s", "500ms")')
    return sum(int(n) * _UNITS[unit] for n, unit in _DURATION_PART.findall(text))


def parse_rfc3339(text: str) -> int:
    """Unix seconds of an RFC 3339 timestamp such as "2025-01-01T00:00:00Z"; ValueError if malformed."""
    error = ValueError(f'invalid RFC 3339 timestamp "{text}" (expected e.g. "2025-01-01T00:00:00Z")')
    if "T" not in text.upper():
        raise error
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise error from None
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp())


class Sink:
    """Collects the problems about one resource."""

    def __init__(self, file: str, resource: str, problems: list[ConfigProblem]) -> None:
        self.file, self.resource, self.problems = file, resource, problems

    def add(self, field: str, message: str, *, unsupported: bool = False) -> None:
        """Record a problem at a field path."""
        self.problems.append(ConfigProblem(self.file, self.resource, field, message, unsupported=unsupported))

    def unsupported(self, field: str, what: str) -> None:
        """Record a "not supported yet" problem."""
        self.add(field, f"{what} {NOT_SUPPORTED_YET}", unsupported=True)


def _kind_of(value: Any) -> str:
    """A YAML-ish name for the type of a value, for messages."""
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
    }.get(type(value), type(value).__name__)


class Fields:
    """A view on one mapping that reads typed fields and reports unknown or malformed ones by path."""

    def __init__(self, data: Mapping[str, Any], path: str, sink: Sink) -> None:
        self.data, self.path, self.sink = data, path, sink
        self.known: set[str] = set()

    def at(self, key: str) -> str:
        """The field path of key."""
        return f"{self.path}.{key}" if self.path else key

    def _get(self, key: str, types: tuple[type, ...], what: str, required: bool) -> Any:
        self.known.add(key)
        value = self.data.get(key)
        if value is None:
            if required:
                self.sink.add(self.at(key), "is required")
            return None
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            self.sink.add(self.at(key), f"must be {what}, not {_kind_of(value)}")
            return None
        return value

    def text(self, key: str, *, required: bool = False, choices: tuple[str, ...] = ()) -> str | None:
        """A string field; with choices, it must be one of them."""
        value = self._get(key, (str,), "a string", required)
        if value is not None and choices and value not in choices:
            self.sink.add(self.at(key), f'"{value}" is not one of: {", ".join(choices)}')
            return None
        if value == "" and required:
            self.sink.add(self.at(key), "must not be empty")
            return None
        return value

    def integer(self, key: str, *, required: bool = False, low: int = 0, high: int = 2**31 - 1) -> int | None:
        """An integer field within [low, high]."""
        value = self._get(key, (int,), "an integer", required)
        if value is not None and not low <= value <= high:
            self.sink.add(self.at(key), f"must be between {low} and {high}, not {value}")
            return None
        return value

    def flag(self, key: str) -> bool | None:
        """A boolean field."""
        return self._get(key, (bool,), "true or false", False)

    def mapping(self, key: str, *, required: bool = False) -> Fields | None:
        """A nested mapping, as Fields."""
        value = self._get(key, (dict,), "a mapping", required)
        return None if value is None else Fields(value, self.at(key), self.sink)

    def items(self, key: str, *, required: bool = False) -> list[tuple[str, Any]]:
        """A list field as (path, item) pairs."""
        value = self._get(key, (list,), "a list", required)
        return [(f"{self.at(key)}[{i}]", item) for i, item in enumerate(value or [])]

    def mappings(self, key: str, *, required: bool = False) -> list[Fields]:
        """A list of mappings, as Fields."""
        out = []
        for path, item in self.items(key, required=required):
            if isinstance(item, dict):
                out.append(Fields(item, path, self.sink))
            else:
                self.sink.add(path, f"must be a mapping, not {_kind_of(item)}")
        return out

    def texts(self, key: str) -> list[str]:
        """A list of strings."""
        out = []
        for path, item in self.items(key):
            if isinstance(item, str):
                out.append(item)
            else:
                self.sink.add(path, f"must be a string, not {_kind_of(item)}")
        return out

    def accept(self, *keys: str) -> Any:
        """Accept fields of any shape without looking inside; returns the first one's value."""
        self.known.update(keys)
        return self.data.get(keys[0]) if keys else None

    def done(self, hints: Mapping[str, str] | None = None) -> None:
        """Report every field that was not read as unknown (with a did-you-mean when one is close)."""
        for key in self.data:
            if key in self.known:
                continue
            name = str(key)
            hint = (hints or {}).get(name)
            if hint is None:
                close = difflib.get_close_matches(name, sorted(self.known), n=1)
                hint = f'did you mean "{close[0]}"?' if close else ""
            self.sink.add(self.at(name), "unknown field" + (f" ({hint})" if hint else ""))


@dataclass(frozen=True, slots=True)
class Meta:
    """Kind, name and origin of a resource."""

    kind: str
    name: str
    namespace: str
    file: str
    creation_timestamp: str | None = None
    annotations: Mapping[str, str] | None = None

    @property
    def ref(self) -> str:
        """ "namespace/name"."""
        return f"{self.namespace}/{self.name}"

    @property
    def label(self) -> str:
        """ "Kind namespace/name", as in problems and summaries."""
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """A reference to another resource (Gateway API object/policy-target/secret reference)."""

    path: str
    name: str
    namespace: str | None = None
    group: str | None = None
    kind: str | None = None


def read_ref(f: Fields, *extra: str) -> ObjectRef | None:
    """name, namespace, group, kind (+ extra accepted keys) of a reference."""
    name = f.text("name", required=True)
    ref = ObjectRef(f.path, name or "", f.text("namespace"), f.text("group"), f.text("kind"))
    f.accept(*extra)
    f.done()
    return ref if name else None


def read_refs(f: Fields, key: str, *extra: str, required: bool = False) -> tuple[ObjectRef, ...]:
    """A list of references."""
    return tuple(r for item in f.mappings(key, required=required) if (r := read_ref(item, *extra)))
