"""Cloned voices only with consent: each rule's refusal, public figures, the gate at synthesis time,
revocation and voice replacement, the audit trail (local store and SeaweedFS), `narro say`, the dashboard.

The quality tier runs a tiny random-weight checkpoint: its audio is noise, so the quality gate's ASR
check is off where a clone is rendered, and its codec's last layer is set to a band-pass so the noise
sits in the speech band, where post-processing can bring it to the loudness target.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from narro import consent
from narro.audio import PostSettings
from narro.audit import check, read_trail
from narro.catalogue import Catalogue
from narro.cli import main
from narro.consent import ConsentRecord, Revocation, clear, confirm, write_registry
from narro.engines.base import Synthesis
from narro.errors import ConsentError, StoreError
from narro.figures import public_figures
from narro.plan import ClipSpec
from narro.render import RunContext
from narro.settings import CodecLmSettings, ConsentSettings, QaSettings, Settings
from narro.store import LocalStore
from narro.voices import load_registry
from tests.conftest import write_manifest
from tests.seaweed_server import BUCKET, seaweed, seaweed_env  # noqa: F401 (fixtures)

NARRO = Path(sys.executable).parent / "narro"
TODAY = datetime.now(UTC).date()
REFERENCE_TEXT = ("The quick brown fox jumps over the lazy dog. "
                  "Speech synthesis turns written text into spoken audio.")
CLONE_TEXT = "Hello there. This line is spoken by a cloned voice."
SETTINGS = Settings(qa=QaSettings(asr=False), codec_lm=CodecLmSettings(device="cpu"))


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


# --------------------------------------------------------------------------- a course with a cloned voice


def voices_yaml(checkpoint: Path | str) -> str:
    return f"""default: narrator
voices:
  narrator:
    fast: {{engine: piper, model: joe-us-medium}}
  backup:
    description: the offline voice, for the quality tier
    quality: {{engine: piper, model: joe-us-medium}}
  ada:
    quality:
      engine: codec-lm
      model: {checkpoint}
      reference: refs/ada.wav
      reference_text: "{REFERENCE_TEXT}"
"""


COURSE = """course: clone-demo
organisation: acme
title: Clone demo
narrations:
  - id: c01
    voice: ada
    tier: quality
    text: "{clone_text}"
  - id: c02
    text: This one is spoken by the narrator, and it is long enough to carry its watermark.
