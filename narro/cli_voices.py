"""`narro voices [add-clone | revoke]`, `narro audit`, and the consent parts of `status` and `render`.

`voices_group(listing)` turns the `narro voices` listing command into a group: `narro voices` alone
still lists, `narro voices add-clone` records a cloned voice with its consent, `narro voices revoke`
withdraws it (narro.consent). `audit` checks a course's audit trail (narro.audit). Exit codes as
the rest of the CLI: 0 done, 1 a check failed, 2 invalid input or a refusal.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import yaml

from narro import consent
from narro.errors import ConsentError, ManifestError, NarroError, ReferenceAudioError
from narro.figures import public_figures
from narro.files import replace_file
from narro.settings import Settings
from narro.store import Store, open_store

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
REFS_FOLDER = "refs"


def _settings() -> Settings:
    settings = click.get_current_context().find_root().obj
    return settings if isinstance(settings, Settings) else Settings()


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_INVALID)


def _problems(error: ManifestError) -> None:
    for problem in error.problems:
        click.echo(str(problem), err=True)
    sys.exit(EXIT_INVALID)


def _store(store_url: str | None, endpoint_url: str | None) -> Store:
    settings = _settings().with_flag("s3.endpoint_url", endpoint_url, "--endpoint-url")
    store = open_store(store_url or settings.store.url, settings.s3.endpoint_url)
    store.check()
    return store


def _sha256(path: Path) -> str:
    return consent.file_sha256(path)


store_option = click.option("--store", "store_url", default=None, metavar="DIR|s3://BUCKET/PREFIX",
                            help="Where clips are published (default: the store.url setting).")
endpoint_option = click.option("--endpoint-url", default=None, metavar="URL", help="S3 endpoint, as for render.")
voices_option = click.option("--voices", "voices_file", type=click.Path(path_type=Path, dir_okay=False),
                             default=Path("voices.yaml"), show_default=True, metavar="PATH",
                             help="The voice registry; consent.yaml and refs/ sit beside it.")


# --------------------------------------------------------------------------- narro voices add-clone


def check_reference(path: Path) -> float:
    """Refuse a recording the quality tier could not be prompted with (narro.engines.codec_lm.reference);
    returns its seconds of speech."""
    try:
        from narro.engines.codec_lm.reference import activity, read_channels
        from narro.engines.codec_lm.reference import check as refuse_unusable
    except ImportError as error:
        raise ReferenceAudioError(f"checking a reference needs the quality tier: pip install 'narro[quality]' "
                                  f"({error})") from None
    channels, rate = read_channels(path)
    found = activity(channels.mean(axis=0), rate)
    refuse_unusable(path, channels, found)
    return found.speech_s


def _checkpoint_of(voices_file: Path, given: Path | None) -> str:
    """The codec-lm checkpoint for the new voice: --checkpoint, else the one the registry's clones share."""
    if given is not None:
        if not (given / "config.json").is_file():
            raise ConsentError(f"--checkpoint {given}: no codec-lm checkpoint there (config.json missing)")
        return _relative(given.resolve(), voices_file)
    if voices_file.is_file():
        from narro.voices import TIERS, load_registry

        registry = load_registry(voices_file)
        models = {voice.model for entry in registry.registry.voices.values() for tier in TIERS
                  if (voice := entry.for_tier(tier)) is not None and voice.engine == "codec-lm"}
        if len(models) == 1:
            return _relative(Path(models.pop()), voices_file)
    raise ConsentError("--checkpoint DIR is needed: the registry has no single codec-lm checkpoint to reuse")


def _relative(path: Path, voices_file: Path) -> str:
    try:
        return path.relative_to(voices_file.resolve().parent).as_posix()
    except ValueError:
        return str(path)


def _copy_reference(reference: Path, voices_file: Path, name: str) -> str:
    """The reference copied to refs/NAME.ext beside voices.yaml (never over another recording); its path there."""
    target = voices_file.parent / REFS_FOLDER / f"{name}{reference.suffix.lower() or '.wav'}"
    if target.exists() and _sha256(target) != _sha256(reference):
        raise ConsentError(f"{target} exists and is another recording; move it away or pick another voice name")
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        shutil.copyfile(reference, target)
    return target.relative_to(voices_file.parent).as_posix()


