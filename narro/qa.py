"""The quality gate: ear-like measures of a take, each a pure function with a threshold.

Every check takes samples (and the script's text and settings where it needs them) and
returns `Check`s: the measured value, the threshold, pass or fail and a reason a producer can
read. `evaluate` runs them all on the decoded MP3 (what listeners hear) and the engine's raw
output (for clipping, which the codec's low-pass would blur), and the ASR round trip through
narro.asr, imported only there so the other checks never load CTranslate2.

Thresholds live in `QaSettings`, the `qa` group of narro.settings. They are not part of the
content key: they decide whether a take is published, not what a passing take sounds like, so
tightening them must not re-render clips that already passed. Each sidecar records the
settings its take passed under.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from narro.audio import LevelReport, PostSettings, measure, trim_silence
from narro.engines.base import WordTiming
from narro.settings import AsrSettings, QaSettings
from narro.wer import align, normalise

FRAME_S = 0.01
ABSOLUTE_SILENCE_DB = -50.0
"""Frames quieter than this (dBFS RMS) never count as speech."""


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    threshold: str
    """The limit as a producer reads it, e.g. '<= 0.30'."""
    passed: bool
    reason: str
    """One line: what was measured and, on failure, what it means."""

    def as_dict(self) -> dict[str, object]:
        return {"value": round(self.value, 4), "threshold": self.threshold, "passed": self.passed,
                "reason": self.reason}


@dataclass
class QaReport:
    checks: list[Check] = field(default_factory=list)
    transcript: str | None = None
    script: str | None = None
    """What the transcript was compared with (the script as it should be heard), when the recogniser ran."""
    asr_s: float = 0.0
    checks_s: float = 0.0
    words: tuple[WordTiming, ...] = ()
    """The recogniser's words timed on the decoded take, when asked for (captions, narro.align)."""

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if not check.passed]

    def value(self, name: str) -> float | None:
        return next((check.value for check in self.checks if check.name == name), None)

    def reason(self) -> str:
        """The failed checks in one line, for the catalogue and the summary."""
        return "; ".join(f"{check.name}: {check.reason}" for check in self.failed) or "all checks passed"

    def as_dict(self) -> dict[str, object]:
        return {"passed": self.passed, "checks": {check.name: check.as_dict() for check in self.checks},
                "transcript": self.transcript, "script": self.script, "asr_s": round(self.asr_s, 3), "checks_s": round(self.checks_s, 3)}


def _at_most(name: str, value: float, limit: float, unit: str, what: str) -> Check:
    passed = value <= limit
    text = f"{value:.3g}{unit}"
    return Check(name, float(value), f"<= {limit:g}{unit}", passed, text if passed else f"{text} > {limit:g}{unit}: {what}")


def _at_least(name: str, value: float, limit: float, unit: str, what: str) -> Check:
    passed = value >= limit
    text = f"{value:.3g}{unit}"
    return Check(name, float(value), f">= {limit:g}{unit}", passed, text if passed else f"{text} < {limit:g}{unit}: {what}")


def frame_levels(samples: np.ndarray, sample_rate: int, frame_s: float = FRAME_S) -> np.ndarray:
    """RMS level of consecutive frames in dBFS (floor -120)."""
    frame = max(1, int(sample_rate * frame_s))
    frames = len(samples) // frame
    if frames == 0:
        return np.full(1, -120.0)
    power = np.mean(samples[: frames * frame].astype(np.float64).reshape(frames, frame) ** 2, axis=1)
    return 10 * np.log10(np.maximum(power, 1e-12))


def _speech_mask(levels: np.ndarray, settings: QaSettings) -> np.ndarray:
    return (levels > levels.max() - settings.silence_below_peak_db) & (levels > ABSOLUTE_SILENCE_DB)


