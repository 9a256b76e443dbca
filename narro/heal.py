"""Self-healing: a take that fails the quality gate is made again, differently, a few times.

The plan for a clip (`take_plan`, at most QaSettings.max_takes takes): the engine voice as
asked; its engine's first variant (`EngineKind.variants`: piper nudges its pace, `length_scale`
x1.04; edge its rate, -4%); the tier's fallback engine voice (EngineVoice.fallback, through
narro.engines.fallback, so the take is published under that voice's key and says so), then
the fallback engine's variants; then the rest of the own engine's variants. An engine with no
variants gets no re-take of its own. An engine found unavailable is not tried again for the
clip. The first passing take is published (it is the best passing one: no later take is made);
when none passes, the clip fails with each take's failed checks.

A variant changes something deterministic that the engine's identity records (piper's pace,
edge's rate), so the published take can be remade exactly; see each engine's `variants`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from narro import render
from narro.audio import LevelReport
from narro.engines import Synthesis, engine_kind
from narro.engines import fallback as fallbacks
from narro.errors import ConsentError, EngineUnavailable, NarroError
from narro.markup import authored_pauses
from narro.plan import ClipSpec
from narro.qa import QaReport, evaluate
from narro.render import FinishedClip
from narro.settings import QaSettings, Settings
from narro.voices import EngineVoice

if TYPE_CHECKING:
    from narro.consent import ConsentGate


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
    result: FinishedClip | None = None
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


def take_plan(voice: EngineVoice, max_takes: int, allow_fallback: bool = True) -> list[TakePlan]:
    """The takes to try, in order, at most `max_takes` of them (at least one)."""
    own = [(voice, "as asked", False)] + [
        (variant.voice, variant.label, False) for variant in engine_kind(voice.engine).variants(voice)]
    backup = []
    if voice.fallback is not None and allow_fallback:
        fallback = voice.fallback
        backup = [(voice, "fallback", True)] + [
            (voice.model_copy(update={"fallback": variant.voice}), f"fallback, {variant.label}", True)
            for variant in engine_kind(fallback.engine).variants(fallback)
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

    @property
    def unavailable(self) -> bool:
        """No take could be made at all: every engine tried was unavailable (no take was checked)."""
        return bool(self.takes) and all(t.unavailable and t.report is None for t in self.takes)


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
        # Numbered as made, so a skipped plan leaves no gap; once the fallback voice has spoken a
        # take (its own engine was unavailable), its planned takes are retakes by that same voice.
        fell_back = any(t.unavailable and not t.plan.fallback and t.result is not None for t in takes)
        variant = plan.variant.replace("fallback", "retake by the fallback voice", 1) if plan.fallback and fell_back \
            else plan.variant
        plan = replace(plan, number=len(takes) + 1, variant=variant)
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


def synthesize_take(spec: ClipSpec, plan: TakePlan, reason: str, settings: Settings,
                    gate: ConsentGate | None = None) -> tuple[Synthesis, float]:
    """Speak one take: the spec's own voice (which falls back by itself when unavailable) or its fallback.

    `gate`: the run's consent gate; without one a cloned voice is refused (narro.consent).
    """
    if not plan.fallback:
        return render.synthesize(spec, settings, gate)
    started = time.perf_counter()
    synthesis = fallbacks.synthesize_fallback(spec, f"quality gate: {reason}" if reason else "quality gate", settings,
                                              gate)
    return synthesis, time.perf_counter() - started


def check_take(spec: ClipSpec, synthesis: Synthesis, clip: FinishedClip, settings: Settings) -> QaReport:
    """The quality gate on a finished take: its decoded MP3, and the engine output for clipping.

    The recogniser is checked against what the take should be heard to say (the lexicon's
    respellings, not the written terms), and times its words when the engine gave none (captions).
    """
    levels = LevelReport(clip.loudness_lufs, clip.true_peak_dbtp, clip.duration_s)
    return evaluate(clip.decoded, clip.sample_rate, spec.heard, spec.post, spec.thresholds(settings.qa), asr=settings.asr,
                    levels=levels, raw=synthesis.samples, raw_rate=synthesis.sample_rate,
                    words=not synthesis.words, pauses=authored_pauses(spec.text))


def take_metrics(plan: TakePlan, clip: FinishedClip, report: QaReport) -> dict[str, object]:
    """What the catalogue keeps for one take (the dashboard and `narro status` read it)."""
    speaker = plan.voice.fallback if plan.fallback and plan.voice.fallback else plan.voice
    return {
        "take": plan.number, "variant": plan.variant,
        "options": engine_kind(speaker.engine).options(speaker).model_dump(mode="json"),
        "duration_s": clip.duration_s, "loudness_lufs": clip.loudness_lufs, "true_peak_dbtp": clip.true_peak_dbtp,
        "wer": report.value("wer"), "wpm": report.value("speech_rate"), "passed": report.passed,
        "failed": [check.name for check in report.failed],
        "synthesis_s": round(clip.synthesis_s, 3), "post_s": round(clip.post_s, 3),
        "qa_s": round(report.asr_s + report.checks_s, 3), "qa": report.as_dict(),
        **({"consent": clip.consent} if clip.consent else {}),
    }


def run_take(spec: ClipSpec, plan: TakePlan, reason: str,
             steps: Callable[[ClipSpec, TakePlan, str], tuple[FinishedClip, QaReport]]) -> Take:
    """One take through `steps` (narro.clip.make_take), with narro's own errors kept as its verdict."""
    try:
        clip, report = steps(spec, plan, reason)
    except ConsentError:
        raise  # not a take's verdict: no other take (nor the fallback voice) may stand in for a refused clone
    except EngineUnavailable as error:
        return Take(plan, error=str(error), unavailable=True, metrics={"take": plan.number, "variant": plan.variant})
    except NarroError as error:
        return Take(plan, error=str(error), metrics={"take": plan.number, "variant": plan.variant})
    spoken_by_fallback = not plan.fallback and clip.fallback is not None
    return Take(plan, report=report, result=clip, unavailable=spoken_by_fallback,
                metrics=take_metrics(plan, clip, report))


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
