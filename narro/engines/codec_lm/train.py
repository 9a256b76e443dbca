"""Train the codec LM (`narro train`): a dataset, codes extracted once, AdamW, checkpoints, resume.

API:

    utterances = load_dataset(path)        # LJSpeech folder or rendered course; DatasetError (FILE:LINE) if bad
    result = train(TrainOptions(dataset=..., out=..., config="tiny", codec=..., steps=..., ...), log=print)
    # result: TrainResult(step, first_loss, last_loss, checkpoint, resumed_from, device, precision, ...)

Datasets:

- an LJSpeech-style folder: `metadata.csv` with `id|text` lines (LJSpeech's own three columns,
  `id|text|normalised text`, work too: the last one is used) and `wavs/ID.wav`;
- a rendered course in a local store (the course's folder): each `{id}.mp3` with its `{id}.json`
  sidecar, whose `text` says what the clip says.

Every bad row (a missing column, an empty text, an audio file that is missing) is reported as
FILE:LINE: field: message, all at once, in one DatasetError.

Texts are normalised as narrations are (narro.text) and turned into phoneme ids by the model's
front end. Audio is decoded by ffmpeg at the codec's rate, brought to the level references are
brought to (reference.codec_input: the model sees one loudness in training and in prompts) and
encoded once: codes are cached in OUT/codes/, named by the audio's sha256 and the codec's
identity, so a second run or a resume encodes nothing.

Training: AdamW with a linear warm-up, gradients clipped at 1, batches drawn at random (seeded).
On CUDA the forward pass runs under autocast in bf16 where the card supports it, else fp16 with a
GradScaler; on CPU it stays fp32. Every `checkpoint_every` steps and at the end, a checkpoint is
written to OUT/checkpoints/step-NNNNNN/ (narro.engines.codec_lm.checkpoint: a voice's `model:`
may name it), then `training.pt` beside it (optimizer, scheduler, scaler, random states): a
checkpoint with that file is complete, and `resume` continues from the newest complete one. Only
the newest `keep` checkpoints stay. OUT/loss.jsonl has one JSON line per step; OUT/loss.svg
plots it (updated at every checkpoint).
"""

from __future__ import annotations

import csv
import hashlib
import html
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from narro.encode import decode
from narro.engines.codec_lm.checkpoint import load_checkpoint, read_config, save_checkpoint
from narro.engines.codec_lm.codec import Codec, load_codec
from narro.engines.codec_lm.digest import files_sha256
from narro.engines.codec_lm.engine import pick_device
from narro.engines.codec_lm.frontend import Frontend, Vocabulary
from narro.engines.codec_lm.model import CodecLM, ModelConfig, collate
from narro.engines.codec_lm.reference import codec_input
from narro.errors import DatasetError, NarroError, Problem
from narro.markup import unmarked
from narro.text import normalise

STATE_FILE = "training.pt"
LOSS_LOG = "loss.jsonl"
LOSS_PLOT = "loss.svg"
METADATA = "metadata.csv"


@dataclass(frozen=True)
class Utterance:
    id: str
    text: str
    """Normalised as narrations are."""
    audio: Path
    file: Path
    """Where its row is (metadata.csv or the sidecar), for error messages."""
    line: int | None = None


@dataclass(frozen=True)
class TrainOptions:
    dataset: Path
    out: Path
    config: str = "tiny"
    """A model preset of narro.engines.codec_lm.model (tiny, base)."""
    codec: Path | None = None
    """Folder of the codec (EnCodec in the Hugging Face layout); when resuming, the checkpoint's."""
    steps: int = 1000
    """Train until this step (a resumed run counts the steps already done)."""
    checkpoint_every: int = 200
    resume: bool = False
    batch_size: int = 8
    learning_rate: float = 5e-4
    warmup_steps: int | None = None
    """Linear warm-up of the learning rate; None: a tenth of `steps`, at most 1000."""
    weight_decay: float = 0.01
    max_seconds: float = 20.0
    """Longer utterances are left out (a VALL-E batch costs quadratic memory in its length)."""
    seed: int = 0
    device: str = "auto"
    """auto (cuda when visible), cpu or cuda: settings.codec_lm.device."""
    keep: int = 2


@dataclass
class TrainResult:
    step: int
    first_loss: float
    last_loss: float
    checkpoint: Path
    device: str
    precision: str
    utterances: int
    skipped: list[str] = field(default_factory=list)
    resumed_from: int | None = None
    encoded: int = 0
    """Utterances whose codes were extracted in this run (the rest came from the cache)."""
    seconds: float = 0.0