def _registry_text(voices_file: Path, name: str, entry: dict[str, Any]) -> str:
    """voices.yaml with the new voice inserted as the first entry under `voices:`, the rest untouched."""
    if not voices_file.exists():
        return yaml.safe_dump({"default": name, "voices": {name: entry}}, sort_keys=False, allow_unicode=True,
                              width=1000)
    lines = voices_file.read_text(encoding="utf-8").splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if re.match(r"^voices:\s*(#.*)?$", line)), None)
    if start is None:
        raise ConsentError(f"{voices_file}: no block 'voices:' mapping to add the voice to")
    following = next((line for line in lines[start + 1:] if line.strip() and not line.lstrip().startswith("#")), "")
    indent = len(following) - len(following.lstrip(" ")) or 2
    block = yaml.safe_dump({name: entry}, sort_keys=False, allow_unicode=True, width=1000)
    inserted = [" " * indent + line + "\n" for line in block.splitlines()]
    if start == len(lines) - 1 and not lines[start].endswith("\n"):
        lines[start] += "\n"
    return "".join(lines[: start + 1] + inserted + lines[start + 1:])


def _write_checked_registry(voices_file: Path, text: str) -> None:
    """Write voices.yaml whole, only once the new text loads as a valid registry (ManifestError if not)."""
    from narro.voices import load_registry

    replace_file(voices_file, text, check=load_registry)


@click.command("add-clone")
@click.argument("name")
@click.option("--reference", type=click.Path(path_type=Path, dir_okay=False, exists=True), required=True,
              metavar="FILE", help="Recording of the speaker: at least 3 s of clean speech (copied to refs/).")
@click.option("--speaker", required=True, metavar="NAME", help="Full name of the person heard in the reference.")
@click.option("--consent", "document", type=click.Path(path_type=Path, dir_okay=False, exists=True), required=True,
              metavar="DOC", help="The signed consent document; its sha256 is recorded (the file is not copied).")
@click.option("--scope", "scopes", multiple=True, required=True, metavar="course:SLUG|organisation:SLUG",
              help="Where the voice may speak (repeatable).")
@click.option("--expires", type=click.DateTime(["%Y-%m-%d"]), required=True, metavar="YYYY-MM-DD",
              help="Last day the voice may speak.")
@click.option("--collected-by", required=True, metavar="NAME", help="Who collected the consent.")
@click.option("--collected-at", type=click.DateTime(["%Y-%m-%d"]), default=None, metavar="YYYY-MM-DD",
              help="When the consent was given (default: today).")
@voices_option
@click.option("--checkpoint", type=click.Path(path_type=Path, file_okay=False), default=None, metavar="DIR",
              help="codec-lm checkpoint folder (default: the one the registry's codec-lm voices share).")
