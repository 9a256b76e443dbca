"""What a course run shows in the Prefect UI: a table artifact of its clips, and tags on the run.

An operator who lives in the Prefect UI sees what the run did (each clip's status, WER, duration,
fallback voice and a link to its audio) and finds runs by course, tier and voice tags, without
opening narro's dashboard. Both are best effort: a Prefect API that refuses them costs the run a
warning, never its clips.
"""

from __future__ import annotations

import re
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext

from narro.batch import Batch, Summary
from narro.store import Store


def _audio_link(store: Store, course: str, narration_id: str) -> str:
    """Where the MP3 is, for as long as the artifact is kept: a file:// URL or s3://BUCKET/KEY (not a
    presigned URL, which would expire)."""
    path = store.mp3_path(course, narration_id)
    return path.as_uri() if path is not None else f"{store.url}/{course}/{narration_id}.mp3"


def clip_rows(batch: Batch, summary: Summary, store: Store) -> list[dict[str, Any]]:
    """One row per clip of this run (rendered, failed, unchanged), in course order."""
    states = {state.narration_id: state for state in summary.rendered + summary.cached + summary.failed}
    unchanged = {state.narration_id for state in summary.cached}
    history = summary.history  # read with the clips at the end of the run (narro.batch.conclude)
    rows = []
    for spec in batch.specs:
        state = states.get(spec.narration_id)
        if state is None:
            continue  # not part of this run (another run holds it, or --only left it out)
        measured = [a.metrics["wer"] for a in history.get(spec.narration_id, [])
                    if a.metrics and a.metrics.get("wer") is not None]
        wer = measured[-1] if measured else None
        published = state.status == "rendered"
        rows.append({
            "clip": spec.narration_id,
            "status": "unchanged" if spec.narration_id in unchanged else state.status,
            "wer": f"{wer:.1%}" if wer is not None else "",
            "duration_s": round(state.duration_s, 2) if state.duration_s is not None else "",
            "voice": f"{spec.voice} ({spec.tier})",
            "fallback": state.fallback or "",
            "error": "" if published else (state.last_error or ""),
            "audio": _audio_link(store, spec.course, spec.narration_id) if published else "",
        })
    return rows


def _tag(kind: str, value: str) -> str:
    return f"{kind}:{value}"


def publish(batch: Batch, summary: Summary, store: Store) -> None:
    """Publish the clip table as an artifact of the current flow run and tag the run by course, tier and voice."""
    logger = get_run_logger()
    context = FlowRunContext.get()
    try:
        rows = clip_rows(batch, summary, store)
        key = re.sub(r"[^a-z0-9-]+", "-", f"narro-{batch.course.slug}".lower()).strip("-")
        create_table_artifact(rows, key=key, description=(
            f"**{batch.course.slug}**, run `{summary.run_id}`: {len(summary.rendered)} rendered, "
            f"{len(summary.cached)} unchanged, {len(summary.failed)} failed"))
        if context is not None and context.flow_run is not None:
            listed = {row["clip"] for row in rows}
            rendered = [spec for spec in batch.specs if spec.narration_id in listed]
            tags = {_tag("course", batch.course.slug)} | {_tag("tier", s.tier) for s in rendered} | {
                _tag("voice", s.voice) for s in rendered}
            with get_client(sync_client=True) as client:
                client.update_flow_run(context.flow_run.id, tags=sorted(set(context.flow_run.tags) | tags))
    except Exception as error:  # visibility must not fail a run whose clips are published
        logger.warning("could not publish the run's clip table or tags to Prefect: %s: %s", type(error).__name__, error)