"""


def record(references: list[str], **changes: object) -> ConsentRecord:
    fields: dict[str, object] = {
        "id": "consent-20260101-00c0ffee", "speaker": "Ada Example", "collected_by": "Jo Producer",
        "collected_at": TODAY - timedelta(days=30), "scope": ["course:clone-demo"],
        "expires": TODAY + timedelta(days=365), "references": references, "document_sha256": "d" * 64}
    return ConsentRecord(**{**fields, **changes})


def course_folder(folder: Path, checkpoint: Path | str = "models/none", reference: bytes = b"RIFF-ada-reference",
                  **changes: object) -> Path:
    """A course using the cloned voice 'ada', its voices.yaml, refs/ada.wav and a consent record (changed by `changes`);
    `changes` of `None` leaves the record out."""
    manifest = write_manifest(folder, COURSE.format(clone_text=CLONE_TEXT), voices_yaml(checkpoint))
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "ada.wav").write_bytes(reference)
    if changes.get("absent") is None:
        write_registry(folder / "consent.yaml", {"ada": record([consent.file_sha256(folder / "refs" / "ada.wav")],
                                                               **changes)})
    else:
        write_registry(folder / "consent.yaml", {})
    return manifest


def clone_spec(manifest: Path, organisation: str | None = "acme") -> ClipSpec:
    """The clip spec of c01 as a render makes it (voice file, course, organisation), without hashing a checkpoint."""
    voices = manifest.parent / "voices.yaml"
    return ClipSpec(course="clone-demo", course_title="Clone demo", narration_id="c01", title="", text=CLONE_TEXT,
                    voice="ada", tier="quality", engine_voice=load_registry(voices).resolve("ada", "quality"),
                    post=PostSettings(), content_key="k" * 64, voices_file=str(voices.resolve()),
                    organisation=organisation)


class Trail:
    """An audit trail that keeps what it is given (the real one is tested against stores below)."""

    def __init__(self):
        self.entries: list[tuple[str, str]] = []

    def append(self, spec: ClipSpec, voice, record: ConsentRecord, references) -> str:  # noqa: ANN001
        self.entries.append((spec.narration_id, record.id))
        return f"audit/{len(self.entries)}.jsonl"


# --------------------------------------------------------------------------- each rule, refused at synthesis time


REFUSED = {
    "record": ({"absent": True}, "has no consent record"),
    "expired": ({"expires": TODAY - timedelta(days=1), "collected_at": TODAY - timedelta(days=400)}, "expired on"),
    "scope": ({"scope": ["course:another-course", "organisation:other-org"]}, "not in the scope"),
    "revoked": ({"revoked": Revocation(at=datetime(2026, 3, 1, tzinfo=UTC), reason="withdrawn by the speaker")},
                "was revoked on 2026-03-01: withdrawn by the speaker"),
    "public-figure": ({"speaker": "Obama, Barack"}, "matches the public figure 'Barack Obama'"),
}


@pytest.mark.parametrize("rule", sorted(REFUSED))
def test_each_rule_refuses_a_clone_with_one_line_naming_it(tmp_path: Path, rule: str) -> None:
    changes, message = REFUSED[rule]
    spec = clone_spec(course_folder(tmp_path / "course", **changes))
    trail = Trail()
    pattern = rf"^consent refused for voice 'ada' \(rule: {rule}\): .*{message}"
    with pytest.raises(ConsentError, match=pattern) as refused:
        clear(spec, spec.engine_voice, SETTINGS, trail)
    assert "\n" not in str(refused.value)
    assert trail.entries == []  # nothing refused is audited as spoken


def test_a_swapped_reference_is_refused(tmp_path: Path) -> None:
    manifest = course_folder(tmp_path / "course")
    spec = clone_spec(manifest)
    (manifest.parent / "refs" / "ada.wav").write_bytes(b"RIFF-someone-else")
    with pytest.raises(ConsentError, match=r"\(rule: reference\): the reference .*ada\.wav \(sha256 [0-9a-f]{12}"
                                           r"\.\.\.\) is not a recording consent consent-20260101-00c0ffee covers"):
        clear(spec, spec.engine_voice, SETTINGS, Trail())


def test_a_clone_in_scope_is_cleared_and_audited_once(tmp_path: Path) -> None:
    spec = clone_spec(course_folder(tmp_path / "course", scope=["organisation:acme"]))  # in scope by organisation
    trail = Trail()
    clearance = clear(spec, spec.engine_voice, SETTINGS, trail)
    assert clearance is not None and trail.entries == [("c01", "consent-20260101-00c0ffee")]
    recorded = clearance.sidecar()
    assert recorded["id"] == "consent-20260101-00c0ffee" and recorded["expires"] == str(TODAY + timedelta(days=365))
    assert recorded["audit"] == "audit/1.jsonl"
    with pytest.raises(ConsentError, match=r"\(rule: scope\): course 'clone-demo' \(organisation 'beta'\)"):
        clear(replace(spec, organisation="beta"), spec.engine_voice, SETTINGS, Trail())
    piper = load_registry(tmp_path / "course" / "voices.yaml").resolve("narrator", "fast")
    assert clear(spec, piper, SETTINGS, None) is None  # a voice that clones no one needs no consent


def test_a_clone_never_speaks_without_an_audit_trail(tmp_path: Path) -> None:
    from narro import render
    from narro.say import say

    spec = clone_spec(course_folder(tmp_path / "course"))
    with pytest.raises(ConsentError, match=r"\(rule: record\): a cloned voice speaks only where its consent is"):
        render.synthesize(spec, SETTINGS)  # the pipeline's synthesis without the run's consent gate
    with pytest.raises(ConsentError, match=r"\(rule: record\): a cloned voice speaks only where its synthesis is"):
        clear(spec, spec.engine_voice, SETTINGS, None)
    with pytest.raises(ConsentError, match="clones a speaker: it speaks only where its consent is checked"):
        say(spec.engine_voice, "Hello.", SETTINGS, io.BytesIO())
    with pytest.raises(ConsentError, match=r"\(rule: record\): it clones a speaker but comes from no voices.yaml"):
        clear(replace(spec, voices_file=None), spec.engine_voice, SETTINGS, Trail())


def test_the_recording_the_engine_used_must_be_one_the_record_covers(tmp_path: Path) -> None:
    spec = clone_spec(course_folder(tmp_path / "course"))
    clearance = clear(spec, spec.engine_voice, SETTINGS, Trail())
    covered = clearance.record.references[0]
    silence = np.zeros(10, np.float32)
    take = confirm(clearance, Synthesis(silence, 24000, "codec-lm", details={"reference_sha256": covered}))
    assert take.details["consent"]["id"] == clearance.record.id
    with pytest.raises(ConsentError, match=r"\(rule: reference\): the engine was prompted with a recording consent"):
        confirm(clearance, Synthesis(silence, 24000, "codec-lm", details={"reference_sha256": "0" * 64}))


# --------------------------------------------------------------------------- public figures


VARIANTS = ["Obama, Barack", "barack obama", "B. Obama", "BARACK OBÁMA", "President Barack H. Obama"]


@pytest.mark.parametrize("speaker", VARIANTS)
def test_a_public_figure_is_refused_however_the_name_is_written(tmp_path: Path, speaker: str) -> None:
    spec = clone_spec(course_folder(tmp_path / "course", speaker=speaker))
    with pytest.raises(ConsentError, match=r"\(rule: public-figure\): .*matches the public figure 'Barack Obama' "
                                           r"\(narro/data/public_figures\.txt:\d+\)"):
        clear(spec, spec.engine_voice, SETTINGS, Trail())


def test_name_matching_and_the_operators_own_list(tmp_path: Path) -> None:
    figures = public_figures()
    assert len(figures) > 300
    for name, who in [("Beyonce", "Beyoncé"), ("Swift, T.", "Taylor Swift"), ("Dr. Martin Luther King, Jr.",
                      "Martin Luther King Jr."), ("Conan OBrien", "Conan O'Brien"), ("J.K. Rowling", "J. K. Rowling")]:
        assert figures.match(name).name == who  # type: ignore[union-attr]
    for ordinary in ("Ada Example", "Bob Johnson", "Barbara Oberman", "Madonna Smith", "Charles", "T. S."):
        assert figures.match(ordinary) is None, ordinary
    extra = tmp_path / "ours.txt"
    extra.write_text("# our own\nAda Example | A. Example\n", encoding="utf-8")
    settings = Settings(consent=ConsentSettings(public_figures=extra))
    spec = clone_spec(course_folder(tmp_path / "course", speaker="Example, Ada"))
    with pytest.raises(ConsentError, match=rf"\(rule: public-figure\): .*'Ada Example' \({extra}:2\)"):
        clear(spec, spec.engine_voice, settings, Trail())
    missing = Settings(consent=ConsentSettings(public_figures=tmp_path / "gone.txt"))
    with pytest.raises(ConsentError, match="gone.txt: cannot read the public figures list"):  # fails closed
        clear(spec, spec.engine_voice, missing, Trail())


# --------------------------------------------------------------------------- validation reports the same, located


def test_validate_reports_each_rule_with_file_and_line(tmp_path: Path, kit) -> None:
    manifest = course_folder(tmp_path / "course", kit.checkpoint, expires=TODAY - timedelta(days=1),
                             collected_at=TODAY - timedelta(days=400), scope=["course:elsewhere"])
    result = cli("validate", str(manifest))
    assert result.exit_code == 2
    registry = manifest.parent / "consent.yaml"
    lines = result.stderr.splitlines()
    assert any(line.startswith(f"{registry}:") and ": consent.ada.expires: consent refused for voice 'ada' "
               "(rule: expired)" in line for line in lines), result.stderr
    assert any(": consent.ada.scope: " in line and "(rule: scope)" in line for line in lines)
    assert "2 problems found." in result.stderr
    absent = course_folder(tmp_path / "absent", kit.checkpoint, absent=True)
    result = cli("validate", str(absent))
    assert result.exit_code == 2
    located = f"{absent.parent / 'voices.yaml'}:8: voices.ada: consent refused for voice 'ada' (rule: record)"
    assert located in result.stderr
    assert cli("validate", str(course_folder(tmp_path / "fine", kit.checkpoint))).exit_code == 0


def test_a_malformed_consent_file_is_reported_line_by_line(tmp_path: Path, kit) -> None:
    manifest = course_folder(tmp_path / "course", kit.checkpoint)
    registry = manifest.parent / "consent.yaml"
    registry.write_text("consent:\n  ada:\n    id: consent-1\n    speaker: Ada Example\n    collected_by: Jo\n"
                        "    collected_at: 2026-01-01\n    scope: [course]\n    expires: 2027-01-01\n"
                        "    references: [abc]\n    document_sha: x\n", encoding="utf-8")
    result = cli("validate", str(manifest))
    assert result.exit_code == 2
    assert f"{registry}:2: consent.ada.document_sha256: required field is missing" in result.stderr
    assert f"{registry}:10: consent.ada.document_sha: unknown field 'document_sha'; did you mean 'document_sha256'?" \
        in result.stderr


# --------------------------------------------------------------------------- stores: write once, never rewritten


def test_the_local_store_writes_an_audit_object_once_and_never_replaces_it(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.write_once("c", "audit/one.jsonl", b'{"n": 1}\n', "application/x-ndjson")
    with pytest.raises(StoreError, match="exists already: it is written once and never replaced"):
        store.write_once("c", "audit/one.jsonl", b'{"n": 2}\n', "application/x-ndjson")
    assert store.read_object("c", "audit/one.jsonl") == b'{"n": 1}\n'
    assert store.list_names("c", "audit") == ["audit/one.jsonl"]  # no temporary file left beside it


def test_seaweedfs_refuses_to_overwrite_an_audit_object(seaweed_env) -> None:  # noqa: ANN001, F811
    from narro.s3store import S3Store

    store = S3Store(f"s3://{BUCKET}/write-once", seaweed_env.endpoint)
    store.write_once("c", "audit/one.jsonl", b'{"n": 1}\n', "application/x-ndjson")
    with pytest.raises(StoreError, match=r"s3://narro/write-once/c/audit/one\.jsonl exists already"):
        store.write_once("c", "audit/one.jsonl", b'{"n": 2}\n', "application/x-ndjson")
    assert store.read_object("c", "audit/one.jsonl") == b'{"n": 1}\n'
    assert store.list_names("c") == ["audit/one.jsonl"]


# --------------------------------------------------------------------------- the quality tier, for real


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A tiny codec-lm checkpoint, a 5 s piper reference of REFERENCE_TEXT, and a signed-form stand-in."""
    import torch
    from transformers import EncodecModel

    from narro.engines.codec_lm.checkpoint import save_checkpoint
    from narro.engines.codec_lm.codec import load_codec, make_tiny_encodec
    from narro.engines.codec_lm.frontend import Vocabulary
    from tests.piper_speech import piper_sentences, write_wav
    from tests.test_codec_lm import tiny_model

    torch.set_num_threads(1)  # tiny models are latency-bound; more threads only fight on a shared machine
    root = tmp_path_factory.mktemp("kit")
    folder = make_tiny_encodec(root / "encodec")
    codec = EncodecModel.from_pretrained(str(folder), local_files_only=True)
    last = codec.decoder.layers[-1].conv
    band = torch.tensor([1.0, 4.0, 5.0, 0.0, -5.0, -4.0, -1.0])  # (1 - z^-2)(1 + z^-1)^4: no DC, no Nyquist
    kernel = torch.tensor([1.0, -1.0, 1.0, -1.0])[None, :, None] * band[None, None, :]
    with torch.no_grad():  # weight-normed: set its direction and its norm
        last.parametrizations.weight.original1.copy_(kernel)
        last.parametrizations.weight.original0.copy_(kernel.norm().reshape(1, 1, 1))
        last.bias.zero_()
    codec.save_pretrained(str(folder))
    checkpoint = save_checkpoint(root / "ckpt", tiny_model(), Vocabulary.default(), load_codec("encodec", folder),
                                 {"step": 0})
    clips, rate = piper_sentences()
    reference = write_wav(root / "ada.wav", np.concatenate([clips[0], np.zeros(int(0.4 * rate), np.float32), clips[1]]),
                          rate)
    document = root / "consent-ada.pdf"
    document.write_bytes(b"%PDF-1.4 signed consent of Ada Example")
    return SimpleNamespace(checkpoint=checkpoint, reference=reference, document=document, root=root)


