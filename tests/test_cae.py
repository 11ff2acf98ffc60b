"""engine.models.cae: shapes and lengths, the consistency boundary condition, seamless chunking,
determinism, checkpoints, latent statistics, training, evaluation, Music2Latent backend."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from engine.audio import write_audio
from engine.errors import BundleError
from engine.interfaces import Autoencoder
from engine.models.cae import ARCHS, cae_from_config, create_cae, latent_stats, load_cae
from engine.training.cae import CTSchedule, consistency_loss, ct_sigmas, train_step
from engine.weights import save_module

SR = 48000


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on a shared 2-core machine, two spinning OpenMP threads can run
    tens of times slower than one. Restored afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def randomize_zero_inits(cae, seed=0):
    """Give the zero-initialised output layers random weights, so an untrained decoder's
    output depends on its noise and latents (else every property below holds trivially)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in cae.parameters():
            if p.ndim > 1 and not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    cae.reset_id()
    return cae


@pytest.fixture(scope="module")
def cae():
    torch.manual_seed(0)
    return randomize_zero_inits(create_cae("tiny"))


def music(seconds: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR)) / SR
    x = 0.2 * torch.sin(2 * math.pi * 220 * t) + 0.1 * torch.sin(2 * math.pi * 331 * t)
    return (x + 0.03 * torch.randn(t.shape, generator=g)).float()


def frame_rms(y: torch.Tensor, n: int = 2048) -> torch.Tensor:
    y = y[: y.numel() // n * n].reshape(-1, n)
    return y.pow(2).mean(1).sqrt()


def test_interface_and_presets(cae):
    assert set(ARCHS) >= {"tiny", "small"}
    assert isinstance(cae, Autoencoder)
    assert (cae.sample_rate, cae.hop, cae.latent_dim, cae.kind) == (48000, 4096, 64, "riffwright-cae")
    assert cae.id.startswith("cae-tiny-")
    small = create_cae("small")
    n = small.num_parameters()["total"]
    assert 1_000_000 < n < 10_000_000, n
    with pytest.raises(KeyError, match="tiny"):
        create_cae("huge")


@pytest.mark.parametrize("seconds", [0.5, 10.0, 95.0])
def test_round_trip_returns_exactly_the_input_length(cae, seconds):
    x = music(seconds)
    T = x.numel()
    z = cae.encode(x[None])
    assert z.shape == (1, 64, math.ceil(T / 4096))
    y = cae.decode(z, length=T, generator=torch.Generator().manual_seed(0))
    assert y.shape == (1, T) and y.dtype == torch.float32 and torch.isfinite(y).all()
    assert not z.is_inference() and not y.is_inference()  # usable as training data
    assert cae.decode(z[:, :, :3]).shape == (1, 3 * 4096)


def test_batch_items_are_independent(cae):
    a, b = music(3.0, 1), music(3.0, 2) * 0.5
    za = cae.encode(torch.stack([a, b]))
    assert torch.allclose(za[0], cae.encode(a[None])[0], atol=1e-5)
    assert torch.allclose(za[1], cae.encode(b[None])[0], atol=1e-5)


def test_boundary_condition(cae):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1024, 32, generator=g)
    z = torch.randn(2, 64, 2, generator=g)
    smin = torch.tensor(cae.sigma_min)
    with torch.no_grad():
        assert torch.equal(cae.denoise(x, smin, z), x)
        assert float(cae.c_skip(smin)) == 1.0 and float(cae.c_out(smin)) == 0.0
        y = cae.denoise(x, torch.tensor(cae.sigma_max), z)
    assert not torch.allclose(y, x)  # away from sigma_min the network does act
    assert float(cae.c_skip(torch.tensor(80.0))) < 1e-4


def test_decode_is_deterministic_given_a_generator(cae):
    z = cae.encode(music(2.0)[None])
    y1 = cae.decode(z, generator=torch.Generator().manual_seed(7))
    y2 = cae.decode(z, generator=torch.Generator().manual_seed(7))
    y3 = cae.decode(z, generator=torch.Generator().manual_seed(8))
    assert torch.equal(y1, y2)
    assert not torch.allclose(y1, y3)


