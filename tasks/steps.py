"""Pipeline steps that run as Prefect tasks of their own, each a direct call into narro.

Only steps whose results are small are tasks: Prefect links every task result to its state
in the flow run's context until the flow ends, so a step returning audio would keep every
clip's samples in memory for the whole course (measured: +7 MB per clip, 1.9 GB peak over the
125-clip course). Synthesis and post-processing therefore run inside the render-clip task.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from narro import heal, render
from narro.engines import Synthesis
from narro.errors import AudioError, EngineUnavailable, ManifestError, SynthesisError
from narro.plan import ClipSpec
from narro.qa import QaReport, QaSettings
from narro.store import open_store

# Inputs include audio: nothing to cache or persist.
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


@task(name="publish", retries=3, retry_delay_seconds=[1, 4, 10], retry_condition_fn=_transient, **_IN_MEMORY)
def publish(store_url: str, spec: ClipSpec, clip: render.FinishedClip, context: render.RunContext) -> dict:
    return render.publish(open_store(store_url), spec, clip, context)


@task(name="check", **_IN_MEMORY)
def check(spec: ClipSpec, synthesis: Synthesis, clip: render.FinishedClip, settings: QaSettings) -> QaReport:
    return heal.check_take(spec, synthesis, clip, settings)