def test_a_revocation_between_validation_and_synthesis_is_refused_at_synthesis(tmp_path: Path, kit,
                                                                                isolated_catalogue: str) -> None:
    from narro.batch import prepare
    from narro.clip import render_clip

    manifest = course_folder(tmp_path / "course", kit.checkpoint, kit.reference.read_bytes())
    store, catalogue = LocalStore(tmp_path / "store"), Catalogue(isolated_catalogue)
    batch = prepare(manifest, store, catalogue, only=["c01"], settings=SETTINGS)  # validation passes now
    spec = batch.to_render[0]
    consent.revoke(manifest.parent / "consent.yaml", "ada", "withdrawn by the speaker")
    with pytest.raises(ConsentError, match=r"\(rule: revoked\): .*withdrawn by the speaker"):
        render_clip(spec, batch.context, store, catalogue, SETTINGS)
    state = catalogue.clip("clone-demo", "c01")
    assert state.status == "failed" and "(rule: revoked)" in state.last_error
    assert store.list_names("clone-demo") == []  # nothing synthesised, audited or published

    (manifest.parent / "refs" / "ada.wav").write_bytes(b"RIFF-another-speaker")  # swapped after validation
    write_registry(manifest.parent / "consent.yaml", {"ada": record([consent.file_sha256(kit.reference)])})
    with pytest.raises(ConsentError, match=r"\(rule: reference\)"):
        render_clip(spec, batch.context, store, catalogue, SETTINGS)
    assert catalogue.attempts("clone-demo", "c01")[-1].status == "failed"


