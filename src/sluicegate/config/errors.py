"""Configuration problems: each names the file, the resource and the field path it is about."""

from __future__ import annotations

from dataclasses import dataclass

NOT_SUPPORTED_YET = "is not supported yet"


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with the configuration, e.g. a dangling reference or an unknown field."""

    file: str  # the file the resource came from ("<environment>" for generated ones)
    resource: str  # "AIGatewayRoute default/my-route", or "" when the problem is about the file
    field: str  # a path like "spec.rules[0].backendRefs[1].name", or ""
    message: str
    line: int | None = None  # 1-based; set for YAML syntax errors
    unsupported: bool = False  # valid for Envoy AI Gateway, but Sluicegate does not implement it yet

    def __str__(self) -> str:
        """`file.yaml: Kind ns/name: spec.field: message` (empty parts are left out)."""
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return ": ".join(part for part in (where, self.resource, self.field, self.message) if part)


class ConfigError(Exception):
    """The configuration cannot be used; `problems` lists everything found, not just the first."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        """One problem per line."""
        return "\n".join(str(problem) for problem in self.problems)

    @property
    def only_unsupported(self) -> bool:
        """Whether every problem is a "not supported yet" one (the config is valid for Envoy AI Gateway)."""
        return all(problem.unsupported for problem in self.problems)
