"""Read YAML keeping the line of every value, and turn validation errors into located Problems."""

from __future__ import annotations

import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from narro.errors import Problem

# Past this, a manifest is almost certainly the wrong file (an audio file, a dump). A course of
# 10,000 lesson-length narrations written inline is about 7 MB (bench/noop.py).
MAX_YAML_BYTES = 32_000_000

FieldPath = tuple[str | int, ...]


@dataclass
class LocatedYaml:
    """A parsed YAML document and the source line of each value in it."""

    file: Path
    data: Any
    lines: dict[FieldPath, int] = field(default_factory=dict)

    def line_of(self, path: FieldPath) -> int | None:
        """Line of the value at `path`, or of its nearest located parent."""
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None

    def problem(self, path: FieldPath, message: str) -> Problem:
        return Problem(self.file, self.line_of(path), dotted(path), message)


def dotted(path: FieldPath) -> str:
    """narrations[2].text style name for a field path."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


def read_text(file: Path, what: str) -> str:
    """Read a UTF-8 text file, raising a single Problem the user can act on."""
    from narro.errors import ManifestError

    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ManifestError([Problem(file, None, what, "file not found")]) from None
    except IsADirectoryError:
        raise ManifestError([Problem(file, None, what, "is a directory, expected a YAML file")]) from None
    except OSError as exc:
        raise ManifestError([Problem(file, None, what, f"cannot read: {exc.strerror}")]) from None
    if len(raw) > MAX_YAML_BYTES:
        raise ManifestError([Problem(file, None, what, f"file is {len(raw):,} bytes; is this the right file?")])
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ManifestError(
            [Problem(file, line, what, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x}); save the file as UTF-8")]
        ) from None


def load_located(file: Path, what: str) -> LocatedYaml:
    """Parse one YAML document; syntax errors and duplicate keys become Problems."""
    from narro.errors import ManifestError

    text = read_text(file, what)
    parsed = _parsed_fast(text)
    if parsed is not None:
        return _located(file, *parsed)
    try:
        # The reader rejects control characters as soon as it is built, so build it in here.
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:
        line: int | None = text[: exc.position].count("\n") + 1
        message = f"contains control character U+{exc.character:04X}, which YAML does not allow; remove it"
        raise ManifestError([Problem(file, line, what, message)]) from None
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        message = f"YAML syntax error: {exc.problem or exc.context}"
        if exc.problem and exc.context and exc.context_mark and exc.context_mark.line + 1 != line:
            message += f" ({exc.context} on line {exc.context_mark.line + 1})"
        if _tab_indented(text, line) or "'\\t'" in (exc.problem or ""):
            message += "; use spaces, not tabs, to indent YAML"
        raise ManifestError([Problem(file, line, what, message)]) from None
    except yaml.YAMLError as exc:
        raise ManifestError([Problem(file, None, what, f"YAML error: {exc}")]) from None
    finally:
        loader.dispose()
    return _located(file, node, data)


def _located(file: Path, node: yaml.Node | None, data: Any) -> LocatedYaml:
    """The document with the line of every field; ManifestError for keys that appear twice."""
    from narro.errors import ManifestError

    located = LocatedYaml(file, data)
    if node is None:
        located.lines[()] = 1  # an empty document: point at its first line
    duplicates: list[Problem] = []
    if node is not None:
        _record_lines(node, (), located, duplicates)
    if duplicates:
        raise ManifestError(duplicates)
    return located


def _parsed_fast(text: str) -> tuple[yaml.Node | None, Any] | None:
    """The document's node and data through libyaml (about 20x faster on a 10,000-narration course),
    or None when libyaml is missing or finds any problem: the pure-Python parser then says which, in
    the words and at the lines the messages above are written for."""
    loader_class = getattr(yaml, "CSafeLoader", None)
    if loader_class is None:
        return None
    try:
        loader = loader_class(text)
    except yaml.YAMLError:
        return None
    try:
        node = loader.get_single_node()
        return node, (loader.construct_document(node) if node is not None else None)
    except yaml.YAMLError:
        return None
    finally:
        loader.dispose()


def _tab_indented(text: str, line: int | None) -> bool:
    """Whether the 1-based `line` of `text` has a tab in its indentation (YAML forbids it)."""
    lines = text.splitlines()
    if line is None or not 0 < line <= len(lines):
        return False
    row = lines[line - 1]
    return "\t" in row[: len(row) - len(row.lstrip())]


def _record_lines(node: yaml.Node, path: FieldPath, located: LocatedYaml, duplicates: list[Problem]) -> None:
    located.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                duplicates.append(
                    Problem(located.file, key_node.start_mark.line + 1, dotted(path + (key,)), "key appears twice")
                )
            seen.add(key)
            _record_lines(value_node, path + (key,), located, duplicates)
            located.lines[path + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(item, path + (index,), located, duplicates)


def validation_problems(
    located: LocatedYaml, exc: ValidationError, base: FieldPath, model: type[BaseModel]
) -> list[Problem]:
    """Pydantic errors as located Problems, with 'did you mean' for misspelt fields."""
    problems = []
    for error in exc.errors():
        path = base + tuple(part for part in error["loc"] if not isinstance(part, str) or not part.startswith("function-"))
        if error["type"] == "extra_forbidden":
            name = str(path[-1])
            allowed = _fields_at(model, path[len(base) : -1])
            hint = difflib.get_close_matches(name, allowed, n=1)
            suggestion = f"; did you mean '{hint[0]}'?" if hint else f"; allowed: {', '.join(sorted(allowed))}"
            message = f"unknown field '{name}'{suggestion}"
        elif error["type"] == "missing":
            message = "required field is missing"
        elif error["type"] == "string_pattern_mismatch":
            message = f"'{error['input']}' is not a slug: use lowercase letters, digits and single hyphens (e.g. 'l01-intro')"
        elif error["type"] == "too_short" and isinstance(error.get("input"), list):
            message = "is empty: list at least one entry"
        else:
            message = error["msg"].removeprefix("Value error, ")
        problems.append(located.problem(path, message))
    return problems


def _fields_at(model: type[BaseModel], path: FieldPath) -> list[str]:
    """Field names of the (nested) model that `path` leads to inside `model`."""
    current: Any = model
    in_dict = False
    for part in path:
        if isinstance(part, int) or in_dict:  # a list index or a dict key, not a field name
            in_dict = False
            continue
        info = current.model_fields.get(part) if hasattr(current, "model_fields") else None
        if info is None:
            return []
        in_dict = _is_dict(info.annotation)
        current = _inner_model(info.annotation)
    return list(current.model_fields) if hasattr(current, "model_fields") else []


def _inner_model(annotation: Any) -> Any:
    """The BaseModel inside list[X], X | None, dict[str, X] and the like."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _is_dict(annotation: Any) -> bool:
    """Whether a field holds a mapping (dict[str, X], possibly optional), whose keys are not field names."""
    if typing.get_origin(annotation) is dict:
        return True
    return any(_is_dict(arg) for arg in typing.get_args(annotation) if arg is not type(None))
