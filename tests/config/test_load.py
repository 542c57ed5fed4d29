"""Reading YAML files and folders: multi-document, ${VAR} substitution, syntax errors with lines."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sluicegate.config.errors import ConfigError, ConfigProblem
from sluicegate.config.load import load_documents, parse_yaml, read_documents, substitute


def write(folder: Path, name: str, text: str) -> str:
    """Write a dedented YAML file and return its path."""
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_multi_document_file_skips_empty_documents(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "a.yaml",
        """\
        ---
        # only a comment
        ---
        apiVersion: v1
        kind: Secret
        metadata: {name: one}
        ---
        ---
        apiVersion: v1
        kind: Secret
        metadata: {name: two}
        """,
    )
    docs = load_documents([path], env={})
    assert [d.data["metadata"]["name"] for d in docs] == ["one", "two"]
    assert all(d.file == path for d in docs)
    assert [d.line for d in docs] == [4, 9]


def test_folder_reads_yaml_and_yml_sorted_and_not_recursively(tmp_path: Path) -> None:
    write(tmp_path, "b.yml", "kind: B\n")
    write(tmp_path, "a.yaml", "kind: A\n")
    write(tmp_path, "c.txt", "kind: C\n")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "d.yaml", "kind: D\n")
    result = read_documents([str(tmp_path)], env={})
    assert [d.data["kind"] for d in result.documents] == ["A", "B"]
    assert [Path(f).name for f in result.files] == ["a.yaml", "b.yml"]
    assert result.problems == []


def test_several_paths_keep_their_order(tmp_path: Path) -> None:
    second = write(tmp_path, "z.yaml", "kind: Z\n")
    first = write(tmp_path, "a.yaml", "kind: A\n")
    assert [d.data["kind"] for d in load_documents([second, first], env={})] == ["Z", "A"]


def test_missing_path_and_empty_folder_are_problems(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = read_documents([str(tmp_path / "nope.yaml"), str(tmp_path / "empty")], env={})
    messages = [str(p) for p in result.problems]
    assert messages == [
        f"{tmp_path / 'nope.yaml'}: no such file or folder",
        f"{tmp_path / 'empty'}: folder has no .yaml or .yml files",
    ]


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${A}", {"A": "x"}, "x"),
        ("pre-${A}-post", {"A": "x"}, "pre-x-post"),
        ("${A}${B}", {"A": "1", "B": "2"}, "12"),
        ("$${A}", {}, "${A}"),
        ("${A:-dflt}", {}, "dflt"),
        ("${A:-dflt}", {"A": ""}, "dflt"),
        ("${A-dflt}", {"A": ""}, ""),
        ("${A-dflt}", {}, "dflt"),
        ("^gpt-4.*$", {}, "^gpt-4.*$"),
        ("$A stays", {"A": "x"}, "$A stays"),
    ],
)
def test_substitute(text: str, env: dict[str, str], expected: str) -> None:
    assert substitute(text, env) == (expected, [])


def test_substitute_reports_unset_variables() -> None:
    assert substitute("${A}/${B}", {"A": "x"}) == ("x/${B}", ["B"])


def test_substitution_in_values_retypes_plain_scalars(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "a.yaml",
        """\
        kind: Backend
        port: ${PORT}
        quoted: "${PORT}"
        key: ${KEY}
        list:
          - ${KEY}
          - x
        ${KEY}: key names are not substituted
        """,
    )
    (doc,) = load_documents([path], env={"PORT": "8443", "KEY": "sk-1"})
    assert doc.data["port"] == 8443
    assert doc.data["quoted"] == "8443"
    assert doc.data["key"] == "sk-1"
    assert doc.data["list"] == ["sk-1", "x"]
    assert "${KEY}" in doc.data


def test_unset_variable_names_variable_file_resource_and_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "secret.yaml",
        """\
        apiVersion: v1
        kind: Secret
        metadata: {name: key, namespace: team}
        stringData:
          apiKey: ${NOT_SET_ANYWHERE}
        """,
    )
    with pytest.raises(ConfigError) as err:
        load_documents([path], env={})
    (problem,) = err.value.problems
    assert problem == ConfigProblem(path, "Secret team/key", "stringData.apiKey", problem.message)
    assert "NOT_SET_ANYWHERE is not set" in problem.message
    assert str(problem).startswith(f"{path}: Secret team/key: stringData.apiKey: environment variable")


def test_yaml_syntax_error_reports_file_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "broken.yaml",
        """\
        apiVersion: v1
        kind: Secret
        metadata:
          name: x
         bad: indentation
        """,
    )
    result = read_documents([path], env={})
    (problem,) = result.problems
    assert problem.line == 5
    assert "YAML syntax error" in problem.message
    assert str(problem).startswith(f"{path}:5: YAML syntax error")


def test_syntax_error_in_a_later_document_keeps_earlier_ones(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", "kind: A\n---\nkey: value\n- item\n")
    result = read_documents([path], env={})
    assert [d.data["kind"] for d in result.documents] == ["A"]
    assert result.problems[0].line == 4


def test_non_mapping_document_is_a_problem() -> None:
    result = parse_yaml("- a\n- b\n", "list.yaml", env={})
    assert result.documents == []
    assert "not a mapping" in str(result.problems[0])


def test_duplicate_keys_are_reported_with_their_path() -> None:
    result = parse_yaml("kind: Secret\nmetadata: {name: a}\nstringData:\n  k: 1\n  k: 2\n", "d.yaml", env={})
    (problem,) = result.problems
    assert (problem.resource, problem.field, problem.message, problem.line) == (
        "Secret default/a",
        "stringData.k",
        "duplicate key",
        5,
    )


def test_dates_stay_strings_as_in_kubernetes() -> None:
    result = parse_yaml("version: 2024-02-01\nwhen: 2025-01-01T00:00:00Z\n", "d.yaml", env={})
    assert result.documents[0].data == {"version": "2024-02-01", "when": "2025-01-01T00:00:00Z"}


def test_environment_defaults_to_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICEGATE_TEST_VALUE", "from-env")
    path = write(tmp_path, "a.yaml", "value: ${SLUICEGATE_TEST_VALUE}\n")
    assert load_documents([path])[0].data["value"] == "from-env"


def test_aliases_are_substituted_once_and_recursion_is_safe() -> None:
    text = "a: &k ${KEY}\nb: *k\nc: &loop [1, *loop]\n"
    (doc,) = parse_yaml(text, "alias.yaml", env={"KEY": "${OTHER}"}).documents
    assert doc.data["a"] == doc.data["b"] == "${OTHER}"
