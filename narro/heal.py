"""Self-healing: a take that fails the quality gate is made again, differently, a few times.

The plan for a clip (`take_plan`, at most QaSettings.max_takes takes): the engine voice as
asked; the same engine with its pace nudged (`length_scale` x1.04); the tier's fallback engine
voice (EngineVoice.fallback, through narro.engines.fallback, so the take is published under
that voice's key and says so); then further pace variants. An engine found unavailable is not
tried again for the clip. The first passing take is published (it is the best passing one:
no later take is made); when none passes, the clip fails with each take's failed checks.

Why pace and not a new noise seed: piper runs with noise_scale 0 so its output is
byte-identical for the same input, which keeps content keys honest. Its noise comes from a
random op inside the ONNX graph that cannot be seeded, so a non-zero noise_scale would give a
take nobody can reproduce. A different length_scale is deterministic, changes the phoneme
durations (and with them where a model goes wrong), is barely audible at 4%, and is recorded
in the sidecar's engine identity and in the take's metrics, so the published take can be
remade exactly. Every engine honours length_scale (edge-tts maps it to its rate).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from narro import render
from narro.audio import LevelReport
from narro.engines import Synthesis
from narro.engines import fallback as fallbacks
from narro.errors import EngineUnavailable, NarroError
from narro.plan import ClipSpec
from narro.qa import QaReport, QaSettings, evaluate
from narro.render import FinishedClip
from narro.voices import EngineVoice

PACE_VARIANTS = (1.04, 0.96, 1.08)


@dataclass(frozen=True)
class TakePlan:
    number: int
    voice: EngineVoice
    """The engine voice this take puts in the spec (for a fallback take: its `fallback` is the voice that speaks)."""
    variant: str
    """'as asked', 'pace x1.04', 'fallback', ...: what differs from the clip's own voice."""
    fallback: bool = False
    """Spoken by the tier's fallback voice (narro.engines.fallback.synthesize_fallback)."""


@dataclass
class Take:
    plan: TakePlan
    report: QaReport | None = None
    error: str | None = None
    """Why the take could not be made or measured (engine or post-processing error)."""
    unavailable: bool = False
    """The engine could not be used (or its fallback spoke instead): its other takes are skipped."""
    result: object = None
    """The finished clip, which the caller publishes if this take is chosen."""
    metrics: dict[str, object] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.error is None and self.report is not None and self.report.passed

    def reason(self) -> str:
        if self.error is not None:
            return self.error
        return self.report.reason() if self.report else "not checked"

    def rank(self) -> tuple[int, float]:
        """Lower is better: fewest failed checks, then lowest WER."""
        if self.report is None:
            return (1_000, 1.0)
        return (len(self.report.failed), self.report.value("wer") or 0.0)


def _paced(voice: EngineVoice, factor: float) -> EngineVoice:
    return voice.model_copy(update={"length_scale": round(voice.length_scale * factor, 4)})


def take_plan(voice: EngineVoice, max_takes: int, allow_fallback: bool = True) -> list[TakePlan]:
    """The takes to try, in order, at most `max_takes` of them (at least one)."""
    own = [(voice, "as asked", False)] + [(_paced(voice, f), f"pace x{f:g}", False) for f in PACE_VARIANTS]
    backup = []
    if voice.fallback is not None and allow_fallback:
        fallback = voice.fallback
        backup = [(voice, "fallback", True)] + [
            (voice.model_copy(update={"fallback": _paced(fallback, f)}), f"fallback, pace x{f:g}", True)
            for f in PACE_VARIANTS
        ]
    # As asked, one re-make with our own engine, then the fallback's takes, then the rest of our own.
    order = own[:2] + backup + own[2:]
    return [TakePlan(i + 1, v, variant, fb) for i, (v, variant, fb) in enumerate(order[: max(1, max_takes)])]


@dataclass
class Outcome:
    takes: list[Take]

    @property
    def chosen(self) -> Take | None:
        """The best passing take, if any."""
        passing = [take for take in self.takes if take.passed]
        return min(passing, key=Take.rank) if passing else None

    def failure(self) -> str:
        """Why no take passed: each take's failed checks."""
        return " | ".join(f"take {t.plan.number} ({t.plan.variant}): {t.reason()}" for t in self.takes)


