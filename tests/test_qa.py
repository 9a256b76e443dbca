"""The quality gate's checks on real piper takes, good and deliberately broken (ASR runs offline)."""

from __future__ import annotations

import numpy as np
import pytest

from narro import render
from narro.engines import Synthesis
from narro.errors import SettingsError
from narro.heal import check_take
from narro.manifest import load_course
from narro.plan import ClipSpec, plan
from narro.qa import QaReport, check_level, clipped_runs
from narro.settings import Settings
from tests.conftest import EXAMPLE_MANIFEST

SETTINGS = Settings()
QA = SETTINGS.qa


@pytest.fixture(scope="module")
def specs() -> dict[str, ClipSpec]:
    return {spec.narration_id: spec for spec in plan(load_course(EXAMPLE_MANIFEST))}


@pytest.fixture(scope="module")
def takes(specs: dict[str, ClipSpec]) -> dict[str, Synthesis]:
    """Real piper takes of two example scripts."""
    return {name: render.synthesize(specs[name], SETTINGS)[0] for name in ("l01-codec-tokens", "l04-quality-tiers")}


def check(spec: ClipSpec, synthesis: Synthesis, text: str | None = None) -> QaReport:
    clip = render.post_process(spec, synthesis)
    return check_take(spec if text is None else ClipSpec(**{**spec.__dict__, "text": text}), synthesis, clip, SETTINGS)


def failed(report: QaReport) -> set[str]:
    return {c.name for c in report.failed}


def with_samples(synthesis: Synthesis, samples: np.ndarray) -> Synthesis:
    return Synthesis(samples.astype(np.float32), synthesis.sample_rate, synthesis.engine)


@pytest.mark.parametrize("name", ["l01-codec-tokens", "l04-quality-tiers"])
def test_good_piper_takes_pass_every_check(name: str, specs, takes):
    report = check(specs[name], takes[name])
    assert report.passed, report.reason()
    assert report.value("wer") is not None and report.value("wer") < 0.15
    assert 140 <= (report.value("speech_rate") or 0) <= 220
    last_word = specs[name].text.split()[-1].strip(".").lower()
    assert report.transcript and last_word in report.transcript.lower()


def test_sentence_removed_fails_the_gap_check(specs):
    spec = specs["l01-codec-tokens"]
    sentence = "Each frame is described by a few entries from learned codebooks."
    assert sentence in spec.text
    short = render.synthesize(ClipSpec(**{**spec.__dict__, "text": spec.text.replace(sentence, "")}), SETTINGS)[0]
    report = check(spec, short)
    assert "gap" in failed(report), report.reason()
    assert "missing" in next(c.reason for c in report.failed if c.name == "gap")


def test_phrase_repeated_three_times_fails_the_gap_check(specs):
    spec = specs["l01-codec-tokens"]
    phrase = "Those entries are called tokens."
    repeated = render.synthesize(ClipSpec(**{**spec.__dict__, "text": spec.text.replace(phrase, f"{phrase} " * 3)}),
                                 SETTINGS)[0]
    report = check(spec, repeated)
    assert "gap" in failed(report), report.reason()
    assert "inserted" in next(c.reason for c in report.failed if c.name == "gap")


def test_four_seconds_of_silence_fail_the_pause_check(specs, takes):
    synthesis = takes["l01-codec-tokens"]
    middle = len(synthesis.samples) // 2
    gap = np.zeros(4 * synthesis.sample_rate, dtype=np.float32)
    report = check(specs["l01-codec-tokens"], with_samples(synthesis, np.concatenate(
        [synthesis.samples[:middle], gap, synthesis.samples[middle:]])))
    assert failed(report) >= {"longest_pause"}, report.reason()
    assert 3.9 <= (report.value("longest_pause") or 0) <= 4.5


def test_take_cut_in_half_fails_rate_and_truncation(specs, takes):
    synthesis = takes["l01-codec-tokens"]
    report = check(specs["l01-codec-tokens"], with_samples(synthesis, synthesis.samples[: len(synthesis.samples) // 2]))
    assert {"speech_rate", "tail", "gap"} <= failed(report), report.reason()


def test_clipped_take_fails_the_clipping_check(specs, takes):
    synthesis = takes["l04-quality-tiers"]
    clipped = np.clip(synthesis.samples * 8, -1.0, 1.0)
    assert clipped_runs(synthesis.samples) <= QA.max_clipped_runs
    report = check(specs["l04-quality-tiers"], with_samples(synthesis, clipped))
    assert "clipping" in failed(report), report.reason()


def test_wrong_scripts_audio_fails_the_wer_check(specs, takes):
    report = check(specs["l01-codec-tokens"], takes["l04-quality-tiers"])
    assert {"wer", "gap"} <= failed(report), report.reason()
    assert (report.value("wer") or 0) > 0.6


def test_level_checks_catch_loudness_peak_and_noise(specs, takes):
    spec = specs["l04-quality-tiers"]
    clip = render.post_process(spec, takes["l04-quality-tiers"])
    assert not [c for c in check_level(clip.decoded, clip.sample_rate, spec.post, QA) if not c.passed]
    quiet = clip.decoded * 10 ** (-4 / 20)  # 4 dB under the target
    assert {c.name for c in check_level(quiet, clip.sample_rate, spec.post, QA) if not c.passed} == {"loudness"}
    hot = clip.decoded * 10 ** (3 / 20)
    assert "true_peak" in {c.name for c in check_level(hot, clip.sample_rate, spec.post, QA) if not c.passed}
    noise = np.random.default_rng(5).normal(0, 10 ** (-45 / 20), len(clip.decoded)).astype(np.float32)
    noisy = {c.name for c in check_level(clip.decoded + noise, clip.sample_rate, spec.post, QA) if not c.passed}
    assert "noise_floor" in noisy


def test_settings_from_environment():
    settings = Settings.load(environ={"NARRO_QA_MAX_WER": "0.1", "NARRO_QA_ASR": "false", "NARRO_QA_MAX_TAKES": "5"})
    assert (settings.qa.max_wer, settings.qa.asr, settings.qa.max_takes) == (0.1, False, 5)
    assert settings.qa.as_dict()["max_wer"] == 0.1  # what each sidecar records
    with pytest.raises(SettingsError, match="^NARRO_QA_MAX_TAKES='many': expected a whole number of at least 1$"):
        Settings.load(environ={"NARRO_QA_MAX_TAKES": "many"})
