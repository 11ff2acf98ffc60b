"""Conditioning: the built-in encoder, the LAION-CLAP loader, the cache, interpolation.

The LAION-CLAP tests at the end run the real `laion_clap` code with random weights and a
hub cache made here; they are skipped where the `riffwright[laion]` extra is not installed.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.errors import AudioError, BundleError, RequestError
from engine.interfaces import Conditioner
from engine.models.conditioning import (
    FAMILY_PROMPTS,
    EmbeddingCache,
    check_conditioner_matches,
    classify_family,
    create_conditioner,
    default_cache_dir,
    interpolate,
    load_conditioner,
    save_conditioner,
)
from engine.models.conditioning.features import WINDOW_SAMPLES, mel_filterbank, split_windows
from engine.models.conditioning.text import Tokenizer, build_vocab
from engine.training.conditioner import evaluate_encoder, train_encoder

SR = 48_000
TINY = {"channels": [4, 8], "dim": 16, "text_width": 16, "text_heads": 2, "ngram_buckets": 64}


def tone(seconds: float, freq: float = 220.0, sr: int = SR, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    noise = np.random.default_rng(seed).standard_normal(t.size) * 0.01
    return (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


@pytest.fixture(scope="module")
def cond():
    return create_conditioner("builtin")


@pytest.fixture(scope="module")
def tiny():
    return create_conditioner("builtin", **TINY)


# -- features ---------------------------------------------------------------------------------
def test_mel_filterbank_places_a_tone_in_its_band():
    bank = mel_filterbank(SR, 2048, 64, 30.0, 16000.0)
    assert bank.shape == (64, 1025) and (bank >= 0).all()
    peaks = bank.argmax(1)
    assert (np.diff(peaks) >= 0).all()  # bands ascend in frequency
    from engine.models.conditioning.features import LogMel

    mel = LogMel()(torch.from_numpy(tone(1.0, 1000.0)))
    band = int(mel.mean(-1).argmax())
    centre_hz = peaks[band] * SR / 2048
    assert 800 < centre_hz < 1250


def test_windows_are_fixed_and_cover_the_clip():
    short = torch.arange(1, 4 * SR + 1, dtype=torch.float32)
    w = split_windows(short)
    assert w.shape == (1, WINDOW_SAMPLES)
    assert torch.equal(w[0, : 2 * short.numel()], short.repeat(2))  # tiled, then zero-padded
    assert (w[0, 2 * short.numel() :] == 0).all()
    long = torch.arange(25 * SR, dtype=torch.float32)
    w = split_windows(long)
    assert w.shape == (3, WINDOW_SAMPLES)
    assert w[0, 0] == 0 and w[1, 0] == WINDOW_SAMPLES and w[2, -1] == long[-1]
    assert torch.equal(split_windows(long), w)


def test_tokenizer_known_unknown_and_stable_ids():
    vocab = build_vocab(["acoustic bass, bass, low register", "violin, strings, 120 bpm"])
    assert vocab[0] == "bass"  # most frequent first
    tok = Tokenizer(vocab)
    ids, grams = tok.encode(["Bass, violins!", ""])
    assert ids.shape == (2, 2) and ids[1].sum() == 0
    assert ids[0, 0] == tok.word_id("bass") and ids[0, 0] > tok.oov_buckets
    assert 1 <= ids[0, 1] <= tok.oov_buckets  # unknown word: a hashed bucket
    assert (grams[0, 1] > 0).any()
    assert Tokenizer(vocab).word_id("violins") == tok.word_id("violins")


# -- the built-in conditioner -------------------------------------------------------------------
def test_untrained_builtin_is_unit_deterministic_and_batch_independent(cond):
    a = tone(12.0)
    e1, e2 = cond.embed_audio(a, SR), cond.embed_audio(torch.from_numpy(a), SR)
    assert e1.shape == (1, cond.dim) and e1.dtype == torch.float32
    assert torch.equal(e1, e2)
    assert abs(float(e1.norm()) - 1.0) < 1e-5
    two = cond.embed_audio(np.stack([a, a[::-1].copy()]), SR)
    assert two.shape == (2, cond.dim) and torch.equal(two[0], e1[0])
    texts = ["acoustic bass, bass, low register, walking line, jazz, 120 bpm", "drums"]
    t = cond.embed_text(texts)
    assert torch.allclose(t.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.equal(t[1], cond.embed_text(["drums"])[0])  # the batch does not matter
    other = create_conditioner("builtin")  # same seed, same weights, same id
    assert other.id == cond.id and torch.equal(other.embed_text(texts), t)
    assert cond.id.startswith("builtin-") and cond.kind == "riffwright-conditioner"
    assert isinstance(cond, Conditioner) and isinstance(cond, torch.nn.Module)
    assert cond.embed_audio(tone(1.0, sr=44100), 44100).shape == (1, cond.dim)


def test_bad_audio_is_refused(cond):
    with pytest.raises(AudioError, match="empty"):
        cond.embed_audio(np.zeros(0, np.float32), SR)
    with pytest.raises(AudioError, match="NaN"):
        cond.embed_audio(np.full(100, np.nan, np.float32), SR)
    with pytest.raises(AudioError, match="shape"):
        cond.embed_audio(np.zeros((1, 2, 3), np.float32), SR)


def test_save_load_round_trip_keeps_id_and_embeddings(tmp_path, cond, tiny):
    save_conditioner(cond, tmp_path / "default.safetensors")
    assert (tmp_path / "default.safetensors").stat().st_size < 5_000_000
    path = tmp_path / "cond.safetensors"
    save_conditioner(tiny, path)
    loaded = load_conditioner(path)
    assert loaded.id == tiny.id and loaded.config == tiny.config
    a = tone(3.0)
    assert torch.equal(loaded.embed_audio(a, SR), tiny.embed_audio(a, SR))
    assert torch.equal(loaded.embed_text(["piano"]), tiny.embed_text(["piano"]))
    reseeded = create_conditioner("builtin", seed=1, **TINY)
    assert reseeded.id != cond.id
    with pytest.raises(BundleError, match="does not match|trained with"):
        check_conditioner_matches(reseeded, tiny.id)
    check_conditioner_matches(loaded, tiny.id)


def test_wrong_truncated_or_tampered_builtin_files(tmp_path, tiny):
    cond = tiny
    from engine.weights import save_module, sha256_file

    good = tmp_path / "cond.safetensors"
    save_conditioner(cond, good)
    digest = sha256_file(good)
    wrong = tmp_path / "other.safetensors"
    save_module(torch.nn.Linear(2, 2), wrong, "riffwright-cae", {})
    with pytest.raises(BundleError, match="riffwright-cae weights, expected riffwright-cond"):
        load_conditioner(wrong)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(BundleError, match="not a readable safetensors"):
        load_conditioner(cut)
    tampered = tmp_path / "tampered.safetensors"
    data = bytearray(good.read_bytes())
    data[-10] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="damaged or not the one recorded"):
        load_conditioner(tampered, expected_sha256=digest)
    assert load_conditioner(tampered).id != cond.id  # a bundle check catches it too
    pickled = tmp_path / "model.bin"
    pickled.write_bytes(b"\x80\x04")
    with pytest.raises(BundleError, match="pickle"):
        load_conditioner(pickled)


# -- interpolation -------------------------------------------------------------------------------
def test_interpolation_end_points_are_exact_and_the_middle_is_unit():
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(3, 32, generator=g), dim=-1)
    t = torch.nn.functional.normalize(torch.randn(3, 32, generator=g), dim=-1)
    for mode in ("linear", "slerp"):
        assert torch.equal(interpolate(a, t, 0.0, mode), a)
        assert torch.equal(interpolate(a, t, 1.0, mode), t)
        m = interpolate(a, t, 0.3, mode)
        assert torch.allclose(m.norm(dim=-1), torch.ones(3), atol=1e-6)
    # slerp moves at constant angular speed
    omega = torch.arccos((a * t).sum(-1))
    s = interpolate(a, t, 0.25, "slerp")
    assert torch.allclose(torch.arccos((a * s).sum(-1).clamp(-1, 1)), 0.25 * omega, atol=1e-4)
    lin = interpolate(a[0], t[0], 0.5)
    assert torch.allclose(lin, torch.nn.functional.normalize(a[0] + t[0], dim=-1), atol=1e-6)
    assert torch.allclose(interpolate(a[0], a[0], 0.5, "slerp"), a[0], atol=1e-6)
    with pytest.raises(RequestError, match="between 0 and 1"):
        interpolate(a, t, 1.5)
    with pytest.raises(RequestError, match="mode"):
        interpolate(a, t, 0.5, "cubic")
    with pytest.raises(RequestError, match="differ in size"):
        interpolate(a, t[:, :8], 0.5)


# -- embedding cache -----------------------------------------------------------------------------
def test_embedding_cache_hits_on_the_same_content_and_conditioner(tmp_path, tiny):
    cond = tiny
    cache = EmbeddingCache(tmp_path / "emb")
    a = tone(2.0)
    e1 = cache.embed_audio(cond, a, SR)
    assert (cache.hits, cache.misses) == (0, 1)
    e2 = cache.embed_audio(cond, a.copy(), SR)
    assert (cache.hits, cache.misses) == (1, 1) and torch.equal(e1, e2)
    assert torch.equal(e1, cond.embed_audio(a, SR))
    cache.embed_audio(cond, a, 44100)  # same samples, other rate: another key
    other = create_conditioner("builtin", seed=3, **TINY)
    cache.embed_audio(other, a, SR)  # another conditioner: another key
    assert cache.misses == 3
    t1 = cache.embed_text(cond, ["bass", "drums"])
    t2 = cache.embed_text(cond, ["drums", "organ"])
    assert torch.equal(t1[1], t2[0]) and cache.hits == 2
    files = list((tmp_path / "emb").rglob("*"))
    assert not [p for p in files if p.name.endswith(".tmp")]
    # a damaged entry is a miss and is rewritten
    key = cache.audio_key(cond.id, a, SR)
    cache._path(key).write_bytes(b"garbage")
    assert torch.equal(cache.embed_audio(cond, a, SR), e1)
    assert cache.get(key) is not None
    assert default_cache_dir().name == "embeddings"
    assert "riffwright" in str(default_cache_dir())


# -- zero-shot family classification ----------------------------------------------------------
class _FakeConditioner:
    """Text: one-hot per family prompt; audio: one-hot by the tone's pitch."""

    id, dim = "fake", len(FAMILY_PROMPTS)
    fams = list(FAMILY_PROMPTS)

    def embed_text(self, texts):
        return torch.stack([torch.eye(self.dim)[self.fams.index(t)] for t in texts])

    def embed_audio(self, wave, sr):
        rows = np.atleast_2d(np.asarray(wave))
        out = []
        for r in rows:
            f = np.abs(np.fft.rfft(r)).argmax() * sr / r.size
            out.append(torch.eye(self.dim)[1 if f < 200 else 2])  # bass below 200 Hz, else piano
        return torch.stack(out)


