"""One task per pipeline step, each a direct call into narro."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from narro import heal, render
from narro.engines import Synthesis
from narro.errors import AudioError, EngineUnavailable, ManifestError, SynthesisError
from narro.plan import ClipSpec
from narro.qa import QaReport, QaSettings
from narro.store import open_store

# Audio arrays pass between steps in memory: nothing to cache or persist.
_IN_MEMORY = {"cache_policy": NO_CACHE, "persist_result": False}


def _transient(task, task_run, state) -> bool:  # noqa: ANN001 (Prefect's hook signature)
    """Retry what may pass on a second try; a deterministic engine refusing the text will not.

    EngineUnavailable is final too: engines that talk to a service retry with backoff themselves.
    """
    try:
        state.result()
    except (SynthesisError, AudioError, ManifestError, EngineUnavailable):
        return False
    except Exception:
        return True
    return False


@task(name="synthesize", retries=2, retry_delay_seconds=[1, 4], retry_condition_fn=_transient, **_IN_MEMORY)
def synthesize(spec: ClipSpec) -> tuple[Synthesis, float]:
    return render.synthesize(spec)


@task(name="post-process", **_IN_MEMORY)
def post_process(spec: ClipSpec, synthesis: Synthesis, synthesis_s: float) -> render.FinishedClip:
    return render.post_process(spec, synthesis, synthesis_s)


@task(name="publish", retries=3, retry_delay_seconds=[1, 4, 10], retry_condition_fn=_transient, **_IN_MEMORY)
def publish(store_url: str, spec: ClipSpec, clip: render.FinishedClip, context: render.RunContext) -> dict:
    return render.publish(open_store(store_url), spec, clip, context)


@task(name="synthesize-take", retries=2, retry_delay_seconds=[1, 4], retry_condition_fn=_transient, **_IN_MEMORY)
def synthesize_take(spec: ClipSpec, plan: heal.TakePlan, reason: str) -> tuple[Synthesis, float]:
    return heal.synthesize_take(spec, plan, reason)


@task(name="check", **_IN_MEMORY)
def check(spec: ClipSpec, synthesis: Synthesis, clip: render.FinishedClip, settings: QaSettings) -> QaReport:
    return heal.check_take(spec, synthesis, clip, settings)
