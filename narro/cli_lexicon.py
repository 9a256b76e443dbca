"""`narro lexicon check COURSE`: the script's terms the recogniser misheard in the last render.

Every take the quality gate heard is in the catalogue (its attempt's `qa`: the script as it
should be heard, and the transcript). A clip's last render is the run of its latest heard take;
each of that run's takes counts. With COURSE given as its manifest, terms are shown as written
(and whether the lexicon has them); given as a slug, as the gate compared them.
Exit codes as the rest of the CLI: 0 the check ran, 2 invalid input.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from narro.catalogue import AttemptState, Catalogue
from narro.errors import ManifestError, NarroError
from narro.lexicon import Lexicon, Misheard, misheard_terms
from narro.settings import Settings

EXIT_INVALID = 2


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_INVALID)


@click.group("lexicon")
def lexicon_group() -> None:
    """Find the terms a pronunciation lexicon should cover."""


@lexicon_group.command("check")
@click.argument("course")
@click.option("--catalogue", "catalogue_url", default=None, metavar="URL",
              help="SQLAlchemy URL of the catalogue (default: the catalogue.url setting).")
@click.option("--json", "as_json", is_flag=True, help="Print the terms as JSON.")
def check(course: str, catalogue_url: str | None, as_json: bool) -> None:
    """List the terms of COURSE (a slug or its manifest) the recogniser misheard in the last render, with how
    often: candidates for new lexicon entries."""
    settings = click.get_current_context().find_root().obj
    settings = settings if isinstance(settings, Settings) else Settings()
    try:
        url = settings.with_flag("catalogue.url", catalogue_url, "--catalogue").catalogue.url
        scripts, lexicon, slug = _scripts(course)
        if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).expanduser().is_file():
            _fail(f"no catalogue at {url} yet: render the course first")
        history = Catalogue(url).course_attempts(slug)
    except ManifestError as error:
        for problem in error.problems:
            click.echo(str(problem), err=True)
        sys.exit(EXIT_INVALID)
    except NarroError as error:
        _fail(str(error))
        return
    if not history:
        _fail(f"no course '{slug}' in the catalogue: render it first")
    hearings = [(clip_id, scripts.get((clip_id, heard)) or [(word, word) for word in heard.split()], transcript)
                for clip_id, attempts in history.items() for heard, transcript in last_render(attempts)]
    terms = misheard_terms(hearings, lexicon)
    if as_json:
        click.echo(json.dumps({"course": slug, "takes": len(hearings), "terms": [t.as_dict() for t in terms]},
                              indent=2, ensure_ascii=False))
        return
    _print(slug, terms, len(hearings), len({clip for clip, _, _ in hearings}))


def last_render(attempts: list[AttemptState]) -> list[tuple[str, str]]:
    """(script as heard, transcript) of every take of the clip's last run that the recogniser heard."""
    heard = [(a.run_id, qa) for a in attempts
             if isinstance(qa := (a.metrics or {}).get("qa"), dict) and qa.get("transcript") is not None]
    if not heard:
        return []
    last_run = heard[-1][0]
    return [(str(qa.get("script") or ""), str(qa["transcript"])) for run, qa in heard if run == last_run]


def _scripts(course: str) -> tuple[dict[tuple[str, str], Any], Lexicon, str]:
    """For a manifest: each clip's words as written beside how they are heard, keyed by (clip, heard text)."""
    path = Path(course)
    if not (path.is_file() or path.suffix in (".yaml", ".yml")):
        return {}, Lexicon(), course
    from narro.manifest import load_course
    from narro.plan import plan

    loaded = load_course(path)
    return {(spec.narration_id, spec.heard): spec.script.words() for spec in plan(loaded)}, loaded.lexicon, loaded.slug


def _print(slug: str, terms: list[Misheard], takes: int, clips: int) -> None:
    if not takes:
        click.echo(f"{slug}: no take of the last render was heard by the recogniser (is the qa.asr check off?)")
        return
    click.echo(f"{slug}: {_count(len(terms), 'term')} misheard in the last render ({_count(clips, 'clip')}, "
               f"{_count(takes, 'take')} heard)")
    width = max((len(t.term) for t in terms), default=0)
    for term in terms:
        instead = ", ".join(f'"{heard}" x{count}' if heard else f"(nothing) x{count}"
                            for heard, count in sorted(term.heard_instead.items(), key=lambda kv: -kv[1]))
        note = "  (has a lexicon entry)" if term.in_lexicon else ""
        click.echo(f"  {term.term:<{width}}  misheard {term.misheard} of {term.spoken}  heard {instead}  "
                   f"in {', '.join(term.clips)}{note}")
    if terms:
        click.echo("A term the voice says wrongly goes in the lexicon (README: Pronunciation lexicon); "
                   "one the recogniser alone mishears needs no entry.")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