def test_classify_family_picks_the_nearest_prompt():
    fake = _FakeConditioner()
    assert classify_family(fake, tone(1.0, 80.0), SR) == "bass"
    assert classify_family(fake, np.stack([tone(1.0, 80.0), tone(1.0, 440.0)]), SR) == [
        "bass",
        "piano",
    ]
    assert classify_family(fake, tone(1.0, 440.0), SR, families=["bass", "drums"]) == "bass"
    with pytest.raises(RequestError, match="unknown instrument family"):
        classify_family(fake, tone(1.0), SR, families=["kazoo"])
    assert classify_family(create_conditioner(**TINY), tone(1.0), SR) in FAMILY_PROMPTS


# -- training ------------------------------------------------------------------------------------
def _tiny_dataset(root: Path) -> Path:
    import soundfile as sf

    rng = np.random.default_rng(0)
    songs = []
    for s in range(4):
        sid = f"s{s}"
        (root / "songs" / sid).mkdir(parents=True)
        stems = []
        for fam, freq in (("bass", 60.0), ("piano", 520.0), ("drums", None)):
            y = rng.standard_normal(SR * 2) * 0.2 if freq is None else tone(2.0, freq, seed=s)
            rel = f"songs/{sid}/{fam}.wav"
            sf.write(root / rel, y.astype(np.float32), SR)
            stems.append({"path": rel, "instrument": fam, "family": fam, "program": 0,
                          "register": "mid", "caption": f"{fam}, mid register, rock, 120 bpm"})
        songs.append({"id": sid, "split": "test" if s == 3 else "train", "tempo": 120,
                      "key": "C", "meter": "4/4", "style": "rock", "seconds": 2.0,
                      "stems": stems})
    (root / "manifest.json").write_text(json.dumps({"version": 1, "sample_rate": SR,
                                                    "songs": songs}))
    return root