def test_chunked_encode_matches_whole_file(cae):
    x = music(12.0)[None]
    whole = cae.encode(x, max_chunk_frames=10_000)
    chunked = cae.encode(x, max_chunk_frames=16)
    err = (whole - chunked).norm() / whole.norm()
    assert err < 1e-3, float(err)


def test_chunked_decode_has_no_seam(cae):
    x = music(20.0)[None]
    z = cae.encode(x)
    whole = cae.decode(z, generator=torch.Generator().manual_seed(3), max_chunk_frames=10_000)[0]
    chunked = cae.decode(z, generator=torch.Generator().manual_seed(3), max_chunk_frames=24)[0]
    # phases are rebuilt from the magnitudes (engine.models.cae.phase), so the chunked decode's
    # waveform may drift in phase; its spectrogram must match the whole decode's
    mag = lambda y: torch.stft(y, 2048, 512, window=torch.hann_window(2048),  # noqa: E731
                               return_complex=True).abs()
    assert (mag(whole) - mag(chunked)).norm() / mag(whole).norm() < 0.05
    # energy at every chunk boundary stays within 0.5 dB of the unchunked decode...
    r_w, r_c = frame_rms(whole), frame_rms(chunked)
    db = 20 * torch.log10(r_c / r_w)
    assert db.abs().max() < 0.5, float(db.abs().max())
    # ...and no frame-to-frame energy jump exceeds what the unchunked decode has anyway
    jump_c = (20 * torch.log10(r_c[1:] / r_c[:-1])).abs().max()
    jump_w = (20 * torch.log10(r_w[1:] / r_w[:-1])).abs().max()
    assert jump_c < jump_w + 0.5


