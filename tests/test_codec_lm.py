"""The quality tier's core: codec, front end, model, sampling guards, streaming, checkpoints, converter.

Everything runs on the CPU with tiny random-weight models; their audio is noise, so tests check
shapes, determinism, guards and error messages, not how the speech sounds.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch  # noqa: E402 (the test extra installs torch: this suite never skips)

from narro.engines.codec_lm.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from narro.engines.codec_lm.codec import load_codec, make_tiny_encodec  # noqa: E402
from narro.engines.codec_lm.convert import VALLEX_VOCABULARY, convert, vallex_shapes  # noqa: E402
from narro.engines.codec_lm.convert import main as convert_main
from narro.engines.codec_lm.frontend import Frontend, Vocabulary, join_text  # noqa: E402
from narro.engines.codec_lm.generate import CodecStream, generate  # noqa: E402
from narro.engines.codec_lm.model import CodecLM, ModelConfig, collate  # noqa: E402
from narro.engines.codec_lm.sampling import Sampling  # noqa: E402
from narro.errors import CheckpointError  # noqa: E402

FRAME_RATE = 75


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models are latency-bound: one thread is several times faster than two on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def codec_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_encodec(tmp_path_factory.mktemp("codec") / "encodec")


@pytest.fixture(scope="module")
def codec(codec_dir: Path):
    return load_codec("encodec", codec_dir)


def tiny_model(seed: int = 0, vocabulary: Vocabulary | None = None) -> CodecLM:
    torch.manual_seed(seed)
    size = len(vocabulary or Vocabulary.default())
    return CodecLM(ModelConfig.preset("tiny", n_text_tokens=size, codebook_size=256, n_codebooks=8)).eval()


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory, codec) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", tiny_model(), Vocabulary.default(), codec,
                           {"step": 0})


def inputs(seed: int = 0, text_len: int = 24, prompt_frames: int = 30) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(4, 150, text_len), rng.integers(0, 256, (8, prompt_frames))


def forced(model: CodecLM, favourite: int, boost: float, eos: float = float("-inf")) -> CodecLM:
    """The AR head replaced by fixed logits: `favourite` ahead by `boost`, end of speech at `eos`."""
    head = torch.nn.Linear(model.config.d_model, model.config.codebook_size + 1)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[favourite] = boost
        head.bias[model.eos] = eos
    model.ar_predict_layer = head
    return model


def longest_run(tokens: np.ndarray, value: int) -> int:
    best = run = 0
    for token in tokens:
        run = run + 1 if token == value else 0
        best = max(best, run)
    return best


# --------------------------------------------------------------------------- codec


def test_codec_is_loaded_from_a_folder_and_decodes_token_grids(codec, codec_dir: Path) -> None:
    assert (codec_dir / "config.json").is_file() and (codec_dir / "model.safetensors").is_file()
    assert (codec.sample_rate, codec.frame_rate, codec.hop_length, codec.n_codebooks) == (24000, 75, 320, 8)
    assert set(codec.identity) >= {"name", "sample_rate", "frame_rate", "n_codebooks", "codebook_size", "weights_sha256"}
    grid = np.random.default_rng(0).integers(0, 256, (8, 40))
    audio = codec.decode(grid)
    assert audio.dtype == np.float32 and audio.shape == (40 * 320,)
    assert not np.allclose(audio, codec.decode(np.roll(grid, 1, axis=1)))  # tokens matter
    codes = codec.encode(np.random.default_rng(1).standard_normal(24000).astype(np.float32) * 0.1)
    assert codes.dtype == np.int64 and codes.shape == (8, 75) and codes.max() < 256
    with pytest.raises(ValueError, match=r"shape \[8, frames\]"):
        codec.decode(grid[:4])
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        codec.decode(grid + 256)


# --------------------------------------------------------------------------- front end


def test_the_front_end_turns_text_into_vocabulary_ids() -> None:
    vocabulary = Vocabulary.default()
    assert Vocabulary.model_validate(json.loads(json.dumps(vocabulary.model_dump()))) == vocabulary
    encoded = Frontend(vocabulary).encode("Hello world")
    assert encoded.ids[0] == vocabulary.bos_id and encoded.ids[-1] == vocabulary.eos_id
    assert "".join(vocabulary.symbols[i] for i in encoded.ids[1:-1]) == "həlˈoʊ wˈɜːld."
    assert encoded.phonemes == len(encoded.ids) - 2 and encoded.unknown == 0
    joined = join_text(vocabulary, encoded.ids, encoded.ids)
    assert list(joined).count(vocabulary.bos_id) == 1 and list(joined).count(vocabulary.eos_id) == 1

    vallex = Frontend(VALLEX_VOCABULARY).encode("The water was cold; wasn't it?")
    assert "".join(VALLEX_VOCABULARY.symbols[i] for i in vallex.ids) == "ðə_wˈɔtəɹ_wəz_kˈoʊɫd,_wˈəznt_ɪt?"
    assert vallex.unknown == 0
    small = Vocabulary(symbols=["<pad>", "?", " ", "h", "ə"], pad="<pad>", unk="?")
    assert small.encode_phonemes(list("həl")).unknown == 2  # 'l' and the added full stop


# --------------------------------------------------------------------------- model


def test_training_loss_gives_both_losses_and_gradients() -> None:
    model = tiny_model().train()
    rng = np.random.default_rng(0)
    batch = collate([rng.integers(4, 150, n) for n in (20, 9)], [rng.integers(0, 256, (8, n)) for n in (50, 31)], 0)
    losses = model.training_loss(batch, torch.Generator().manual_seed(0))
    assert set(losses) == {"loss", "ar", "nar", "ar_accuracy", "nar_accuracy", "nar_stage"}
    assert torch.isfinite(losses["ar"]) and torch.isfinite(losses["nar"]) and 1 <= losses["nar_stage"] <= 7
    losses["loss"].backward()
    assert model.ar_decoder.layers[0].linear1.weight.grad.abs().sum() > 0
    assert model.nar_decoder.layers[0].linear1.weight.grad.abs().sum() > 0


def test_the_kv_cache_gives_the_same_logits_as_a_full_pass() -> None:
    model = tiny_model()
    text, prompt = inputs()
    text_t, prompt_t, language = torch.tensor(text)[None], torch.tensor(prompt[0])[None], torch.zeros(1, dtype=torch.long)
    with torch.no_grad():
        _, state = model.ar_start(text_t, prompt_t, language)
        model.ar_step(torch.tensor([5]), state)
        stepped = model.ar_step(torch.tensor([9]), state)
        full, _ = model.ar_start(text_t, torch.cat([prompt_t, torch.tensor([[5, 9]])], 1), language)
    assert torch.allclose(stepped, full, atol=1e-5)


def test_base_has_the_published_vallex_layout() -> None:
    with torch.device("meta"):
        model = CodecLM(ModelConfig.preset("base", n_text_tokens=2048, codebook_size=1024, n_codebooks=8,
                                           languages=["en", "zh", "ja"]))
    assert {name: tuple(t.shape) for name, t in model.state_dict().items()} == vallex_shapes()
    assert 300e6 < model.parameter_count() < 400e6


# --------------------------------------------------------------------------- sampling and guards


def test_the_same_seed_gives_the_same_tokens() -> None:
    model = tiny_model()
    text, prompt = inputs()
    first = generate(model, text, 20, prompt, Sampling(seed=3), FRAME_RATE)
    again = generate(model, text, 20, prompt, Sampling(seed=3), FRAME_RATE)
    other = generate(model, text, 20, prompt, Sampling(seed=4), FRAME_RATE)
    assert first.frames > 0 and np.array_equal(first.codes, again.codes)
    assert not np.array_equal(first.codes[0, :20], other.codes[0, :20])


def test_a_model_that_never_ends_is_stopped_at_the_frame_cap() -> None:
    model = forced(tiny_model(), favourite=7, boost=3.0)
    text, prompt = inputs()
    sampling = Sampling(top_k=1, ras_window=0)  # greedy, no repetition guard: token 7 forever
    result = generate(model, text, 20, prompt, sampling, FRAME_RATE)
    assert result.frames == result.frame_cap == sampling.frame_cap(20, FRAME_RATE) == 450
    assert result.trips == {"frame_cap": 1, "repetition": 0}
    assert set(result.codes[0]) == {7}


def test_the_repetition_guard_breaks_a_loop_and_counts_its_trips() -> None:
    model = forced(tiny_model(), favourite=7, boost=3.0)
    text, prompt = inputs()
    result = generate(model, text, 20, prompt, Sampling(top_k=1), FRAME_RATE)
    assert result.trips["repetition"] > 100 and result.trips["frame_cap"] == 1
    assert longest_run(result.codes[0], 7) <= 3
    assert np.mean(result.codes[0] == 7) < 0.5


def test_end_of_speech_is_not_allowed_before_the_phonemes_could_be_spoken() -> None:
    model = forced(tiny_model(), favourite=7, boost=0.0, eos=20.0)
    text, prompt = inputs()
    result = generate(model, text, 40, prompt, Sampling(), FRAME_RATE)
    assert result.frames == Sampling().min_frames(40, FRAME_RATE) == 60
    assert result.trips == {"frame_cap": 0, "repetition": 0}


# --------------------------------------------------------------------------- streaming


def test_streaming_hands_out_audio_before_generation_ends(codec) -> None:
    model = forced(tiny_model(), favourite=7, boost=0.5)  # never ends: runs to the frame cap
    text, prompt = inputs()
    stream = CodecStream(model, codec, text, 8, prompt, Sampling(seed=2))
    chunks = []
    for chunk in stream:
        if not chunks:
            assert stream.result is None  # the AR is still running
        chunks.append(chunk)
    assert stream.first_audio_frames == 10 < stream.result.frames == Sampling().frame_cap(8, FRAME_RATE)
    assert stream.first_audio_s is not None and len(chunks) > 3
    audio = np.concatenate(chunks)
    whole = codec.decode(stream.result.codes)
    assert audio.shape == whole.shape
    assert np.abs(audio - whole).max() < 0.05 * np.abs(whole).max()  # chunk joins match a whole decode
    plain = generate(model, text, 8, prompt, Sampling(seed=2), FRAME_RATE)
    assert np.array_equal(plain.codes[0], stream.result.codes[0])  # same seed, same tokens, streamed or not


# --------------------------------------------------------------------------- checkpoints


def test_a_checkpoint_round_trips(checkpoint_dir: Path) -> None:
    loaded = load_checkpoint(checkpoint_dir)
    original = tiny_model().state_dict()
    assert all(torch.equal(original[name], tensor) for name, tensor in loaded.model.state_dict().items())
    assert loaded.model.nar_predict_layers[0].weight is loaded.model.nar_audio_embeddings[2].weight
    assert loaded.vocabulary == Vocabulary.default() and loaded.training == {"step": 0}
    assert loaded.sha256 == load_checkpoint(checkpoint_dir).sha256 and len(loaded.sha256) == 64
    assert json.loads((checkpoint_dir / "config.json").read_text())["codec"]["path"] == str(loaded.codec.path)


def _copy(checkpoint_dir: Path, target: Path) -> Path:
    target.mkdir()
    for name in ("config.json", "model.safetensors"):
        (target / name).write_bytes((checkpoint_dir / name).read_bytes())
    return target


def _edit_tensors(folder: Path, edit) -> None:  # noqa: ANN001 (a function of the tensor dict)
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(folder / "model.safetensors"))


def _edit_config(folder: Path, edit) -> None:  # noqa: ANN001
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))


BROKEN = {
    "no weights": (lambda f: (f / "model.safetensors").unlink(), r"model\.safetensors: missing"),
    "no config": (lambda f: (f / "config.json").unlink(), r"config\.json: missing"),
    "bad json": (lambda f: (f / "config.json").write_text('{\n  "format": "narro-codec-lm",\n  oops\n}'),
                 r"config\.json:3: not valid JSON"),
    "not safetensors": (lambda f: (f / "model.safetensors").write_bytes(b"\x00" * 64), "not a readable safetensors file"),
    "missing tensor": (lambda f: _edit_tensors(f, lambda t: t.pop("ar_decoder.layers.1.linear2.weight")),
                       r"tensor 'ar_decoder\.layers\.1\.linear2\.weight' is missing"),
    "unexpected tensor": (lambda f: _edit_tensors(f, lambda t: t.update({"speaker.weight": torch.zeros(2)})),
                          r"unexpected tensor 'speaker\.weight'"),
    "mis-shaped tensor": (lambda f: _edit_tensors(f, lambda t: t.update({"ar_predict_layer.weight": torch.zeros(10, 64)})),
                          r"tensor 'ar_predict_layer\.weight' has shape \[10, 64\], config\.json's model expects \[257, 64\]"),
    "vocabulary too big": (lambda f: _edit_config(f, lambda c: c["vocabulary"]["symbols"].extend(f"x{i}" for i in range(9))),
                           r"vocabulary has 171 symbols but the text embedding has 162 rows"),
    "bad field": (lambda f: _edit_config(f, lambda c: c["model"].update({"d_model": -1})),
                  r"config\.json: model\.d_model: Input should be greater than 0"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_checkpoint_fails_with_one_line_naming_the_fault(checkpoint_dir: Path, tmp_path: Path, codec,
                                                                   case: str) -> None:
    folder = _copy(checkpoint_dir, tmp_path / "ckpt")
    damage, message = BROKEN[case]
    damage(folder)
    with pytest.raises(CheckpointError, match=message) as raised:
        load_checkpoint(folder, codec=codec)
    assert "\n" not in str(raised.value)


def test_a_checkpoint_refuses_another_codec(checkpoint_dir: Path, tmp_path: Path) -> None:
    other = load_codec("encodec", make_tiny_encodec(tmp_path / "other", seed=1))
    with pytest.raises(CheckpointError, match=r"codec mismatch: .*weights_sha256"):
        load_checkpoint(checkpoint_dir, codec=other)
    with pytest.raises(CheckpointError, match=r"no checkpoint folder"):
        load_checkpoint(tmp_path / "nowhere")


# --------------------------------------------------------------------------- converter


def vallex_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors in the published VALL-E-X layout, shrunk (its names and shapes, not its weights)."""
    generator = torch.Generator().manual_seed(seed)
    shapes = vallex_shapes(d_model=32, n_layers=2, n_text_tokens=100, codebook_size=256, n_codebooks=8, n_languages=3)
    state = {name: torch.randn(shape, generator=generator) for name, shape in shapes.items()}
    for j in range(6):  # VALL-E-X shares NAR output layer j with the audio embedding of codebook j+2
        state[f"nar_predict_layers.{j}.weight"] = state[f"nar_audio_embeddings.{j + 2}.word_embeddings.weight"]
    return state


