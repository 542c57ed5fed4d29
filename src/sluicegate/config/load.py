"""Read YAML files and folders into raw documents, substituting ${VAR} from the environment."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sluicegate.config.errors import ConfigError, ConfigProblem

_STR_TAG = "tag:yaml.org,2002:str"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
# $${VAR} is an escape for a literal ${VAR}; ${VAR:-default} and ${VAR-default} give a fallback.
_VAR = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")


class _Loader(yaml.SafeLoader):
    """SafeLoader without the timestamp type: as in Kubernetes, `2025-01-01` stays a string."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass(frozen=True, slots=True)
class RawDocument:
    """One YAML document (a mapping) and where it came from."""

    file: str
    index: int  # position of the document in its file, 0-based
    line: int  # 1-based line where the document starts
    data: dict[str, Any]


@dataclass(slots=True)
class LoadResult:
    """Everything read from the given paths: documents, the files they came from, and problems."""

    documents: list[RawDocument] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    problems: list[ConfigProblem] = field(default_factory=list)


def resource_label(data: Any) -> str:
    """ "Kind namespace/name" for a document, as far as it can be told; "" when it cannot."""
    if not isinstance(data, Mapping):
        return ""
    kind = data.get("kind")
    meta = data.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    if not isinstance(kind, str) or not kind:
        return ""
    if not isinstance(name, str) or not name:
        return kind
    namespace = meta.get("namespace")
    namespace = namespace if isinstance(namespace, str) and namespace else "default"
    return f"{kind} {namespace}/{name}"


def substitute(value: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    """Replace ${VAR} (and ${VAR:-default}, ${VAR-default}) in value; also return the unset names."""
    missing: list[str] = []

    def replace(match: re.Match[str]) -> str:
        escaped, name, op, default = match.groups()
        if escaped:
            return match.group(0)[1:]
        current = env.get(name)
        if op == ":-" and not current:
            return default
        if op == "-" and current is None:
            return default
        if current is None:
            missing.append(name)
            return match.group(0)
        return current

    return _VAR.sub(replace, value), missing


def _join(path: str, key: str) -> str:
    """Append a mapping key to a field path."""
    return f"{path}.{key}" if path else key


class _Walker:
    """Substitutes variables in the scalar nodes of one composed document, recording problems."""

    def __init__(self, loader: _Loader, env: Mapping[str, str]) -> None:
        self.loader = loader
        self.env = env
        self.missing: list[tuple[str, str]] = []  # (variable, field path)
        self.duplicates: list[tuple[str, int]] = []  # (field path, line)
        self.seen: set[int] = set()  # aliased nodes are visited once

    def walk(self, node: yaml.Node, path: str) -> None:
        """Visit node and its children; path is the field path of node."""
        if id(node) in self.seen:
            return
        self.seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _STR_TAG and "${" in node.value:
                new, missing = substitute(node.value, self.env)
                self.missing.extend((name, path) for name in missing)
                if new != node.value:
                    node.value = new
                    if node.style is None:  # plain scalars are re-typed: `port: ${PORT}` becomes an int
                        node.tag = self.loader.resolve(yaml.ScalarNode, new, (True, False))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.walk(item, f"{path}[{i}]")
        elif isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
                if key in seen and key != "<<":
                    self.duplicates.append((_join(path, key), key_node.start_mark.line + 1))
                seen.add(key)
                self.walk(value_node, _join(path, key))


def parse_yaml(text: str, file: str, env: Mapping[str, str] | None = None) -> LoadResult:
    """Parse a multi-document YAML text; empty documents are skipped, ${VAR} substituted."""
    env = os.environ if env is None else env
    result = LoadResult(files=[file])
    loader = _Loader(text)
    index = 0
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            walker = _Walker(loader, env)
            walker.walk(node, "")
            data = loader.construct_document(node)
            if data is None:
                continue
            line = node.start_mark.line + 1
            label = resource_label(data)
            if not isinstance(data, dict):
                result.problems.append(
                    ConfigProblem(
                        file,
                        "",
                        "",
                        f"document {index + 1} (line {line}) is a {type(data).__name__}, "
                        "not a mapping with apiVersion, kind, metadata and spec",
                        line=line,
                    )
                )
            for name, path in walker.missing:
                result.problems.append(
                    ConfigProblem(
                        file,
                        label,
                        path,
                        f"environment variable {name} is not set "
                        f"(write $${{{name}}} for a literal ${{{name}}}, or ${{{name}:-default}})",
                    )
                )
            for path, dup_line in walker.duplicates:
                result.problems.append(ConfigProblem(file, label, path, "duplicate key", line=dup_line))
            if isinstance(data, dict):
                result.documents.append(RawDocument(file, index, line, data))
            index += 1
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else None
        column = f" (column {mark.column + 1})" if mark else ""
        what = ": ".join(str(part) for part in (err.context, err.problem) if part)
        result.problems.append(ConfigProblem(file, "", "", f"YAML syntax error: {what}{column}", line=line))
    except yaml.YAMLError as err:
        result.problems.append(ConfigProblem(file, "", "", f"YAML error: {err}"))
    finally:
        loader.dispose()
    return result


def _files_of(path: str) -> tuple[list[str], ConfigProblem | None]:
    """The files a path stands for: itself, or the *.yaml/*.yml directly in a folder, sorted."""
    p = Path(path)
    if p.is_dir():
        names = sorted(c.name for c in p.iterdir() if c.is_file() and c.suffix in (".yaml", ".yml"))
        if not names:
            return [], ConfigProblem(path, "", "", "folder has no .yaml or .yml files")
        return [os.path.join(path, name) for name in names], None
    if not p.exists():
        return [], ConfigProblem(path, "", "", "no such file or folder")
    return [path], None


def read_documents(paths: Sequence[str], env: Mapping[str, str] | None = None) -> LoadResult:
    """Read every path (file or folder) into documents, collecting problems instead of raising."""
    result = LoadResult()
    for path in paths:
        files, problem = _files_of(str(path))
        if problem is not None:
            result.problems.append(problem)
        for file in files:
            try:
                text = Path(file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as err:
                result.problems.append(ConfigProblem(file, "", "", f"cannot read: {err}"))
                continue
            one = parse_yaml(text, file, env)
            result.documents.extend(one.documents)
            result.files.extend(one.files)
            result.problems.extend(one.problems)
    return result


def load_documents(paths: Sequence[str], env: Mapping[str, str] | None = None) -> list[RawDocument]:
    """Read every path into documents; raise ConfigError listing all problems, if any."""
    result = read_documents(paths, env)
    if result.problems:
        raise ConfigError(result.problems)
    return result.documents
