"""Adding a lexicon entry to a course's lexicon file, as the dashboard does from a flagged clip.

The entry goes to the manifest's own `lexicon:` block when it has one, else to `lexicon.yaml`
beside the manifest (narro.lexicon reads both). It is checked as the manifest would check it
(FILE:LINE: field: message, at the line it would have) before anything is written, and the course
must still load afterwards, or the file is put back as it was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from narro.errors import ManifestError, Problem
from narro.files import replace_file
from narro.lexicon import LEXICON_FILENAME, Lexicon, lexicon_terms, parse
from narro.manifest import Course, load_course
from narro.yamlfile import FieldPath, LocatedYaml, load_located


@dataclass(frozen=True)
class LexiconAddition:
    """What `add_lexicon_entry` wrote, and which clips the term is in (to re-render them)."""

    file: Path
    line: int
    term: str
    clips: tuple[str, ...]


def clips_with_term(course: Course, term: str) -> tuple[str, ...]:
    """The narrations whose script contains a lexicon term of the course (as the lexicon matches it)."""
    entry = next((e for e in course.lexicon.entries if e.term == term), None)
    if entry is None:
        return ()
    return tuple(n.id for n in course.narrations if entry.pattern().search(n.written))


def entry_value(say: str, ipa: str, ignore_case: bool) -> Any:
    """The YAML value of an entry from the form's fields: a plain respelling when that is all there is."""
    say, ipa = say.strip(), ipa.strip()
    if say and not ipa and not ignore_case:
        return say
    value: dict[str, Any] = {}
    if say:
        value["say"] = say
    if ipa:
        value["ipa"] = ipa
    if ignore_case:
        value["ignore_case"] = True
    return value


def add_lexicon_entry(manifest: Path, term: str, value: Any) -> LexiconAddition:
    """Add `term: value` to the course's lexicon file; raises ManifestError (file untouched) for a bad entry."""
    course = load_course(manifest)
    term = term.strip()
    target, base, lines, new_line, indent = _placement(manifest)
    original = target.read_text(encoding="utf-8") if target.exists() else None
    existing = _existing(target, base)
    located = LocatedYaml(target, None, {base + (term,): new_line})
    entries, problems = parse({term: value}, located, base)
    if term in existing:
        problems.append(located.problem(base + (term,), f"'{term}' already has an entry at line {existing[term]}; "
                                                        "edit it there"))
    if target.name == LEXICON_FILENAME:
        own = _existing(manifest, ("lexicon",))
        if term in own:
            problems.append(Problem(manifest, own[term], f"lexicon.{term}",
                                    f"the manifest's own entry for '{term}' wins over {LEXICON_FILENAME}; edit it there"))
    for entry in entries:  # an IPA-only entry must be sayable by every voice whose scripts contain the term
        for narration in course.narrations:
            try:
                lexicon_terms(Lexicon((entry,)), narration.written, narration.voice,
                              course.voices.resolve(narration.voice, narration.tier))
            except ManifestError as exc:
                problems.extend(exc.problems)
    if problems:
        raise ManifestError(list(dict.fromkeys(problems)))
    # One line: the one-key flow mapping without its braces (YAML quotes whatever needs it).
    dumped = yaml.safe_dump({term: value}, default_flow_style=True, allow_unicode=True, width=10_000, sort_keys=False)
    written = indent + dumped.strip()[1:-1] + "\n"
    updated = lines[:new_line - 1] + [written] + lines[new_line - 1:]
    _replace(target, "".join(updated), original, manifest)
    return LexiconAddition(target, new_line, term, clips_with_term(load_course(manifest), term))


def _placement(manifest: Path) -> tuple[Path, FieldPath, list[str], int, str]:
    """Which file takes a new entry, under which key, its lines, the line the entry will have, and its indent.

    The manifest when it has a block `lexicon:` mapping (or an empty `lexicon: {}`, made a block),
    else lexicon.yaml beside it (created when missing), at its end.
    """
    lines = manifest.read_text(encoding="utf-8").splitlines(keepends=True)
    for index, line in enumerate(lines):
        if re.match(r"^lexicon:\s*\{\s*\}\s*(#.*)?$", line):
            lines[index] = "lexicon:\n"
            return manifest, ("lexicon",), lines, index + 2, "  "
        if re.match(r"^lexicon:\s*(#.*)?$", line):
            last, indent = index, ""
            for follower in range(index + 1, len(lines)):
                if lines[follower].strip() and not lines[follower].lstrip().startswith("#"):
                    if not lines[follower][0].isspace():
                        break
                    last = follower
                    indent = indent or lines[follower][:len(lines[follower]) - len(lines[follower].lstrip())]
            if last == index or lines[last].strip().startswith(("-", "{")):
                break  # not a block mapping under the key: use the shared file
            lines[last] = lines[last] if lines[last].endswith("\n") else lines[last] + "\n"
            return manifest, ("lexicon",), lines, last + 2, indent
    shared = manifest.parent / LEXICON_FILENAME
    lines = shared.read_text(encoding="utf-8").splitlines(keepends=True) if shared.exists() else []
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    if not lines:
        lines = ["# How to say terms (narro.lexicon): term: respelling, or term: {say: ..., ipa: ...}\n"]
    return shared, (), lines, len(lines) + 1, ""


def _existing(path: Path, base: FieldPath) -> dict[str, int]:
    """The terms a file already has under `base`, with their lines."""
    if not path.exists():
        return {}
    located = load_located(path, "lexicon")
    data = located.data
    for key in base:
        data = data.get(key) if isinstance(data, dict) else None
    if not isinstance(data, dict):
        return {}
    return {str(term).strip(): located.line_of(base + (str(term),)) or 0 for term in data}


def _replace(target: Path, text: str, original: str | None, manifest: Path) -> None:
    """Write `text` whole (a temporary file renamed over it), then put it back if the course no longer loads."""
    replace_file(target, text)
    try:
        load_course(manifest)
    except ManifestError:
        if original is None:
            target.unlink()
        else:
            replace_file(target, original)
        raise