def test_the_audit_trail_on_s3_has_one_entry_per_synthesis_and_never_rewrites_one(
        tmp_path: Path, kit, seaweed_env, isolated_catalogue: str) -> None:  # noqa: ANN001, F811
    from narro.clip import render_clip
    from narro.manifest import load_course
    from narro.plan import plan
    from narro.s3store import S3Store

    manifest = course_folder(tmp_path / "course", kit.checkpoint, kit.reference.read_bytes())
    spec = next(s for s in plan(load_course(manifest)) if s.narration_id == "c01")
    store, catalogue = S3Store(f"s3://{BUCKET}/audit-test", seaweed_env.endpoint), Catalogue(isolated_catalogue)
    settings = SETTINGS.model_copy(update={"qa": QaSettings(asr=False, max_takes=1)})
    sidecar = render_clip(spec, RunContext("run-one", str(manifest), "m"), store, catalogue, settings)
    trail = read_trail(store, "clone-demo")
    assert [entry["clip"] for _, entry in trail] == ["c01"]
    name, entry = trail[0]
    assert sidecar["consent"]["id"] == entry["consent_id"] == "consent-20260101-00c0ffee"
    assert sidecar["consent"]["audit"] == name and entry["content_key"] == sidecar["content_key"]
    assert entry["run_id"] == "run-one" and entry["voice"] == "ada" and entry["course"] == "clone-demo"
    assert check(store, "clone-demo").ok
    first = store.read_object("clone-demo", name)

    render_clip(spec, RunContext("run-two", str(manifest), "m"), store, catalogue, settings)  # made again
    again = read_trail(store, "clone-demo")
    assert [e["run_id"] for _, e in again] == ["run-one", "run-two"]
    assert store.read_object("clone-demo", name) == first  # appended beside it, the first entry untouched
    with pytest.raises(StoreError, match="exists already"):
        store.write_once("clone-demo", name, b"{}\n", "application/x-ndjson")
    assert store.read_object("clone-demo", name) == first