# ---------------------------------------------------------------- datasets

def load_dataset(path: Path) -> list[Utterance]:
    """The utterances of an LJSpeech-style folder or a rendered course folder."""
    path = Path(path)
    if (path / METADATA).is_file():
        return _ljspeech(path)
    if path.is_dir() and any(path.glob("*.json")):
        return _course(path)
    raise DatasetError([Problem(path, None, "dataset", f"expected an LJSpeech-style folder ({METADATA} and wavs/) "
                                                       "or a rendered course folder ({id}.mp3 and {id}.json)")])


def _ljspeech(folder: Path) -> list[Utterance]:
    metadata = folder / METADATA
    utterances: list[Utterance] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    with metadata.open(encoding="utf-8", newline="") as handle:
        for line, row in enumerate(csv.reader(handle, delimiter="|", quoting=csv.QUOTE_NONE), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 2:
                problems.append(Problem(metadata, line, "text", "expected 'id|text' (a '|' between id and text)"))
                continue
            ident, text = row[0].strip(), normalise(row[-1])
            audio = folder / "wavs" / f"{ident}.wav"
            if not ident:
                problems.append(Problem(metadata, line, "id", "is empty"))
            elif ident in seen:
                problems.append(Problem(metadata, line, "id", f"'{ident}' is already used on line {seen[ident]}"))
            elif not text:
                problems.append(Problem(metadata, line, "text", f"is empty for '{ident}'"))
            elif not audio.is_file():
                problems.append(Problem(metadata, line, "audio", f"{audio.relative_to(folder)} does not exist"))
            else:
                utterances.append(Utterance(ident, text, audio, metadata, line))
            seen.setdefault(ident, line)
    return _checked(metadata, utterances, problems)


def _course(folder: Path) -> list[Utterance]:
    utterances, problems = [], []
    for sidecar in sorted(folder.glob("*.json")):
        if sidecar.name == "index.json":
            continue
        try:
            record = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            problems.append(Problem(sidecar, None, "sidecar", f"not readable JSON: {error}"))
            continue
        audio = sidecar.with_suffix(".mp3")
        text = record.get("text") if isinstance(record, dict) else None
        if not isinstance(text, str) or not text.strip():
            problems.append(Problem(sidecar, None, "text", "missing: rendered by an older narro; render the course "
                                                           "again (--only the clips) to record it"))
        elif not audio.is_file():
            problems.append(Problem(sidecar, None, "audio", f"{audio.name} does not exist"))
        else:
            # The sidecar's text is the engine's: script markup tags stay out of what the model learns to say.
            utterances.append(Utterance(sidecar.stem, normalise(unmarked(text)), audio, sidecar))
    return _checked(folder, utterances, problems)


def _checked(source: Path, utterances: list[Utterance], problems: list[Problem]) -> list[Utterance]:
    if problems:
        raise DatasetError(problems)
    if not utterances:
        raise DatasetError([Problem(source, None, "dataset", "has no utterances")])
    return utterances


# ---------------------------------------------------------------- codes, extracted once

def codec_key(codec: Codec) -> str:
    return hashlib.sha256(json.dumps(codec.identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def extract_codes(utterances: list[Utterance], codec: Codec, cache: Path) -> tuple[list[np.ndarray], int]:
    """Codes [n_q, T] per utterance, from OUT/codes/ when already there; also how many were encoded now."""
    cache.mkdir(parents=True, exist_ok=True)
    key, grids, encoded = codec_key(codec), [], 0
    for utterance in utterances:
        target = cache / f"{files_sha256([utterance.audio])}-{key}.npy"
        if target.is_file():
            grids.append(np.load(target))
            continue
        try:
            samples = decode(utterance.audio.read_bytes(), codec.sample_rate)
            codes = np.asarray(codec.encode(codec_input(samples, codec.sample_rate, codec.sample_rate)), np.int64)
        except (OSError, NarroError) as error:
            problem = Problem(utterance.file, utterance.line, "audio", f"{utterance.audio.name}: {error}")
            raise DatasetError([problem]) from error
        partial = target.with_suffix(".part.npy")
        np.save(partial, codes)
        partial.replace(target)  # a killed run leaves no half-written cache entry
        grids.append(codes)
        encoded += 1
    return grids, encoded


# ---------------------------------------------------------------- training

def precision_for(device: torch.device) -> tuple[torch.dtype | None, str]:
    """Autocast dtype (None: fp32) and its name."""
    if device.type != "cuda":
        return None, "fp32"
    return (torch.bfloat16, "bf16") if torch.cuda.is_bf16_supported() else (torch.float16, "fp16")


def complete_checkpoints(out: Path) -> list[Path]:
    """Checkpoint folders whose training state was written (the last file of a checkpoint), oldest first."""
    return sorted(p.parent for p in (out / "checkpoints").glob(f"step-*/{STATE_FILE}"))


def train(options: TrainOptions, log: Callable[[str], None] = print) -> TrainResult:
    started = time.perf_counter()
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(pick_device(options.device))
    autocast, precision = precision_for(device)
    utterances = load_dataset(options.dataset)

    resumed_from, state, preset, saved = None, None, options.config, out
    if options.resume:
        found = complete_checkpoints(out)
        if not found:
            raise NarroError(f"{out}: nothing to resume (no complete checkpoint in {out / 'checkpoints'}); "
                             "run without --resume to start")
        saved = found[-1]
        given = None
        if options.codec is not None:  # the codec moved: checked against the one the model was trained with
            stored = read_config(saved)
            given = load_codec(stored.codec.name, options.codec, stored.model.n_codebooks, device.type)
        loaded = load_checkpoint(saved, device=device.type, codec=given)
        model, vocabulary, codec = loaded.model, loaded.vocabulary, loaded.codec
        preset = str(loaded.training.get("preset", "?"))
        state = torch.load(saved / STATE_FILE, map_location="cpu", weights_only=False)
        resumed_from = int(state["step"])
    else:
        if options.codec is None:
            raise NarroError("--codec is needed: the folder of the EnCodec model (Hugging Face layout) to train on")
        codec = load_codec("encodec", options.codec, device=device.type)
        vocabulary = Vocabulary.default()
        config = ModelConfig.preset(options.config, n_text_tokens=len(vocabulary), codebook_size=codec.codebook_size,
                                    n_codebooks=codec.n_codebooks)
        torch.manual_seed(options.seed)
        model = CodecLM(config).to(device)
    model.train()

    frontend = Frontend(vocabulary)
    grids, encoded = extract_codes(utterances, codec, out / "codes")
    texts, codes, skipped = [], [], []
    for utterance, grid in zip(utterances, grids, strict=True):
        if grid.shape[-1] > options.max_seconds * codec.frame_rate:
            skipped.append(utterance.id)
            continue
        texts.append(frontend.encode(utterance.text).ids)
        codes.append(grid)
    if not texts:
        raise DatasetError([Problem(Path(options.dataset), None, "dataset",
                                    f"every utterance is longer than {options.max_seconds:g} s")])
    log(f"{len(texts)} utterances ({encoded} encoded now, {len(texts) - encoded} from the cache"
        + (f", {len(skipped)} longer than {options.max_seconds:g} s left out" if skipped else "")
        + f"); {preset} model" + ("" if resumed_from is None else f" resumed at step {resumed_from}") + ", "
        f"{model.parameter_count() / 1e6:.1f} M parameters, {device.type} {precision}")

    optimizer = torch.optim.AdamW(model.parameters(), lr=options.learning_rate, betas=(0.9, 0.95),
                                  weight_decay=options.weight_decay)
    warmup = max(1, options.warmup_steps if options.warmup_steps is not None else min(1000, options.steps // 10))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    scaler = torch.amp.GradScaler("cuda", enabled=autocast is torch.float16)
    sampler = np.random.default_rng(options.seed)
    generator = torch.Generator().manual_seed(options.seed)
    step = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        sampler.bit_generator.state = state["sampler"]
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        step = int(state["step"])
        if step >= options.steps:
            raise NarroError(f"{saved}: already at step {step}; ask for more --steps to continue")
    history = _resume_log(out / LOSS_LOG, step)

    training = {"preset": preset, "dataset": str(options.dataset), "batch_size": options.batch_size}
    with (out / LOSS_LOG).open("a", encoding="utf-8") as loss_log:
        while step < options.steps:
            picked = sampler.choice(len(texts), size=min(options.batch_size, len(texts)), replace=False)
            batch = collate([texts[i] for i in picked], [codes[i] for i in picked], vocabulary.pad_id, device=device)
            with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
                result = model.training_loss(batch, generator=generator)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(result["loss"]).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            record = {"step": step, "loss": result["loss"].item(), "ar": result["ar"].item(),
                      "nar": result["nar"].item(), "ar_accuracy": result["ar_accuracy"],
                      "nar_accuracy": result["nar_accuracy"], "lr": scheduler.get_last_lr()[0],
                      "elapsed_s": round(time.perf_counter() - started, 3)}
            loss_log.write(json.dumps(record) + "\n")
            loss_log.flush()
            history.append(record)
            if step % options.checkpoint_every == 0 or step == options.steps:
                saved = _save(out, step, model, vocabulary, codec, {**training, "step": step, "loss": record["loss"]},
                              optimizer, scheduler, scaler, sampler, generator, options.keep)
                curves = {"loss (AR + NAR)": [r["loss"] for r in history], "AR": [r["ar"] for r in history]}
                (out / LOSS_PLOT).write_text(loss_svg(curves, f"{preset} on {Path(options.dataset).name}"),
                                             encoding="utf-8")
                log(f"step {step}: loss {record['loss']:.3f} (ar {record['ar']:.3f}, nar {record['nar']:.3f}); "
                    f"checkpoint {saved}")
    return TrainResult(step=step, first_loss=history[0]["loss"], last_loss=history[-1]["loss"], checkpoint=saved,
                       device=device.type, precision=precision, utterances=len(texts), skipped=skipped,
                       resumed_from=resumed_from, encoded=encoded, seconds=time.perf_counter() - started)


def _resume_log(path: Path, step: int) -> list[dict[str, Any]]:
    """Records of steps up to `step`; the log is cut there (steps a killed run did after its checkpoint go)."""
    if not path.is_file():
        return []
    kept = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    kept = [record for record in kept if record["step"] <= step]
    path.write_text("".join(json.dumps(record) + "\n" for record in kept), encoding="utf-8")
    return kept


def _save(out: Path, step: int, model: CodecLM, vocabulary: Vocabulary, codec: Codec, training: dict[str, Any],
          optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any, sampler: np.random.Generator,
          generator: torch.Generator, keep: int) -> Path:
    folder = out / "checkpoints" / f"step-{step:06d}"
    if folder.exists():
        shutil.rmtree(folder)  # an incomplete one from a killed run
    save_checkpoint(folder, model, vocabulary, codec, training)
    state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "scaler": scaler.state_dict(), "sampler": sampler.bit_generator.state,
             "generator": generator.get_state(), "torch_rng": torch.get_rng_state()}
    partial = folder / f"{STATE_FILE}.part"
    torch.save(state, partial)
    partial.replace(folder / STATE_FILE)  # written last: the checkpoint is now complete
    for old in complete_checkpoints(out)[:-keep]:
        shutil.rmtree(old)
    return folder


def loss_svg(series: dict[str, list[float]], title: str, width: int = 720, height: int = 360) -> str:
    """Losses per step as a standalone SVG line chart on a log scale (no plotting library needed)."""
    margin, colours = 56, ("#06c", "#c60", "#090")
    logs = {name: np.log10(np.maximum(np.asarray(values, dtype=float), 1e-6)) for name, values in series.items()}
    low = min(float(v.min()) for v in logs.values())
    high = max(float(v.max()) for v in logs.values())
    high = high if high > low else low + 1.0
    count = max(len(v) for v in logs.values())

    def points(values: np.ndarray) -> str:
        xs = margin + (width - 2 * margin) * np.arange(len(values)) / max(count - 1, 1)
        ys = height - margin - (height - 2 * margin) * (values - low) / (high - low)
        return " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))

    ticks = "".join(f'<text x="{margin - 6}" y="{height - margin - (height - 2 * margin) * f:.1f}" '
                    f'text-anchor="end">{10 ** (low + f * (high - low)):.3g}</text>' for f in (0.0, 0.5, 1.0))
    lines = "".join(f'<polyline points="{points(values)}" fill="none" stroke="{colours[index % 3]}" '
                    f'stroke-width="1.5"/><text x="{width - margin}" y="{margin + 16 * index}" text-anchor="end" '
                    f'fill="{colours[index % 3]}">{html.escape(name)}</text>'
                    for index, (name, values) in enumerate(logs.items()))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
            f'font-size="12"><rect width="100%" height="100%" fill="white"/>'
            f'<text x="{width / 2}" y="20" text-anchor="middle">{html.escape(title)}: training loss (log scale)</text>'
            f'<path d="M{margin},{margin} V{height - margin} H{width - margin}" stroke="black" fill="none"/>{ticks}'
            f'<text x="{margin}" y="{height - margin + 18}">step 1</text><text x="{width - margin}" '
            f'y="{height - margin + 18}" text-anchor="end">step {count}</text>{lines}</svg>\n')