def heal(spec: ClipSpec, max_takes: int, make: Callable[[ClipSpec, TakePlan, str], Take],
         on_take: Callable[[Take], None] | None = None) -> Outcome:
    """Make takes until one passes or the plan runs out.

    `make(spec, plan, reason)` renders and checks one take and returns it (narro errors become
    the take's `error`; `reason` is why the previous take failed, recorded by a fallback take);
    `on_take` records each take as it finishes.
    """
    takes: list[Take] = []
    skip_own = skip_fallback = False
    for plan in take_plan(spec.engine_voice, max_takes, spec.allow_fallback):
        if (skip_fallback if plan.fallback else skip_own):
            continue
        reason = takes[-1].reason() if takes else ""
        take = make(replace(spec, engine_voice=plan.voice), plan, reason)
        takes.append(take)
        if on_take is not None:
            on_take(take)
        if take.passed:
            break
        if take.unavailable:
            if plan.fallback:
                skip_fallback = True
            else:
                skip_own = True
    return Outcome(takes)


def synthesize_take(spec: ClipSpec, plan: TakePlan, reason: str) -> tuple[Synthesis, float]:
    """Speak one take: the spec's own voice (which falls back by itself when unavailable) or its fallback."""
    if not plan.fallback:
        return render.synthesize(spec)
    started = time.perf_counter()
    synthesis = fallbacks.synthesize_fallback(spec, f"quality gate: {reason}" if reason else "quality gate")
    return synthesis, time.perf_counter() - started


def check_take(spec: ClipSpec, synthesis: Synthesis, clip: FinishedClip, settings: QaSettings) -> QaReport:
    """The quality gate on a finished take: its decoded MP3, and the engine output for clipping."""
    levels = LevelReport(clip.loudness_lufs, clip.true_peak_dbtp, clip.duration_s)
    return evaluate(clip.decoded, clip.sample_rate, spec.text, spec.post, settings, levels=levels,
                    raw=synthesis.samples, raw_rate=synthesis.sample_rate)


def take_metrics(plan: TakePlan, clip: FinishedClip, report: QaReport) -> dict[str, object]:
    """What the catalogue keeps for one take (the dashboard and `narro status` read it)."""
    speaker = plan.voice.fallback if plan.fallback and plan.voice.fallback else plan.voice
    return {
        "take": plan.number, "variant": plan.variant, "length_scale": speaker.length_scale,
        "duration_s": clip.duration_s, "loudness_lufs": clip.loudness_lufs, "true_peak_dbtp": clip.true_peak_dbtp,
        "wer": report.value("wer"), "wpm": report.value("speech_rate"), "passed": report.passed,
        "failed": [check.name for check in report.failed],
        "synthesis_s": round(clip.synthesis_s, 3), "post_s": round(clip.post_s, 3),
        "qa_s": round(report.asr_s + report.checks_s, 3), "qa": report.as_dict(),
    }


def run_take(spec: ClipSpec, plan: TakePlan, reason: str,
             steps: Callable[[ClipSpec, TakePlan, str], tuple[FinishedClip, QaReport]]) -> Take:
    """One take through `steps` (synthesise, finish, check), with narro's own errors kept as its result."""
    try:
        clip, report = steps(spec, plan, reason)
    except EngineUnavailable as error:
        return Take(plan, error=str(error), unavailable=True, metrics={"take": plan.number, "variant": plan.variant})
    except NarroError as error:
        return Take(plan, error=str(error), metrics={"take": plan.number, "variant": plan.variant})
    spoken_by_fallback = not plan.fallback and getattr(clip, "fallback", None) is not None
    return Take(plan, report=report, result=clip, unavailable=spoken_by_fallback,
                metrics=take_metrics(plan, clip, report))


def plain_steps(settings: QaSettings) -> Callable[[ClipSpec, TakePlan, str], tuple[FinishedClip, QaReport]]:
    """The take steps as plain calls (tests, benchmarks); tasks/clip.py uses the Prefect tasks."""

    def steps(spec: ClipSpec, plan: TakePlan, reason: str) -> tuple[FinishedClip, QaReport]:
        synthesis, synthesis_s = synthesize_take(spec, plan, reason)
        clip = render.post_process(spec, synthesis, synthesis_s)
        return clip, check_take(spec, synthesis, clip, settings)

    return steps


def sidecar_qa(outcome: Outcome, chosen: Take, settings: QaSettings) -> dict[str, object]:
    """The sidecar's `qa`: the published take's checks, every take's verdict, and the thresholds."""
    report = chosen.report
    assert report is not None
    return {
        "take": chosen.plan.number, "variant": chosen.plan.variant,
        "wer": report.value("wer"), "wpm": report.value("speech_rate"),
        **report.as_dict(),
        "takes": [{"take": t.plan.number, "variant": t.plan.variant, "passed": t.passed,
                   "failed": t.reason() if not t.passed else ""} for t in outcome.takes],
        "settings": settings.as_dict(),
    }