def test_training_is_resumable_bit_for_bit_and_evaluates(tmp_path):
    data = _tiny_dataset(tmp_path / "data")
    kw = dict(batch_size=4, min_seconds=1.0, max_seconds=1.5, model_config=TINY,
              checkpoint_every=2, warmup=2)
    full = train_encoder(data, tmp_path / "a" / "c.safetensors", 4, **kw)
    train_encoder(data, tmp_path / "b" / "c.safetensors", 2, **kw)
    resumed = train_encoder(data, tmp_path / "b" / "c.safetensors", 4, **kw)
    assert resumed["steps"] == 4 and np.isfinite(resumed["loss"])
    assert resumed["id"] == full["id"]  # the same weights, bit for bit
    cond = load_conditioner(tmp_path / "b" / "c.safetensors")
    assert cond.dim == 16 and "bass" in cond.config["vocab"]
    res = evaluate_encoder(cond, data, "test")
    assert res["n_stems"] == 3 and res["n_families"] == 3
    for key in ("recall@1", "recall@5", "family_accuracy", "caption_recall@1", "mAP"):
        assert 0.0 <= res[key] <= 1.0
    assert res["recall@5"] == 1.0  # 3 stems: every family is in the top 5
    log = (tmp_path / "b" / "c.log.jsonl").read_text().splitlines()
    assert json.loads(log[-1])["step"] == 4


