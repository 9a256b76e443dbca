"""The quality gate: ear-like measures of a take, each a pure function with a threshold.

Every check takes samples (and the script's text and settings where it needs them) and
returns `Check`s: the measured value, the threshold, pass or fail and a reason a producer can
read. `evaluate` runs them all on the decoded MP3 (what listeners hear) and the engine's raw
output (for clipping, which the codec's low-pass would blur), and the ASR round trip through
narro.asr, imported only there so the other checks never load CTranslate2.

Thresholds live in `QaSettings`. They are not part of the content key: they decide whether a
take is published, not what a passing take sounds like, so tightening them must not
re-render clips that already passed. Each sidecar records the settings its take passed under.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from narro.audio import LevelReport, PostSettings, measure, trim_silence
from narro.wer import align, normalise

FRAME_S = 0.01
ABSOLUTE_SILENCE_DB = -50.0
"""Frames quieter than this (dBFS RMS) never count as speech."""
ENV_PREFIX = "NARRO_QA_"


@dataclass(frozen=True)
class QaSettings:
    """Thresholds of the quality gate. Each can be set by environment: NARRO_QA_<NAME> (upper case)."""

    max_wer: float = 0.30
    """Word error rate of the ASR transcript against the script, after normalisation."""
    max_gap_words: int = 4
    """Longest run of script words missing from, or extra words inserted into, the transcript."""
    min_tail_words: int = 2
    """Of the script's last 5 words, at least this many must be heard at the end (not truncated)."""
    min_wpm: float = 100.0
    """Slowest plausible speech rate, words per minute over the spoken span."""
    max_wpm: float = 240.0
    """Fastest plausible speech rate."""
    min_rate_words: int = 15
    """Scripts shorter than this are not judged by speech rate (a few words give no stable rate)."""
    max_edge_silence_s: float = 0.75
    """Longest silence before the first or after the last word."""
    max_pause_s: float = 2.0
    """Longest silence between words."""
    silence_below_peak_db: float = 40.0
    """A 10 ms frame this far below the loudest frame is silence."""
    loudness_tolerance_lu: float = 1.0
    """Integrated loudness may differ from the post-processing target by this much."""
    max_clipped_runs: int = 3
    """Runs of 3+ samples stuck at the engine output's maximum (digital clipping)."""
    max_noise_floor_db: float = -60.0
    """Level of the quietest 5% of 50 ms frames (ACX's noise floor reference)."""
    duration_tolerance_s: float = 0.15
    """The decoded file may differ from the finished take by this much (or 1%, if larger)."""
    min_active_ratio: float = 0.4
    """Share of the take above -50 dBFS; below it the take is (nearly) silent."""
    asr: bool = True
    """Run the ASR round trip (intelligibility and truncation checks)."""
    max_takes: int = 3
    """Takes per clip: the first, then re-makes with a varied voice, then the tier's fallback engine."""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> QaSettings:
        environ = dict(os.environ) if environ is None else environ
        values: dict[str, object] = {}
        for spec in fields(cls):
            raw = environ.get(ENV_PREFIX + spec.name.upper())
            if raw is None:
                continue
            kind = type(getattr(cls(), spec.name))
            try:
                values[spec.name] = raw.strip().lower() in ("1", "true", "yes", "on") if kind is bool else kind(raw)
            except ValueError:
                raise ValueError(f"{ENV_PREFIX}{spec.name.upper()}={raw!r} is not a {kind.__name__}") from None
        return cls(**values)  # type: ignore[arg-type]

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


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
    asr_s: float = 0.0
    checks_s: float = 0.0

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
                "transcript": self.transcript, "asr_s": round(self.asr_s, 3), "checks_s": round(self.checks_s, 3)}


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


def _longest_run(mask: np.ndarray) -> int:
    """Length of the longest run of True."""
    if not mask.any():
        return 0
    padded = np.concatenate([[0], mask.astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return int(np.max(edges[1::2] - edges[::2]))


def check_timing(samples: np.ndarray, sample_rate: int, text: str, settings: QaSettings) -> list[Check]:
    """Speech rate, silence before the first and after the last word, longest pause."""
    speech = _speech_mask(frame_levels(samples, sample_rate), settings)
    voiced = np.flatnonzero(speech)
    if voiced.size == 0:
        return [Check("speech_rate", 0.0, f"{settings.min_wpm:g}-{settings.max_wpm:g} wpm", False, "no speech found")]
    first, last = int(voiced[0]), int(voiced[-1]) + 1
    span_s = (last - first) * FRAME_S
    wpm = len(normalise(text)) / max(span_s, FRAME_S) * 60
    band = f"{settings.min_wpm:g}-{settings.max_wpm:g} wpm"
    words = len(normalise(text))
    rate_ok = settings.min_wpm <= wpm <= settings.max_wpm or words < settings.min_rate_words
    rate_reason = f"{wpm:.0f} wpm" + (f" (not judged under {settings.min_rate_words} words)"
                                      if words < settings.min_rate_words else "") + ("" if rate_ok else (
        " is too fast for the script: the take is shorter than its text (cut or skipped)" if wpm > settings.max_wpm
        else " is too slow for the script: the take is longer than its text (stalls or repeats)"))
    lead, trail = first * FRAME_S, (len(speech) - last) * FRAME_S
    pause = _longest_run(~speech[first:last]) * FRAME_S
    return [
        Check("speech_rate", wpm, band, rate_ok, rate_reason),
        _at_most("leading_silence", lead, settings.max_edge_silence_s, " s", "silence before the first word"),
        _at_most("trailing_silence", trail, settings.max_edge_silence_s, " s", "silence after the last word"),
        _at_most("longest_pause", pause, settings.max_pause_s, " s", "a gap in the speech"),
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
             *, levels: LevelReport | None = None, raw: np.ndarray | None = None,
             raw_rate: int | None = None) -> QaReport:
    """Every check on one take. `decoded` is the published MP3 decoded; `raw` the engine's output."""
    import time

    started = time.perf_counter()
    report = QaReport()
    expected = expected_duration(raw, raw_rate or sample_rate, post) if raw is not None else None
    report.checks += check_integrity(decoded, sample_rate, expected, settings)
    report.checks += check_timing(decoded, sample_rate, text, settings)
    report.checks += check_level(decoded, sample_rate, post, settings, levels, raw)
    report.checks_s = time.perf_counter() - started
    if settings.asr:
        from narro.asr import transcriber_for

        transcript = transcriber_for().transcribe(decoded, sample_rate)
        report.transcript, report.asr_s = transcript.text, transcript.seconds
        report.checks += check_intelligibility(transcript.text, text, settings)
    return report