# --------------------------------------------------------------------------- the whole flow, through the CLI


def test_add_clone_refuses_a_public_figure_and_a_short_reference(tmp_path: Path, kit) -> None:
    from tests.piper_speech import piper_sentences, write_wav

    voices = tmp_path / "course" / "voices.yaml"
    common = ["voices", "add-clone", "obama", "--consent", str(kit.document), "--scope", "course:clone-demo",
              "--expires", str(TODAY + timedelta(days=30)), "--collected-by", "Jo", "--voices", str(voices),
              "--checkpoint", str(kit.checkpoint)]
    refused = cli(*common, "--reference", str(kit.reference), "--speaker", "barack OBAMA")
    assert refused.exit_code == 2 and "(rule: public-figure)" in refused.stderr
    clips, rate = piper_sentences()
    short = write_wav(tmp_path / "short.wav", clips[0][: rate // 2], rate)
    refused = cli(*common, "--reference", str(short), "--speaker", "Ada Example")
    assert refused.exit_code == 2 and "at least 3 s is needed" in refused.stderr
    assert not voices.parent.exists()  # nothing written for either


@pytest.mark.usefixtures("prefect_harness")
def test_consent_from_adding_a_clone_to_replacing_it(tmp_path: Path, kit, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NARRO_QA_ASR", "false")
    monkeypatch.setenv("NARRO_CODEC_LM_DEVICE", "cpu")
    folder, store = tmp_path / "course", tmp_path / "store"
    manifest = write_manifest(folder, COURSE.format(clone_text=CLONE_TEXT),
                              voices_yaml(kit.checkpoint).split("  ada:\n")[0])
    added = cli("voices", "add-clone", "ada", "--reference", str(kit.reference), "--speaker", "Ada Example",
                "--consent", str(kit.document), "--scope", "course:clone-demo", "--expires",
                str(TODAY + timedelta(days=365)), "--collected-by", "Jo Producer", "--voices",
                str(folder / "voices.yaml"), "--checkpoint", str(kit.checkpoint), "--reference-text", REFERENCE_TEXT)
    assert added.exit_code == 0, added.output
    record_id = consent.load_consent(folder / "consent.yaml").records["ada"].id
    assert f"consent {record_id} recorded in" in added.output and "speaker Ada Example" in added.output
    assert (folder / "refs" / "ada.wav").read_bytes() == kit.reference.read_bytes()
    assert load_registry(folder / "voices.yaml").resolve("ada", "quality").engine == "codec-lm"
    assert cli("voices").exit_code == 0  # the listing is still `narro voices`
    assert cli("validate", str(manifest)).exit_code == 0

    rendered = cli("render", str(manifest), "--store", str(store))
    assert rendered.exit_code == 0, rendered.output
    sidecar = json.loads((store / "clone-demo" / "c01.json").read_text())
    assert sidecar["consent"]["id"] == record_id and sidecar["consent"]["expires"] == str(TODAY + timedelta(days=365))
    assert "consent" not in json.loads((store / "clone-demo" / "c02.json").read_text())
    entries = sorted((store / "clone-demo" / "audit").iterdir())
    assert len(entries) == 1 and json.loads(entries[0].read_text())["consent_id"] == record_id
    audited = cli("audit", "clone-demo", "--store", str(store))
    assert audited.exit_code == 0 and "1 audit entry; 1 published cloned clip(s), 0 without an entry" in audited.output

    written = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in entries}
    assert cli("render", str(manifest), "--store", str(store)).exit_code == 0  # unchanged: nothing synthesised
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (store / "clone-demo" / "audit").iterdir()} == written

    kept = entries[0].read_bytes()
    entries[0].unlink()  # a published clone without its entry
    missing = cli("audit", "clone-demo", "--store", str(store))
    assert missing.exit_code == 1 and "NOT AUDITED: clone-demo/c01: no audit entry for consent" in missing.stderr
    entries[0].write_bytes(kept)

    page = dashboard_row(tmp_path, manifest, store)
    assert f"consent {record_id}, expires {TODAY + timedelta(days=365)}" in page and "consent revoked" not in page

    revoked = cli("voices", "revoke", "ada", "--reason", "withdrawn by the speaker", "--voices",
                  str(folder / "voices.yaml"))
    assert revoked.exit_code == 0 and f"consent {record_id} of voice 'ada' (Ada Example) revoked" in revoked.output
    assert "(rule: revoked)" in cli("validate", str(manifest)).stderr
    refused = cli("render", str(manifest), "--store", str(store))
    assert refused.exit_code == 2 and "(rule: revoked)" in refused.stderr
    assert "consent revoked" in dashboard_row(tmp_path, manifest, store)

    listed = cli("status", "--voice", "ada", "--store", str(store))
    assert listed.exit_code == 0 and f"clone-demo/c01\tconsent {record_id}" in listed.output
    assert "1 published clip(s) made with voice 'ada'" in listed.output

    replaced = cli("render", str(manifest), "--store", str(store), "--replace-voice", "ada=backup")
    assert replaced.exit_code == 0, replaced.output
    runs = {clip: json.loads((store / "clone-demo" / f"{clip}.json").read_text())["run_id"] for clip in ("c01", "c02")}
    assert runs["c01"] != runs["c02"] and runs["c02"] == sidecar["run_id"]  # exactly the clip made with ada
    assert json.loads((store / "clone-demo" / "c01.json").read_text())["voice"] == "backup"
    assert "0 published clip(s) made with voice 'ada'" in cli("status", "--voice", "ada", "--store", str(store)).output
    assert len(list((store / "clone-demo" / "audit").iterdir())) == 1  # the offline voice clones no one


def dashboard_row(tmp_path: Path, manifest: Path, store: Path) -> str:
    from starlette.testclient import TestClient

    from narro.dashboard import build_app

    app = build_app(os.environ["NARRO_CATALOGUE"], str(store), [manifest], lambda request: None)
    with TestClient(app, base_url="http://127.0.0.1:8080") as client:
        page = client.get("/courses/clone-demo")
        assert page.status_code == 200
        return page.text.split('id="clip-c01"')[1].split("</tr>")[0]


def test_narro_say_speaks_a_clone_only_for_a_course_in_scope_and_audits_it(tmp_path: Path, kit) -> None:
    manifest = course_folder(tmp_path / "course", kit.checkpoint, kit.reference.read_bytes())
    base = [str(NARRO), "say", "A short line.", "--voices", str(manifest.parent / "voices.yaml"), "--voice", "ada",
            "--tier", "quality", "--out", str(tmp_path / "line.wav"), "--store", str(tmp_path / "store")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NARRO_CODEC_LM_DEVICE": "cpu"}
    refused = subprocess.run(base, capture_output=True, text=True, env=env, timeout=300)
    assert refused.returncode == 2 and "give --manifest COURSE.yaml" in refused.stderr
    said = subprocess.run(base + ["--manifest", str(manifest)], capture_output=True, text=True, env=env, timeout=300)
    assert said.returncode == 0, said.stderr[-2000:]
    trail = read_trail(LocalStore(tmp_path / "store"), "clone-demo")
    assert [(e["clip"], e["voice"], e["consent_id"]) for _, e in trail] == [("say", "ada", "consent-20260101-00c0ffee")]
    write_registry(manifest.parent / "consent.yaml", {"ada": record([consent.file_sha256(kit.reference)],
                                                                    scope=["course:elsewhere"])})
    out_of_scope = subprocess.run(base + ["--manifest", str(manifest)], capture_output=True, text=True, env=env,
                                  timeout=300)
    assert out_of_scope.returncode == 2 and "(rule: scope)" in out_of_scope.stderr