@click.option("--reference-text", default=None, metavar="TEXT", help="What the reference says (default: ASR).")
def add_clone(name: str, reference: Path, speaker: str, document: Path, scopes: tuple[str, ...], expires: datetime,
              collected_by: str, collected_at: datetime | None, voices_file: Path, checkpoint: Path | None,
              reference_text: str | None) -> None:
    """Create the cloned voice NAME (quality tier, codec-lm) and its consent record, and print what was recorded.

    Refused (exit 2) when the speaker matches a public figure, the reference is not at least 3 s of
    clean speech, the scope or dates are invalid, or NAME is taken.
    """
    settings = _settings()
    given = collected_at.date() if collected_at else consent.today()
    try:
        if not SLUG.match(name):
            raise ConsentError(f"voice name '{name}' is not a slug: lowercase letters, digits and single hyphens")
        figure = public_figures(settings.consent.public_figures).match(speaker)
        if figure is not None:
            raise ConsentError(f"consent refused for voice '{name}' (rule: public-figure): speaker '{speaker}' "
                               f"matches the public figure '{figure.name}' ({figure.source}); narro never clones "
                               "a public figure")
        bad = [scope for scope in scopes if not re.match(consent.SCOPE, scope)]
        if bad:
            raise ConsentError(f"--scope {bad[0]}: expected course:SLUG or organisation:SLUG")
        if expires.date() < consent.today() or expires.date() < given:
            raise ConsentError(f"--expires {expires.date()}: already past (or before --collected-at {given})")
        registry_path = consent.consent_path(voices_file)
        records = consent.load_consent(registry_path).records
        if name in records:
            raise ConsentError(f"{registry_path} already has a consent record for voice '{name}' ({records[name].id})")
        if voices_file.is_file():
            from narro.voices import load_registry

            if load_registry(voices_file).get(name) is not None:
                raise ConsentError(f"{voices_file} already defines voice '{name}'; pick another name")
        speech_s = check_reference(reference)
        model = _checkpoint_of(voices_file, checkpoint)
        record = consent.ConsentRecord(
            id=consent.new_id(given), speaker=speaker, collected_by=collected_by, collected_at=given,
            scope=list(dict.fromkeys(scopes)), expires=expires.date(), references=[_sha256(reference)],
            document_sha256=_sha256(document))
        copied = _copy_reference(reference, voices_file, name)
        quality: dict[str, Any] = {"engine": "codec-lm", "model": model, "reference": copied}
        if reference_text:
            quality["reference_text"] = reference_text
        entry = {"description": f"Cloned voice of {speaker} (consent {record.id})", "quality": quality}
        text = _registry_text(voices_file, name, entry)
        consent.write_registry(registry_path, {**records, name: record})
        _write_checked_registry(voices_file, text)
    except ManifestError as error:
        _problems(error)
        return
    except NarroError as error:
        _fail(str(error))
        return
    click.echo(f"voice '{name}' added to {voices_file}: quality tier, codec-lm, model {model}, reference {copied} "
               f"({speech_s:.1f} s of speech)")
    click.echo(f"consent {record.id} recorded in {registry_path}: speaker {speaker}; collected by {collected_by} "
               f"on {given}; scope {', '.join(record.scope)}; expires {record.expires}; reference sha256 "
               f"{record.references[0]}; consent document sha256 {record.document_sha256}")


# --------------------------------------------------------------------------- narro voices revoke


@click.command("revoke")
@click.argument("name")
@click.option("--reason", required=True, metavar="TEXT", help="Why the consent is withdrawn (recorded).")
@voices_option
def revoke(name: str, reason: str, voices_file: Path) -> None:
    """Revoke the consent of cloned voice NAME: every later render and synthesis refuses it."""
    path = consent.consent_path(voices_file)
    try:
        record = consent.revoke(path, name, reason)
    except ManifestError as error:
        _problems(error)
        return
    except NarroError as error:
        _fail(str(error))
        return
    assert record.revoked is not None
    click.echo(f"consent {record.id} of voice '{name}' ({record.speaker}) revoked at "
               f"{record.revoked.at.isoformat()}: {reason}")
    click.echo(f"published clips made with it: narro status --voice {name}; re-render them with another voice: "
               f"narro render COURSE.yaml --replace-voice {name}=OTHER")


# --------------------------------------------------------------------------- narro voices (the listing)


def report_broken_engines() -> None:
    """Engine plugins that failed to load, with their errors (they stop only the courses using them)."""
    from narro.engines import ENGINES

    for name, reason in sorted(ENGINES.broken.items()):
        click.secho(f"engine '{name}' is unavailable: {reason}", fg="yellow", err=True)


def _shown(value: object, folder: Path | None) -> str:
    """An option as the user wrote it: a path inside the registry's folder relative to it, nothing else of ours."""
    text = str(value)
    if folder is not None and Path(text).is_absolute():
        try:
            return Path(text).relative_to(folder).as_posix()
        except ValueError:
            return text
    return text