def test_the_converter_loads_a_state_dict_shaped_like_vallex(tmp_path: Path, codec_dir: Path) -> None:
    state = vallex_state_dict()
    # As published: the weights under "model", beside training state such as a pathlib path.
    torch.save({"model": state, "epoch": 3, "exp_dir": pathlib.PosixPath("/train/exp")}, tmp_path / "vallex.pt")
    assert convert_main([str(tmp_path / "vallex.pt"), str(tmp_path / "out"), "--codec", str(codec_dir),
                         "--heads", "4", "--copy-codec"]) == 0
    loaded = load_checkpoint(tmp_path / "out")
    assert loaded.config.languages == ["en", "zh", "ja"] and loaded.vocabulary == VALLEX_VOCABULARY
    assert (loaded.config.d_model, loaded.config.ar_layers, loaded.config.n_text_tokens) == (32, 2, 100)
    converted = loaded.model.state_dict()
    assert set(converted) == set(state) and all(torch.equal(converted[n], t) for n, t in state.items())
    text = Frontend(loaded.vocabulary).encode("Hello there.")
    result = generate(loaded.model, text.ids, text.phonemes, None, Sampling(), FRAME_RATE)
    assert result.codes.shape[0] == 8


def test_the_converter_names_what_does_not_fit(tmp_path: Path, codec_dir: Path) -> None:
    state = vallex_state_dict()
    state.pop("nar_decoder.layers.1.norm2.project_layer.bias")
    torch.save({"model": state}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match=r"tensor 'nar_decoder\.layers\.1\.norm2\.project_layer\.bias' is missing"):
        convert(tmp_path / "partial.pt", tmp_path / "out", codec_dir, n_heads=4)
    untied = vallex_state_dict()
    untied["nar_predict_layers.0.weight"] = torch.zeros(256, 32)
    torch.save({"model": untied}, tmp_path / "untied.pt")
    with pytest.raises(CheckpointError, match=r"'nar_predict_layers\.0\.weight' differs"):
        convert(tmp_path / "untied.pt", tmp_path / "out2", codec_dir, n_heads=4)