def _runs(mask: np.ndarray) -> np.ndarray:
    """Lengths of the runs of True, longest first."""
    padded = np.concatenate([[0], mask.astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return np.sort(edges[1::2] - edges[::2])[::-1]


def _unexplained_pause(gaps_s: np.ndarray, authored_s: Sequence[float]) -> float:
    """The longest gap the script's authored pauses do not account for.

    The longest gaps are paired with the longest authored pauses; each such gap counts only for
    what it lasts beyond its pause, so an authored pause passes and an accidental gap still shows.
    """
    authored = sorted(authored_s, reverse=True)[: len(gaps_s)]
    beyond = [gap - pause for gap, pause in zip(gaps_s, authored, strict=False)]
    return float(max([*beyond, *gaps_s[len(authored):], 0.0]))


def check_timing(samples: np.ndarray, sample_rate: int, text: str, settings: QaSettings,
                 pauses: Sequence[float] = ()) -> list[Check]:
    """Speech rate, silence before the first and after the last word, longest pause.

    `pauses`: the script's authored pauses in seconds (narro.markup), which neither slow the rate nor count as gaps.
    """
    speech = _speech_mask(frame_levels(samples, sample_rate), settings)
    voiced = np.flatnonzero(speech)
    if voiced.size == 0:
        return [Check("speech_rate", 0.0, f"{settings.min_wpm:g}-{settings.max_wpm:g} wpm", False, "no speech found")]
    first, last = int(voiced[0]), int(voiced[-1]) + 1
    span_s = (last - first) * FRAME_S - sum(pauses)
    wpm = len(normalise(text)) / max(span_s, FRAME_S) * 60
    band = f"{settings.min_wpm:g}-{settings.max_wpm:g} wpm"
    words = len(normalise(text))
    rate_ok = settings.min_wpm <= wpm <= settings.max_wpm or words < settings.min_rate_words
    rate_reason = f"{wpm:.0f} wpm" + (f" (not judged under {settings.min_rate_words} words)"
                                      if words < settings.min_rate_words else "") + ("" if rate_ok else (
        " is too fast for the script: the take is shorter than its text (cut or skipped)" if wpm > settings.max_wpm
        else " is too slow for the script: the take is longer than its text (stalls or repeats)"))
    lead, trail = first * FRAME_S, (len(speech) - last) * FRAME_S
    pause = _unexplained_pause(_runs(~speech[first:last]) * FRAME_S, pauses)
    beyond = f" beyond the script's {len(pauses)} authored pause(s)" if pauses else ""
    return [
        Check("speech_rate", wpm, band, rate_ok, rate_reason),
        _at_most("leading_silence", lead, settings.max_edge_silence_s, " s", "silence before the first word"),
        _at_most("trailing_silence", trail, settings.max_edge_silence_s, " s", "silence after the last word"),
        _at_most("longest_pause", pause, settings.max_pause_s, " s", "a gap in the speech" + beyond),
    ]


def clipped_runs(samples: np.ndarray, run: int = 3) -> int:
    """Runs of `run`+ consecutive samples at the signal's own maximum magnitude (a flat top)."""
    if samples.size == 0:
        return 0
    magnitude = np.abs(samples)
    top = float(magnitude.max())
    if top < 0.1:
        return 0
    at_top = magnitude >= top * 0.999
    padded = np.concatenate([[0], at_top.astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return int(np.sum(edges[1::2] - edges[::2] >= run))


def check_level(samples: np.ndarray, sample_rate: int, post: PostSettings, settings: QaSettings,
                levels: LevelReport | None = None, raw: np.ndarray | None = None) -> list[Check]:
    """Integrated loudness near target, true peak under the ceiling, no clipping, a quiet noise floor.

    `levels` are the decoded file's measures when the caller has them (post-processing does);
    `raw` is the engine's output, where clipping is visible before the codec rounds it off.
    """
    levels = levels or measure(samples, sample_rate)
    off = abs(levels.integrated_lufs - post.target_lufs) if np.isfinite(levels.integrated_lufs) else 99.0
    floor_levels = np.sort(frame_levels(samples, sample_rate, 0.05))
    floor = float(np.mean(floor_levels[: max(1, len(floor_levels) // 20)]))
    clipped = clipped_runs(raw if raw is not None else samples)
    return [
        Check("loudness", levels.integrated_lufs, f"{post.target_lufs:g} ± {settings.loudness_tolerance_lu:g} LUFS",
              off <= settings.loudness_tolerance_lu,
              f"{levels.integrated_lufs:.1f} LUFS" + ("" if off <= settings.loudness_tolerance_lu else
                                                      f", {off:.1f} LU off the {post.target_lufs:g} LUFS target")),
        _at_most("true_peak", levels.true_peak_dbtp, post.true_peak_dbtp, " dBTP", "over the ceiling"),
        _at_most("clipping", clipped, settings.max_clipped_runs, " runs", "flat-topped (clipped) waveform"),
        _at_most("noise_floor", floor, settings.max_noise_floor_db, " dBFS", "audible noise in the pauses"),
    ]


def check_integrity(samples: np.ndarray, sample_rate: int, expected_s: float | None, settings: QaSettings) -> list[Check]:
    """The decoded file is as long as the finished take, and not (nearly) silent."""
    checks = []
    duration = len(samples) / sample_rate
    if expected_s is not None:
        tolerance = max(settings.duration_tolerance_s, 0.01 * expected_s)
        difference = abs(duration - expected_s)
        checks.append(Check("duration", difference, f"<= {tolerance:.2f} s", difference <= tolerance,
                            f"{duration:.2f} s decoded, {expected_s:.2f} s finished" +
                            ("" if difference <= tolerance else ": the file is cut or padded")))
    active = float(np.mean(frame_levels(samples, sample_rate) > ABSOLUTE_SILENCE_DB))
    checks.append(_at_least("active", active, settings.min_active_ratio, "", "the take is (nearly) silent"))
    return checks


def check_intelligibility(transcript: str, text: str, settings: QaSettings) -> list[Check]:
    """WER against the script, the longest missing or inserted run, and the end of the script heard."""
    alignment = align(text, transcript)
    gap = max(alignment.longest_missing, alignment.longest_inserted)
    if alignment.longest_missing >= alignment.longest_inserted:
        where = f"{alignment.longest_missing} words missing ('{alignment.missing_at}...')"
    else:
        where = f"{alignment.longest_inserted} words inserted ('{alignment.inserted_at}...')"
    wer_ok = alignment.wer <= settings.max_wer
    return [
        Check("wer", alignment.wer, f"<= {settings.max_wer:g}", wer_ok,
              f"{alignment.wer:.1%} of {alignment.reference_words} words" +
              ("" if wer_ok else ": the take does not say the script")),
        Check("gap", gap, f"<= {settings.max_gap_words} words", gap <= settings.max_gap_words,
              where if gap else "no run of missing or inserted words"),
        _at_least("tail", alignment.tail_matched, settings.min_tail_words, " of 5 words",
                  "the end of the script is not heard (truncated)"),
    ]


def expected_duration(raw: np.ndarray, sample_rate: int, post: PostSettings) -> float:
    """How long the finished take of an engine output is: its speech span plus the pads."""
    return len(trim_silence(raw, sample_rate, post.silence_floor_db, post.pad_s)) / sample_rate


def evaluate(decoded: np.ndarray, sample_rate: int, text: str, post: PostSettings, settings: QaSettings,
             *, asr: AsrSettings, levels: LevelReport | None = None, raw: np.ndarray | None = None,
             raw_rate: int | None = None, words: bool = False, pauses: Sequence[float] = ()) -> QaReport:
    """Every check on one take. `decoded` is the published MP3 decoded; `raw` the engine's output.

    `text` is what the take should be heard to say; `words` also times the heard words (for captions);
    `pauses` are the script's authored pauses in seconds.
    """
    import time

    started = time.perf_counter()
    report = QaReport()
    expected = expected_duration(raw, raw_rate or sample_rate, post) if raw is not None else None
    report.checks += check_integrity(decoded, sample_rate, expected, settings)
    report.checks += check_timing(decoded, sample_rate, text, settings, pauses)
    report.checks += check_level(decoded, sample_rate, post, settings, levels, raw)
    report.checks_s = time.perf_counter() - started
    if settings.asr:
        from narro.asr import transcriber_for

        transcript = transcriber_for(asr).transcribe(decoded, sample_rate, words=words)
        report.transcript, report.asr_s, report.words = transcript.text, transcript.seconds, transcript.words
        report.script = text
        report.checks += check_intelligibility(transcript.text, text, settings)
    return report