def _consent_state(name: str, voice: Any, registry: Any, course: Any) -> tuple[str, list[str]]:
    """A cloned voice's consent in a few words, and each rule it breaks (for this course, when one is given)."""
    from narro.engines import engine_kind

    clones = consent.clone_voices(voice)
    if not clones or registry.source is None:  # the built-in registry clones no one
        return "", []
    records = consent.load_consent(consent.consent_path(registry.source))  # ManifestError: its problems, located
    record = records.records.get(name)
    references = list(dict.fromkeys(path for clone in clones for path in engine_kind(clone.engine).references(clone)))
    broken = consent.refusals(name, record, records.path, course=course.slug if course else "",
                              organisation=course.organisation if course else None, references=references,
                              today=consent.today(), figures=public_figures(_settings().consent.public_figures))
    if course is None:  # no course to check the scope against
        broken = [refusal for refusal in broken if refusal.rule != "scope"]
    if broken:
        return f"refused ({', '.join(dict.fromkeys(r.rule for r in broken))})", [r.line(name) for r in broken]
    assert record is not None
    return f"{record.id}, until {record.expires}", []


def _narro_voices(registry: Any, course: Any) -> tuple[Any, list[str], list[str]]:
    """The registry's voices as a table, the consent refusals, and every model that cannot be found, as FILE:LINE."""
    from rich.table import Table
    from rich.text import Text

    from narro.engines import fallback as fallbacks
    from narro.voices import TIERS

    folder = registry.source.parent.resolve() if registry.source else None
    used: dict[tuple[str, str], int] = {}
    for narration in course.narrations if course else ():
        used[narration.voice, narration.tier] = used.get((narration.voice, narration.tier), 0) + 1
    rows: list[dict[str, str]] = []
    refusals: list[str] = []
    problems: list[str] = []
    for name in registry.names():
        entry = registry.get(name)
        for tier in TIERS:
            voice = entry.for_tier(tier)
            if voice is None:
                continue
            chain, after = [], voice.fallback
            while after is not None:
                chain.append(_shown(fallbacks.label(after), folder))
                after = after.fallback
            state, broken = _consent_state(name, voice, registry, course)
            refusals += broken
            problems += [str(p) for p in registry.model_problems(name, tier)]
            rows.append({"voice": name, "tier": tier, "engine": voice.engine, "model": _shown(voice.model, folder),
                         "options": ", ".join(f"{key} {_shown(value, folder)}"
                                              for key, value in (voice.model_extra or {}).items()),
                         "fallback": " → ".join(chain) or "-", "consent": state or "-",
                         "used by": str(used.get((name, tier), 0))})
    # Columns that would be empty for every voice are left out: the table has to fit a terminal.
    columns = ["voice", "tier", "engine", "model", "options", "fallback", "consent", "used by"]
    shown = [c for c in columns if (c != "options" or any(r["options"] for r in rows))
             and (c != "consent" or any(r["consent"] != "-" for r in rows)) and (c != "used by" or course)]
    where = registry.source or "the built-in registry (no voices.yaml beside the manifest)"
    used_by = f"; 'used by' counts the narrations of {course.slug}" if course else ""
    table = Table(title=Text(f"narro voices in {where} (default: {registry.default_voice}{used_by})"),
                  title_justify="left")
    for column in shown:
        table.add_column(column, overflow="fold")
    for row in rows:  # Text: a value with brackets in it is not rich markup
        table.add_row(*(Text(row[c]) for c in shown))
    return table, refusals, problems


def _engine_voices(settings: Settings) -> tuple[Any, list[str]]:
    """Every engine's own voices as a table, and why an engine could not list them."""
    from rich.table import Table

    from narro.engines import ENGINES

    table = Table(title="engine voices (use as `model:` in voices.yaml)", title_justify="left")
    for column in ("engine", "voice", "locale", "gender"):
        table.add_column(column)
    notes = []
    for name, kind in sorted(ENGINES.items()):
        try:
            found = kind.voices(settings)
        except NarroError as error:
            notes.append(f"{name}: {error}")
            continue
        for voice in found:
            table.add_row(name, voice["name"], voice.get("locale", ""), voice.get("gender", ""))
    return table, notes


