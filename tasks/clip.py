"""The per-clip task the course flow fans out: narro.clip.render_clip, with store writes retried.

Synthesis, post-processing and QA run inside it as plain calls, not as tasks of their own:
Prefect links every task result to its state in the flow run's context until the flow ends, so
a step returning audio would keep every clip's samples in memory for the whole course
(measured: +7 MB per clip, 1.9 GB peak over the 125-clip course).
"""

from __future__ import annotations

import functools

from prefect import task
from prefect.cache_policies import NO_CACHE

from narro import clip, render
from narro.catalogue import Catalogue
from narro.errors import StoreError
from narro.plan import ClipSpec
from narro.render import FinishedClip, RunContext
from narro.settings import Settings
from narro.source import materialise, parse_location
from narro.store import Store, open_store
from tasks import edge_limit


@functools.cache
def catalogue_at(url: str) -> Catalogue:
    """One catalogue connection pool per worker process."""
    return Catalogue(url)


def _store_failed(task, task_run, state) -> bool:  # noqa: ANN001 (Prefect's hook signature)
    """Retry a write the store could not take (a server away for a moment); anything else will fail again."""
    try:
        state.result()
    except StoreError:
        return True
    except Exception:
        return False
    return False


# Inputs include audio: nothing to cache or persist.
@task(name="publish", retries=3, retry_delay_seconds=[1, 4, 10], retry_condition_fn=_store_failed,
      cache_policy=NO_CACHE, persist_result=False)
def publish(store: Store, spec: ClipSpec, finished: FinishedClip, context: RunContext) -> dict:
    return render.publish(store, spec, finished, context)


@task(name="render-clip", task_run_name="render-{spec.narration_id}", cache_policy=NO_CACHE, persist_result=False)
def render_clip(spec: ClipSpec, context: RunContext, store_url: str, catalogue_url: str, settings: Settings) -> dict:
    """One clip from spec to store; its outcome is in the catalogue (narro.clip)."""
    if edge_limit.rate_limits([spec]):
        edge_limit.gate_this_process()
    source = parse_location(context.manifest_path)
    if source is not None:  # a submitted course: voice files it names (a reference recording) must be here too
        materialise(source, settings.s3.endpoint_url)
    store = open_store(store_url, settings.s3.endpoint_url)
    return clip.render_clip(spec, context, store, catalogue_at(catalogue_url), settings, publish=publish)