# -- LAION-CLAP: checks that need no laion_clap -------------------------------------------------
def test_laion_model_choice_follows_the_checkpoint_name():
    from engine.models.conditioning.laion import guess_model

    assert guess_model("/x/music_audioset_epoch_15_esc_90.14.pt") == ("HTSAT-base", False)
    assert guess_model("music_speech_epoch_15_esc_89.25.pt") == ("HTSAT-base", False)
    assert guess_model("630k-audioset-fusion-best.pt") == ("HTSAT-tiny", True)
    assert guess_model("my-clap.pt") == ("HTSAT-tiny", False)


def test_laion_checkpoint_missing_empty_unknown_or_tampered(tmp_path):
    from engine.models.conditioning.laion import verify_checkpoint
    from engine.weights import sha256_file

    with pytest.raises(BundleError, match=r"not found: .*music.*huggingface\.co/lukewys"):
        verify_checkpoint(tmp_path / "music_audioset_epoch_15_esc_90.14.pt")
    empty = tmp_path / "630k-best.pt"
    empty.touch()
    with pytest.raises(BundleError, match="empty"):
        verify_checkpoint(empty)
    ckpt = tmp_path / "custom.pt"
    ckpt.write_bytes(b"\x80\x04not really a pickle" * 100)
    with pytest.raises(BundleError, match="no SHA-256 is known for custom.pt"):
        verify_checkpoint(ckpt)
    digest = sha256_file(ckpt)
    assert verify_checkpoint(ckpt, digest) == digest
    ckpt.write_bytes(ckpt.read_bytes()[:-1])  # truncated
    with pytest.raises(BundleError, match="truncated, corrupted.*Nothing was loaded"):
        verify_checkpoint(ckpt, digest)
    music = tmp_path / "music_audioset_epoch_15_esc_90.14.pt"  # known name, wrong bytes
    music.write_bytes(b"x" * 1000)
    with pytest.raises(BundleError, match="expected fae3e9c087f2909c"):
        verify_checkpoint(music)


def test_laion_missing_hub_cache_names_the_file(tmp_path):
    from engine.models.conditioning.laion import check_hub_cache

    with pytest.raises(BundleError, match=r"bert-base-uncased/vocab\.txt.*huggingface-cli"):
        check_hub_cache(tmp_path)
    _fake_hub(tmp_path, skip=("roberta-base", "merges.txt"))
    with pytest.raises(BundleError, match=rf"roberta-base/merges\.txt in .*{tmp_path.name}"):
        check_hub_cache(tmp_path)
    _fake_hub(tmp_path)
    assert check_hub_cache(tmp_path) == tmp_path


@pytest.mark.skipif(
    importlib.util.find_spec("laion_clap") is not None, reason="laion_clap is installed here"
)
def test_laion_without_the_extra_says_how_to_get_it(tmp_path):
    from engine.models.conditioning import load_laion_clap

    with pytest.raises(BundleError, match=r"pip install 'riffwright\[laion\]'"):
        load_laion_clap(tmp_path / "music_audioset_epoch_15_esc_90.14.pt", "cpu")