@click.command("voices")
@click.option("--manifest", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              metavar="COURSE.yaml", help="Also list the narro voices of this course's voices.yaml (the one beside "
                                          "it, else the built-in registry), with how many narrations use each and "
                                          "its consent for this course.")
@click.option("--voices", "voices_file", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              metavar="PATH", help="Also list the narro voices of this voices.yaml.")
def list_voices(manifest: Path | None, voices_file: Path | None) -> None:
    """List each engine's voices (the offline ones always, online ones when their service answers); with
    --manifest or --voices, first the narro voices defined there: tier, engine, engine voice, options,
    fallback and, for cloned voices, the state of their consent.

    Exit 2 when the manifest, voices.yaml or consent.yaml is invalid, or a listed voice's model cannot be
    found on this machine (every problem as FILE:LINE).
    """
    from rich.console import Console

    from narro.manifest import load_course
    from narro.voices import load_registry

    if manifest and voices_file:
        _fail("give --manifest or --voices, not both (a manifest's voices are the voices.yaml beside it)")
    out = Console(soft_wrap=True, highlight=False)
    problems: list[str] = []
    source = manifest or voices_file
    if source is not None:
        try:
            course = load_course(source) if manifest else None
            table, refusals, problems = _narro_voices(course.voices if course else load_registry(source), course)
        except ManifestError as error:
            _problems(error)
            return
        out.print(table)
        for line in refusals:
            out.print(line, style="yellow", markup=False)
        out.print()
    table, notes = _engine_voices(_settings())
    out.print(table)
    for note in notes:  # plain text: an error may hold brackets ([SSL: ...]) that are not markup
        out.print(note, style="yellow", markup=False)
    report_broken_engines()
    if problems:
        for problem in problems:
            click.echo(problem, err=True)
        sys.exit(EXIT_INVALID)


def voices_group() -> click.Group:
    """`narro voices`: the listing as the group's default, with add-clone and revoke beneath it."""

    @click.pass_context
    def run(ctx: click.Context, **options: Any) -> None:
        if ctx.invoked_subcommand is None:
            ctx.invoke(list_voices, **options)

    group = click.Group(name="voices", callback=run, params=list(list_voices.params), help=list_voices.help,
                        invoke_without_command=True,
                        short_help="List voices; add a cloned voice with its consent (add-clone); revoke it.")
    group.add_command(add_clone)
    group.add_command(revoke)
    return group


# --------------------------------------------------------------------------- narro status --voice


def print_voice_clips(voice: str, courses: list[str], store_url: str | None, endpoint_url: str | None,
                      as_json: bool) -> None:
    """Every published clip the sidecars say `voice` spoke, across `courses` (catalogue courses), then exit 0."""
    from narro.audit import clips_with_voice

    try:
        found = clips_with_voice(_store(store_url, endpoint_url), courses, voice)
    except NarroError as error:
        _fail(str(error))
        return
    if as_json:
        click.echo(json.dumps({"voice": voice, "clips": [
            {"course": course, "clip": clip, "content_key": sidecar.get("content_key"), "run_id": sidecar.get("run_id"),
             "rendered_at": sidecar.get("rendered_at"), "consent": sidecar.get("consent")}
            for course, clip, sidecar in found]}, indent=2))
        sys.exit(EXIT_OK)
    for course, clip, sidecar in found:
        record = sidecar.get("consent") or {}
        made = f"consent {record['id']}" if record.get("id") else f"engine {(sidecar.get('engine') or {}).get('name')}"
        click.echo(f"{course}/{clip}\t{made}\trendered {sidecar.get('rendered_at', '?')}\trun {sidecar.get('run_id')}")
    click.echo(f"{len(found)} published clip(s) made with voice '{voice}'")
    sys.exit(EXIT_OK)


# --------------------------------------------------------------------------- narro render --replace-voice


