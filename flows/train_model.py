"""Train a codec LM: one task that runs narro's training loop (narro.engines.codec_lm.train).

On a GPU worker when there is one: the task is tagged `gpu`, and a deployment of this flow
belongs on a work pool whose workers have a GPU (a Prefect process worker started on a GPU
machine with narro[quality] installed). The loop picks CUDA itself when torch sees a GPU
(settings.codec_lm.device "auto") and otherwise trains on the CPU in fp32, which suits only `tiny`.
Checkpoints are written as training goes, so a crashed run is continued with `resume=True`.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from prefect import flow, get_run_logger, task

from narro.settings import Settings


@task(name="train-codec-lm", tags=["gpu"])
def train_step(options: dict, device: str) -> dict:
    from narro.engines.codec_lm.train import TrainOptions, train

    paths = {name: Path(options[name]) for name in ("dataset", "out", "codec") if options.get(name)}
    result = train(TrainOptions(**{**options, **paths, "device": device}), log=get_run_logger().info)
    return {**asdict(result), "checkpoint": str(result.checkpoint)}


@flow(name="train-model")
def train_model(dataset: str, out: str, config: str = "tiny", codec: str | None = None, steps: int = 1000,
                checkpoint_every: int = 200, resume: bool = False, batch_size: int = 8, learning_rate: float = 5e-4,
                settings: Settings | None = None) -> dict:
    """Train (or with `resume`, continue training) a `config` model on `dataset` into `out`."""
    settings = settings or Settings.load()
    options = {"dataset": dataset, "out": out, "config": config, "codec": codec, "steps": steps,
               "checkpoint_every": checkpoint_every, "resume": resume, "batch_size": batch_size,
               "learning_rate": learning_rate}
    return train_step(options, settings.codec_lm.device)