# -- LAION-CLAP through the real package, random weights ---------------------------------------
def _byte_symbols() -> list[str]:
    """GPT-2 byte-level BPE alphabet (what RoBERTa's vocab.json is written in)."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = [b for b in range(256) if b not in keep]
    return [chr(b) for b in keep] + [chr(256 + i) for i in range(len(extra))]


def _fake_hub(cache: Path, skip: tuple[str, str] | None = None) -> None:
    """A hub cache with small tokenizers and a 1-layer RoBERTa config (768 wide, as CLAP's
    text projection expects); no weights, as the loader builds RoBERTa from its config."""
    bpe = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", *_byte_symbols(),
                                       "<mask>"])}
    wordpiece = "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghij"]) + "\n"
    roberta = {"model_type": "roberta", "vocab_size": len(bpe), "hidden_size": 768,
               "num_hidden_layers": 1, "num_attention_heads": 12, "intermediate_size": 256,
               "max_position_embeddings": 80, "type_vocab_size": 1, "pad_token_id": 1,
               "bos_token_id": 0, "eos_token_id": 2}
    repos = {
        "bert-base-uncased": {"vocab.txt": wordpiece},
        "roberta-base": {"vocab.json": json.dumps(bpe), "merges.txt": "#version: 0.2\n",
                         "config.json": json.dumps(roberta)},
        "facebook/bart-base": {"vocab.json": json.dumps(bpe), "merges.txt": "#version: 0.2\n"},
    }
    for repo, files in repos.items():
        root = cache / ("models--" + repo.replace("/", "--"))
        snap = root / "snapshots" / ("0" * 40)
        snap.mkdir(parents=True, exist_ok=True)
        (root / "refs").mkdir(exist_ok=True)
        (root / "refs" / "main").write_text("0" * 40)
        for name, text in files.items():
            if (repo, name) != skip:
                (snap / name).write_text(text)


needs_laion = pytest.mark.skipif(
    importlib.util.find_spec("laion_clap") is None,
    reason="the riffwright[laion] extra (laion_clap) is not installed",
)


@pytest.fixture(scope="module")
def laion_setup(tmp_path_factory):
    """A random-weight HTSAT-tiny checkpoint built by laion_clap itself, saved as laion does
    ({"state_dict": {"module.<name>": tensor}}), and a hub cache to load it with."""
    import sys

    from engine.models.conditioning import laion

    root = tmp_path_factory.mktemp("laion")
    hub = root / "hub"
    _fake_hub(hub)
    laion._set_offline(hub)
    laion._ensure_torchvision()
    import laion_clap

    torch.manual_seed(0)
    with laion._roberta_from_config(sys.modules["clap_module.model"]):
        clap = laion_clap.CLAP_Module(enable_fusion=False, device="cpu", amodel="HTSAT-tiny")
    ckpt = root / "630k-audioset-best.pt"
    state = {"module." + k: v for k, v in clap.model.state_dict().items()}
    torch.save({"epoch": 1, "state_dict": state}, ckpt)
    return ckpt, hub


@needs_laion
@pytest.mark.slow
def test_laion_real_code_loads_verified_checkpoint_and_embeds(laion_setup):
    from engine.models.conditioning import load_laion_clap
    from engine.weights import sha256_file

    ckpt, hub = laion_setup
    digest = sha256_file(ckpt)
    clap = load_laion_clap(ckpt, "cpu", expected_sha256=digest, hub_cache=hub)
    assert clap.dim == 512 and clap.config["amodel"] == "HTSAT-tiny"
    assert isinstance(clap, Conditioner)
    assert clap.id == f"laion-clap-HTSAT-tiny-{digest[:16]}"
    a = tone(23.0)  # three windows
    e = clap.embed_audio(a, SR)
    assert e.shape == (1, 512) and abs(float(e.norm()) - 1) < 1e-5
    assert torch.equal(e, clap.embed_audio(a, SR))  # no random crop
    t = clap.embed_text(["a walking upright bass", "drums"])
    assert t.shape == (2, 512) and torch.equal(t, clap.embed_text(["a walking upright bass",
                                                                    "drums"]))
    mixed = interpolate(e, t[:1], 0.5)
    assert torch.allclose(mixed.norm(dim=-1), torch.ones(1), atol=1e-6)
    with pytest.raises(BundleError, match="trained with conditioner builtin-"):
        check_conditioner_matches(clap, create_conditioner().id)


@needs_laion
@pytest.mark.slow
def test_laion_tampered_wrong_model_and_missing_cache_are_refused(laion_setup, tmp_path):
    from engine.models.conditioning import load_laion_clap
    from engine.weights import sha256_file

    ckpt, hub = laion_setup
    digest = sha256_file(ckpt)
    tampered = tmp_path / ckpt.name
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="truncated, corrupted"):
        load_laion_clap(tampered, "cpu", expected_sha256=digest, hub_cache=hub)
    with pytest.raises(BundleError, match=r"bert-base-uncased/vocab\.txt in .* cache .*nohub"):
        load_laion_clap(ckpt, "cpu", expected_sha256=digest, hub_cache=tmp_path / "nohub")
    # a tiny model under a music-style name (an unpublished one: a published name needs its
    # published digest, whatever digest a caller gives)
    music = tmp_path / "music_finetuned.pt"
    music.write_bytes(ckpt.read_bytes())
    with pytest.raises(BundleError, match="does not fit LAION-CLAP HTSAT-base"):
        load_laion_clap(music, "cpu", expected_sha256=digest, hub_cache=hub)