def replacement(manifest: Path, store: Store, replace: str) -> tuple[list[str], str]:
    """The clips `--replace-voice OLD=NEW` re-renders (published with OLD, or naming OLD in the manifest) and NEW."""
    from narro.audit import published_sidecars
    from narro.manifest import load_course

    old, sep, new = replace.partition("=")
    if not sep or not old or not new or old == new:
        raise ConsentError(f"--replace-voice {replace}: expected OLD=NEW, two different voice names")
    course = load_course(manifest)
    if course.voices.get(new) is None:
        raise ConsentError(f"--replace-voice: no voice '{new}' in {course.voices.source or 'the built-in registry'}; "
                           f"voices: {', '.join(course.voices.names())}")
    published = published_sidecars(store, course.slug)
    ids = [n.id for n in course.narrations
           if n.voice == old or (published.get(n.id) or {}).get("voice") == old]
    return ids, new


# --------------------------------------------------------------------------- narro say


def say_gate(name: str, tier: Any, engine_voice: Any, registry: Any, manifest: Path | None, text: str,
             settings: Settings, store_url: str | None) -> Any:
    """What `narro say` passes to narro.say: None for a voice that clones no one, else a gate that clears each
    cloned engine voice for the course of `manifest` and audits the line in its store.

    The rules are checked here first, so a refusal is an input error (exit 2) before any engine loads.
    """
    from uuid import uuid4

    from narro.audio import PostSettings
    from narro.audit import AuditTrail
    from narro.manifest import load_course
    from narro.plan import ClipSpec

    if not consent.clone_voices(engine_voice):
        return None
    if manifest is None:
        raise ConsentError(f"voice '{name}' clones a speaker: give --manifest COURSE.yaml, a course its consent "
                           "covers (the line is audited in that course's store)")
    course = load_course(manifest)
    voices_file = Path(registry.source) if registry.source else None
    problems = consent.problems_for([(name, engine_voice)], voices_file, course.slug, course.organisation,
                                    settings.consent.public_figures)
    if problems:
        raise ManifestError(problems)
    spec = ClipSpec(course=course.slug, course_title=course.title, narration_id="say", title="narro say", text=text,
                    voice=name, tier=tier, engine_voice=engine_voice, post=PostSettings(),
                    voices_file=str(voices_file) if voices_file else None, organisation=course.organisation)
    trail = AuditTrail(_store(store_url, None), f"say-{uuid4().hex[:12]}")
    return lambda voice: consent.clear(spec, voice, settings, trail)


# --------------------------------------------------------------------------- narro audit


@click.command("audit")
@click.argument("course")
@store_option
@endpoint_option
@click.option("--json", "as_json", is_flag=True, help="Print the trail and the check as JSON.")
def audit(course: str, store_url: str | None, endpoint_url: str | None, as_json: bool) -> None:
    """Print COURSE's audit trail of cloned voices, and check every published cloned clip has its entry (exit 1 if not).

    COURSE is a course slug or its manifest.
    """
    from narro.audit import check as check_trail

    try:
        slug = _slug(course)
        report = check_trail(_store(store_url, endpoint_url), slug)
    except ManifestError as error:
        _problems(error)
        return
    except NarroError as error:
        _fail(str(error))
        return
    if as_json:
        click.echo(json.dumps({"course": slug, "entries": [{"name": n, **e} for n, e in report.entries],
                               "cloned": report.cloned, "missing": dict(report.missing)}, indent=2))
    else:
        for name, entry in report.entries:
            click.echo(f"{entry.get('time', '?')}  {entry.get('clip', '?')}  voice {entry.get('voice', '?')}  consent "
                       f"{entry.get('consent_id', '?')}  key {str(entry.get('content_key', '?'))[:12]}  run "
                       f"{entry.get('run_id', '?')}  ({name})")
        for clip, why in report.missing:
            click.echo(f"NOT AUDITED: {slug}/{clip}: {why}", err=True)
        click.echo(f"{len(report.entries)} audit entr{'y' if len(report.entries) == 1 else 'ies'}; "
                   f"{len(report.cloned)} published cloned clip(s), {len(report.missing)} without an entry")
    sys.exit(EXIT_OK if report.ok else EXIT_FAILED)


def _slug(course: str) -> str:
    path = Path(course)
    if path.is_file() or path.suffix in (".yaml", ".yml"):
        from narro.manifest import load_course

        return load_course(path).slug
    return course