def test_memory_is_bounded_by_max_chunk_frames(cae):
    seen = []
    h1 = cae.decoder.register_forward_pre_hook(
        lambda m, a: seen.append(a[0].shape[0] * a[0].shape[-1] // 16)
    )
    h2 = cae.encoder.register_forward_pre_hook(
        lambda m, a: seen.append(a[0].shape[0] * a[0].shape[-1] // 16)
    )
    try:
        z = cae.encode(music(30.0)[None].repeat(2, 1), max_chunk_frames=40)
        cae.decode(z, max_chunk_frames=40)
    finally:
        h1.remove()
        h2.remove()
    assert len(seen) > 4 and max(seen) <= 40


def test_save_and_load_round_trip(cae, tmp_path):
    p = tmp_path / "cae.safetensors"
    save_module(cae, p, cae.kind, cae.config, torch.float16)
    a, b = load_cae(p), load_cae(p)
    assert a.id == b.id and a.id.startswith("cae-tiny-")
    assert a.config == cae.config
    x = music(1.0)[None]
    assert torch.allclose(a.encode(x), cae.encode(x), atol=2e-2)
    other = randomize_zero_inits(create_cae("tiny"), seed=5)
    assert other.id != cae.id
    assert cae_from_config(cae.config).config == cae.config
    with pytest.raises(BundleError, match="not found"):
        load_cae(tmp_path / "missing.safetensors")


def test_decoder_head_starts_at_zero_and_is_saved(cae, tmp_path):
    """A CAE given a wider output head decodes exactly as before until the head is trained;
    the head's width travels in the config, so the file loads back with it."""
    wider = cae_from_config({**cae.config, "head_channels": 48})
    missing, unexpected = wider.load_state_dict(cae.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("decoder.head.") for k in missing)
    z = cae.encode(music(1.0)[None])
    same = [m.decode(z, generator=torch.Generator().manual_seed(3)) for m in (cae, wider)]
    assert torch.equal(*same)
    with torch.no_grad():
        wider.decoder.head[2].weight.normal_(0, 0.05)
    wider.reset_id()
    assert wider.id != cae.id
    p = tmp_path / "wide.safetensors"
    save_module(wider, p, wider.kind, wider.config, torch.float32)
    back = load_cae(p)
    assert back.config["head_channels"] == 48 and back.id == wider.id
    changed = back.decode(z, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(changed, wider.decode(z, generator=torch.Generator().manual_seed(3)))
    assert not torch.allclose(changed, same[0])


def test_latent_stats_pool_every_frame():
    g = torch.Generator().manual_seed(0)
    items = [torch.randn(2, 64, 5, generator=g) * 3 + 1, torch.randn(64, 7, generator=g)]
    mean, std = latent_stats(items)
    flat = torch.cat([items[0].permute(1, 0, 2).reshape(64, -1), items[1]], dim=1).double()
    assert mean.shape == std.shape == (64,)
    assert torch.allclose(mean.double(), flat.mean(1), atol=1e-6)
    assert torch.allclose(std.double(), flat.std(1, unbiased=False), atol=1e-6)
    with pytest.raises(ValueError):
        latent_stats([])


def test_noise_curriculum_and_loss():
    cae = create_cae("tiny")
    sched = CTSchedule(stage_steps=10)
    t0, r0 = ct_sigmas(cae, 256, 0, sched, torch.Generator().manual_seed(0))
    assert torch.all(r0 == cae.sigma_min) and torch.all(t0 > cae.sigma_min)
    t3, r3 = ct_sigmas(cae, 256, 30, sched, torch.Generator().manual_seed(0))
    assert torch.equal(t0, t3)
    assert torch.all(r3 <= t3) and (r3 > cae.sigma_min).float().mean() > 0.5
    t6, r6 = ct_sigmas(cae, 256, 60, sched, torch.Generator().manual_seed(0))
    assert torch.all((t6 - r6) <= (t3 - r3) + 1e-6)  # the gap shrinks stage by stage
    spec = cae.spectral(music(1.4)[None].repeat(2, 1)[:, : 16 * 4096])
    loss, stats = consistency_loss(cae, spec, 30, sched, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and loss.requires_grad and stats["stage"] == 3


def test_multires_stft_loss_is_phase_blind_and_sees_partials():
    from engine.training.cae import multires_stft_loss

    t = torch.arange(SR) / SR
    tone = torch.sin(2 * math.pi * 220 * t)[None]
    shifted = torch.sin(2 * math.pi * 220 * t + 1.3)[None]  # same partial, another phase
    other = torch.sin(2 * math.pi * 330 * t)[None]
    same = float(multires_stft_loss(tone, tone))
    assert same < 1e-4
    # sidelobes and the padded edges differ a little with phase; the partial dominates
    assert float(multires_stft_loss(tone, shifted)) < 0.3 * float(multires_stft_loss(tone, other))


@pytest.mark.parametrize("term", ["spectral", "mel", "low"])
def test_decode_terms_train_the_one_step_decode(term):
    """With spectral_weight (or mel_weight, low_weight) the loss reports the one-step
    decode's STFT (or log-mel, low-band) distance, and only that one; its gradient reaches
    the decoder and a few steps lower it; without the weight nothing is reported."""
    others = {"spectral", "mel", "low"} - {term}
    torch.manual_seed(0)
    cae = create_cae("tiny")
    cae.encoder.requires_grad_(False)
    opt = torch.optim.Adam(cae.decoder.parameters(), lr=2e-3)
    sched = CTSchedule(stage_steps=10_000, **{f"{term}_weight": 1.0})
    g = torch.Generator().manual_seed(0)
    spec = cae.spectral(music(1.4)[None].repeat(2, 1)[:, : 4 * 4096])
    stats = [train_step(cae, opt, spec, i, sched, generator=g) for i in range(30)]
    assert all(term in s and not others & set(s) for s in stats)
    assert np.mean([s[term] for s in stats[-5:]]) < 0.8 * stats[0][term]
    assert term not in train_step(cae, opt, spec, 0, CTSchedule(), generator=g)


def test_low_band_loss_hears_a_bass_partials_and_the_floor_between_them():
    """The low-band term is zero for the same wave, small for a phase change, large for the
    same bass a semitone off or with noise between its partials (where the coarse STFT
    term barely moves), deaf above 1 kHz, finite on silence and differentiable."""
    from engine.training.cae import low_band_loss, multires_stft_loss

    t = torch.arange(2 * SR) / SR

    def bass(f0, phase=0.0):
        return sum(torch.sin(2 * math.pi * k * f0 * t + phase * k) / k for k in range(1, 6))[None]

    a = bass(55.0)
    noise = torch.randn(a.shape, generator=torch.Generator().manual_seed(0))
    lowpass = torch.fft.irfft(torch.fft.rfft(noise) * (torch.fft.rfftfreq(a.shape[1], 1 / SR)
                                                      < 600), n=a.shape[1])
    floor = a + 0.03 * lowpass / lowpass.std()
    hiss = torch.fft.irfft(torch.fft.rfft(noise) * (torch.fft.rfftfreq(a.shape[1], 1 / SR)
                                                   > 3000), n=a.shape[1])
    assert float(low_band_loss(a, a, SR)) < 1e-5
    phase = float(low_band_loss(a, bass(55.0, 1.3), SR))
    semitone = float(low_band_loss(a, bass(55.0 * 2 ** (1 / 12)), SR))
    smeared = float(low_band_loss(a, floor, SR))
    assert phase < 0.2 * semitone and phase < 0.2 * smeared
    # the coarse term hardly tells the smeared bass from the clean one
    assert float(multires_stft_loss(a, floor)) < 0.5 * smeared
    assert float(low_band_loss(a, a + 0.5 * hiss / hiss.std(), SR)) < 0.1 * smeared
    assert math.isfinite(float(low_band_loss(torch.zeros_like(a), a, SR)))
    est = floor.clone().requires_grad_(True)
    low_band_loss(a, est, SR).backward()
    assert torch.isfinite(est.grad).all() and float(est.grad.abs().sum()) > 0


def test_log_mel_loss_hears_timbre_not_phase():
    """The mel term is zero for the same sound, small for a phase change, large for the same
    notes with a darker timbre, finite on silence, and differentiable."""
    from engine.training.cae import log_mel_loss

    t = torch.arange(SR) / SR

    def tone(tilt: float, phase: float = 0.0) -> torch.Tensor:
        return sum(0.3 / k**tilt * torch.sin(2 * math.pi * 220 * k * t + phase * k)
                   for k in range(1, 13))[None]

    bright = tone(1.0)
    assert float(log_mel_loss(bright, bright, SR)) < 1e-6
    phase = float(log_mel_loss(bright, tone(1.0, 1.1), SR))
    dark = float(log_mel_loss(bright, tone(3.0), SR))
    assert dark > 0.3 and phase < 0.2 * dark
    silent = torch.zeros_like(bright)
    assert math.isfinite(float(log_mel_loss(silent, bright, SR)))
    est = tone(2.0).requires_grad_(True)
    log_mel_loss(bright, est, SR).backward()
    assert est.grad is not None and float(est.grad.abs().sum()) > 0


def test_training_learns_and_silence_stays_silent():
    """A few dozen steps on harmonic tones: the loss falls, the tones come back at a real
    level, and silence stays silent."""
    torch.manual_seed(0)
    cae = create_cae("tiny")
    opt = torch.optim.Adam(cae.parameters(), lr=2e-3)
    sched = CTSchedule(stage_steps=10_000)
    g = torch.Generator().manual_seed(0)
    t = torch.arange(4 * 4096) / SR
    waves = torch.stack(
        [sum(0.3 / k * torch.sin(2 * math.pi * f * k * t) for k in range(1, 9))
         for f in (110.0, 165.0, 220.0)]
        + [torch.zeros_like(t)]
    )
    spec = cae.spectral(waves)
    cae.eval()
    untrained = cae.decode(cae.encode(waves), generator=torch.Generator().manual_seed(0))
    losses = [train_step(cae, opt, spec, i, sched, generator=g)["loss"] for i in range(40)]
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    cae.eval()
    y = cae.decode(cae.encode(waves), generator=torch.Generator().manual_seed(0))
    rms = y.pow(2).mean(1).sqrt()
    # the tones come back (the untrained decoder outputs ~nothing for anything)...
    assert rms[:-1].min() > 100 * untrained.pow(2).mean(1).sqrt().max()
    # ...and silence decodes to near-silence: more than 40 dB below every tone
    assert rms[-1] < 0.01 * rms[:-1].min(), rms


def test_train_cae_refuses_an_unknown_option_before_writing(tmp_path):
    from engine.errors import RiffwrightError
    from engine.training.cae import TrainConfig, train_cae

    with pytest.raises(RiffwrightError, match="unknown CAE training option.*stepz"):
        train_cae(tmp_path / "data", tmp_path / "run", arch="tiny", stepz=3)
    assert not (tmp_path / "run").exists()
    cfg = TrainConfig.from_options(arch="tiny", stage_steps=7, mel_weight=0.5, init="")
    assert (cfg.arch, cfg.schedule.stage_steps, cfg.schedule.mel_weight, cfg.init) == (
        "tiny", 7, 0.5, None)


def test_train_cae_checkpoints_and_resumes(tmp_path):
    from engine.training.cae import train_cae

    data = tmp_path / "data"
    for i in range(2):
        write_audio(data / f"{i}.wav", music(1.0, i).numpy(), SR)
    out = tmp_path / "run"
    p = train_cae(data, out, arch="tiny", steps=3, batch_size=2, crop_frames=4,
                  checkpoint_every=2, log_every=1, threads=1)
    assert json.loads((out / "train_state.json").read_text())["step"] == 3
    p = train_cae(data, out, arch="tiny", steps=5, batch_size=2, crop_frames=4,
                  checkpoint_every=2, log_every=1, threads=1)
    log = [json.loads(line) for line in (out / "train.log").read_text().splitlines()]
    starts = [e["step"] for e in log if e.get("event") == "start"]
    assert starts == [0, 3]
    assert [e["step"] for e in log if "loss" in e] == [1, 2, 3, 4, 5]
    assert json.loads((out / "train_state.json").read_text())["step"] == 5
    loaded = load_cae(p)
    assert loaded.config["arch"] == "tiny"
    assert load_cae(out / "cae_raw.safetensors").id != loaded.id  # raw and EMA both saved
    from engine.training.cae_eval import evaluate_cae_on_data

    r = evaluate_cae_on_data(loaded, data, tmp_path / "ev", max_files=1, seconds=0.5, pngs=0)
    assert r["files"] == 1 and math.isfinite(r["mel"])


def test_evaluate_cae_reports_distances_and_pngs(cae, tmp_path):
    from engine.training.cae_eval import evaluate_cae, mel_distance, mrstft_distance

    x = music(1.0)
    assert mrstft_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert mel_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert mrstft_distance(x, 0.5 * x) > 0.1
    files = []
    for i in range(2):
        files.append(write_audio(tmp_path / f"f{i}.wav", music(1.0, i).numpy(), SR))
    r = evaluate_cae(cae, files, tmp_path / "eval", seconds=1.0, pngs=1)
    for k in ("mrstft", "mel", "mrstft_other", "mel_other", "encode_rtf", "decode_rtf"):
        assert math.isfinite(r[k]) and r[k] >= 0
    assert len(r["pngs"]) == 1 and (tmp_path / "eval" / "metrics.json").exists()
    assert open(r["pngs"][0], "rb").read(8) == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ Music2Latent backend


def test_music2latent_missing_weights_message(tmp_path):
    with pytest.raises(BundleError) as err:
        load_cae(tmp_path / "music2latent.pt")
    msg = str(err.value)
    assert "CC BY-NC" in msg and "never downloads" in msg and "\n" not in msg


def test_music2latent_backend_through_the_real_package(tmp_path):
    models = pytest.importorskip("music2latent.models", reason="music2latent is not installed")
    torch.manual_seed(0)
    net = models.UNet()
    path = tmp_path / "music2latent.pt"
    torch.save({"gen_state_dict": net.state_dict()}, path)
    m2l = load_cae(path)
    assert isinstance(m2l, Autoencoder)
    assert (m2l.sample_rate, m2l.hop, m2l.latent_dim) == (44100, 4096, 64)
    assert m2l.id.startswith("m2l-") and "CC BY-NC" in m2l.license
    x = music(0.2)[None, :9000]
    z = m2l.encode(x)
    assert z.shape == (1, 64, 3) and torch.isfinite(z).all()
    y1 = m2l.decode(z, length=9000, generator=torch.Generator().manual_seed(0))
    y2 = m2l.decode(z, length=9000, generator=torch.Generator().manual_seed(0))
    assert y1.shape == (1, 9000) and torch.equal(y1, y2)
    # the encoder is the package's own network on the package's own representation
    from music2latent.audio import to_representation_encoder

    seg = torch.nn.functional.pad(torch.nn.functional.pad(x, (0, 3 * 4096 - 9000))[:, None],
                                  (768, 768), mode="reflect")[:, 0]
    with torch.no_grad():
        ref = net.encoder(to_representation_encoder(seg)) / m2l.sigma_rescale
    assert torch.allclose(z, ref, atol=1e-5)
    # a pickle holding code is refused
    bad = tmp_path / "evil.pt"
    torch.save({"gen_state_dict": net.state_dict(), "x": object()}, bad)
    with pytest.raises(BundleError, match="never unpickles code"):
        load_cae(bad)


def test_sigterm_checkpoints_the_current_step(tmp_path):
    import os
    import signal

    from engine.training.cae import train_cae

    write_audio(tmp_path / "d" / "a.wav", music(1.0).numpy(), SR)

    def stop_at_seven(step, stats):
        if step == 7:
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        train_cae(tmp_path / "d", tmp_path / "run", arch="tiny", steps=50, batch_size=1,
                  crop_frames=2, checkpoint_every=5, log_every=3, callback=stop_at_seven)
    assert json.loads((tmp_path / "run" / "train_state.json").read_text())["step"] == 7
    assert signal.getsignal(signal.SIGTERM) == before  # our handler was removed again


def test_train_cae_with_a_head_and_the_mel_term(tmp_path):
    """`train cae` config keys `head_channels` and `mel_weight` reach the model and the loss."""
    from engine.training.cae import train_cae

    data = tmp_path / "data"
    write_audio(data / "0.wav", music(1.0).numpy(), SR)
    p = train_cae(data, tmp_path / "run", arch="tiny", steps=2, batch_size=1, crop_frames=4,
                  log_every=1, threads=1, head_channels=16, mel_weight=1.0)
    assert load_cae(p).config["head_channels"] == 16
    log = [json.loads(line) for line in (tmp_path / "run" / "train.log").read_text().splitlines()]
    assert [e["mel"] > 0 for e in log if "loss" in e] == [True, True]


def test_family_balanced_crops_draw_rare_families_as_often(tmp_path):
    import json

    import soundfile as sf

    from engine.training.cae_data import CropSampler, family_balanced_stems

    sr = 48000
    stems, songs = [], []
    for i, fam in enumerate(["strings"] * 6 + ["organ"] * 2):
        p = tmp_path / f"s{i}.wav"
        sf.write(p, (0.1 * np.sin(np.arange(sr) * (0.01 + i * 0.003))).astype(np.float32), sr)
        stems.append({"path": p.name, "family": fam})
    songs = [{"id": "a", "split": "train", "stems": stems[:4]},
             {"id": "b", "split": "train", "stems": stems[4:]},
             {"id": "c", "split": "test", "stems": stems[:1]}]
    (tmp_path / "manifest.json").write_text(json.dumps({"songs": songs}))
    groups, weights = family_balanced_stems(tmp_path, "train")
    assert len(groups) == 8 and all(len(g) == 1 for g in groups)
    organ = sum(w for g, w in zip(groups, weights) if g[0].name in ("s6.wav", "s7.wav"))
    assert organ == pytest.approx(sum(weights) / 2)
    s = CropSampler(groups, 4096, sr, seed=0, weights=weights, silence_prob=0.0)
    drawn, read = [], s._read

    def spy(p, start, dur):
        drawn.append(p.name)
        return read(p, start, dur)

    s._read = spy
    assert s.batch(400).shape == (400, 4096)
    assert 0.4 < sum(n in ("s6.wav", "s7.wav") for n in drawn) / len(drawn) < 0.6
    from engine.errors import RiffwrightError

    with pytest.raises(RiffwrightError, match="one non-negative number per group"):
        CropSampler(groups, 4096, sr, weights=[1.0])
    # a family weight draws it that much more often: organ 3 : strings 1
    groups, weights = family_balanced_stems(tmp_path, "train", {"organ": 3.0})
    organ = sum(w for g, w in zip(groups, weights) if g[0].name in ("s6.wav", "s7.wav"))
    assert organ == pytest.approx(0.75 * sum(weights))
    with pytest.raises(RiffwrightError, match="weighted famil.*bass.*data has organ, strings"):
        family_balanced_stems(tmp_path, "train", {"bass": 2.0})
    with pytest.raises(RiffwrightError, match="non-negative"):
        family_balanced_stems(tmp_path, "train", {"organ": -1})


def test_train_cae_freeze_encoder_adds_a_head_and_resumes(tmp_path):
    """`riffwright train cae --init --freeze-encoder`: the encoder stays as it was, the
    decoder is given a wider head and trains, the mel term is logged, and a second call
    continues the same run."""
    import soundfile as sf

    from engine.cli import main

    sr = 48000
    stems = []
    for i, fam in enumerate(["strings", "organ", "organ"]):
        p = tmp_path / f"s{i}.wav"
        sf.write(p, (0.1 * np.sin(np.arange(2 * sr) * (0.02 + i * 0.01))).astype(np.float32), sr)
        stems.append({"path": p.name, "family": fam})
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"songs": [{"id": "a", "split": "train", "stems": stems}]}))
    start = create_cae("tiny")
    save_module(start, tmp_path / "start.safetensors", start.kind, start.config, torch.float32)
    (tmp_path / "config.json").write_text(json.dumps(
        {"batch_size": 1, "crop_frames": 2, "checkpoint_every": 2, "threads": 1}))
    out = tmp_path / "run"

    def run(steps: int) -> None:
        assert main(["train", "cae", "--data", str(tmp_path), "--out", str(out),
                     "--config", str(tmp_path / "config.json"), "--steps", str(steps),
                     "--device", "cpu", "--from", str(tmp_path / "start.safetensors"),
                     "--freeze-encoder", "--head-channels", "16", "--mel-weight", "1",
                     "--spectral-weight", "1", "--low-weight", "1", "--balance-families",
                     "--family-weight", "organ=2"]) == 0

    run(2)
    tuned = load_cae(out / "cae.safetensors")
    assert tuned.config["head_channels"] == 16
    x = music(1.0)[None]
    assert torch.allclose(tuned.encode(x), start.encode(x), atol=1e-2)  # float16 on disk
    raw = load_cae(out / "cae_raw.safetensors")
    enc = start.encoder.state_dict()
    assert all(torch.equal(v, enc[k].half().float()) for k, v in raw.encoder.state_dict().items())
    head = [v for k, v in raw.state_dict().items() if k.startswith("decoder.head.")]
    assert head and any(bool(v.abs().max() > 0) for v in head)  # the new head (zero) trained
    run(10)
    assert json.loads((out / "train_state.json").read_text())["step"] == 10
    logged = [json.loads(line) for line in (out / "train.log").read_text().splitlines()]
    steps = [r for r in logged if "loss" in r]
    assert [r["step"] for r in steps] == [2, 10] and steps[-1]["mel"] > 0
    assert steps[-1]["low"] > 0
    state = json.loads((out / "train_state.json").read_text())
    assert state["train"]["family_weights"] == {"organ": 2.0}
    assert [r["frozen_encoder"] for r in logged if r.get("event") == "start"] == [True, True]


@pytest.mark.parametrize("bad", ["bass", "bass=x", "=2", "bass=-1"])
def test_family_weight_flag_needs_a_family_and_a_number(bad, capsys, tmp_path):
    from engine.cli import main

    assert main(["train", "cae", "--data", str(tmp_path), "--out", str(tmp_path / "run"),
                 "--family-weight", bad]) == 2
    assert "expected FAMILY=WEIGHT" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