# --------------------------------------------------------------------------- engine


def test_the_engine_module_loads_no_torch() -> None:
    code = ("import sys; from narro.engines import ENGINES; kind = ENGINES['codec-lm']; "
            "assert kind.resources == {'GPU': 1}; assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


REFERENCE_TEXT = "The quick brown fox jumps over the lazy dog. Speech synthesis turns written text into spoken audio."


def _voice(checkpoint: Path, reference: Path, **options: object):
    from narro.voices import EngineVoice

    return EngineVoice(engine="codec-lm", model=str(checkpoint), reference=str(reference),
                       **{"reference_text": REFERENCE_TEXT, **options})


@pytest.fixture(scope="module")
def reference_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.piper_speech import piper_sentences, write_wav

    clips, rate = piper_sentences()
    gap = np.zeros(int(0.4 * rate), dtype=np.float32)
    return write_wav(tmp_path_factory.mktemp("ref") / "ref.wav", np.concatenate([clips[0], gap, clips[1]]), rate)


def test_the_engine_identity_and_variants(checkpoint_dir: Path, reference_wav: Path) -> None:
    from narro.engines.codec_lm.engine import CodecLmKind

    voice = _voice(checkpoint_dir, reference_wav, seed=7)
    identity = CodecLmKind.identity(voice)
    assert identity["checkpoint_sha256"] == load_checkpoint(checkpoint_dir).sha256
    assert identity["sampling"]["seed"] == 7 and len(identity["reference_sha256"]) == 64
    assert CodecLmKind.identity(_voice(checkpoint_dir, reference_wav, seed=7, top_p=0.9)) != identity
    variants = CodecLmKind.variants(voice)
    assert [v.label for v in variants] == ["seed 8", "seed 9", "seed 10"]
    assert [CodecLmKind.identity(v.voice)["sampling"]["seed"] for v in variants] == [8, 9, 10]


def test_the_engine_speaks_part_by_part_and_streams(checkpoint_dir: Path, reference_wav: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from narro.engines.codec_lm import engine as engine_module
    from narro.engines.edge import PART_GAP_S
    from narro.settings import CodecLmSettings, Settings

    monkeypatch.setattr(engine_module, "MAX_PART_CHARS", 20)  # two short parts keep a random model's takes short
    settings = Settings(codec_lm=CodecLmSettings(device="cpu"))
    engine = engine_module.CodecLmKind.load(_voice(checkpoint_dir, reference_wav, seed=1), settings)
    text = "Hello there. It ends here."
    take = engine.synthesize(text)
    assert take.sample_rate == 24000 and take.samples.dtype == np.float32 and np.abs(take.samples).max() <= 1.0
    assert take.details["parts"] == 2 and take.details["seed"] == 1
    assert set(take.details["guard_trips"]) == {"frame_cap", "repetition"}
    assert len(take.samples) == take.details["frames"] * 320 + int(PART_GAP_S * 24000)
    assert np.array_equal(engine.synthesize(text).samples, take.samples)  # the same seed, the same take
    streamed = list(engine.stream(text))
    assert sum(len(c) for c in streamed) == len(take.samples)


def test_a_reference_without_text_is_transcribed_by_the_installed_recogniser(
        checkpoint_dir: Path, reference_wav: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from narro.engines.codec_lm import engine as engine_module
    from narro.errors import ReferenceAudioError
    from narro.settings import CodecLmSettings, Settings

    settings = Settings(codec_lm=CodecLmSettings(device="cpu"))
    voice = _voice(checkpoint_dir, reference_wav, reference_text=None)
    monkeypatch.setattr(engine_module, "_transcriber", None)
    with pytest.raises(ReferenceAudioError, match="has no transcript"):
        engine_module.CodecLmKind.load(voice, settings)
    heard = []
    engine_module.set_transcriber(lambda given: lambda samples, rate: heard.append(given) or REFERENCE_TEXT.lower())
    engine = engine_module.CodecLmKind.load(voice, settings)
    assert heard == [settings] and engine.reference.text.startswith("the quick brown fox")
