"""`riffwright train ldm`: trains, checkpoints, resumes, exports a bundle that generates;
DDP across two CPU processes on gloo keeps the replicas identical."""

import json
import os
import socket
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch

from engine.bundles.bundle import init_bundle, load_bundle
from engine.generation.driver import Generator, run_to_end
from engine.generation.request import GenerationRequest
from engine.training.ldm import LDMTrainConfig, train_ldm
from engine.weights import read_checkpoint

SR = 48000


def make_dataset(root, songs=3, seconds=8.0):
    """A few songs of three synthetic stems each, in the dataset manifest format."""
    rng = np.random.default_rng(0)
    entries = []
    t = np.arange(int(seconds * SR)) / SR
    for i in range(songs):
        sdir = root / "songs" / f"song{i}"
        sdir.mkdir(parents=True)
        stems = []
        for j, (fam, f) in enumerate([("bass", 55.0), ("piano", 262.0), ("drums", 0.0)]):
            if fam == "drums":
                x = rng.standard_normal(t.shape) * np.exp(-((t * 4) % 1.0) * 20) * 0.3
            else:
                x = 0.3 * np.sin(2 * np.pi * f * (1 + 0.1 * i) * t)
            path = sdir / f"{j:02d}-{fam}.wav"
            sf.write(path, x.astype(np.float32), SR, subtype="PCM_16")
            stems.append({"path": str(path.relative_to(root)), "instrument": fam,
                          "family": fam, "caption": f"{fam}, test"})
        entries.append({"id": f"song{i}", "split": "train" if i < songs - 1 else "test",
                        "tempo": 120.0, "key": "C major", "meter": "4/4", "style": "test",
                        "seconds": seconds, "stems": stems})
    (root / "manifest.json").write_text(json.dumps({"version": 1, "sample_rate": SR,
                                                    "songs": entries}))
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ldm")
    data = make_dataset(root / "data")
    bundle = init_bundle("tiny", root / "bundle")
    return root, data, bundle


def cfg(**kw):
    base = dict(arch="tiny", steps=6, batch_size=2, frames=32, checkpoint_every=3,
                sample_every=0, log_every=1, warmup=2, harmony_probe_steps=5)
    base.update(kw)
    return LDMTrainConfig(**base)


def test_train_resume_and_export(setup):
    root, data, bundle = setup
    out = root / "run"
    # an interrupted run: 3 steps, then a fresh call resumes from the checkpoint
    train_ldm(data, out, bundle, cfg(), device="cpu", stop_after=3)
    state = json.loads((out / "train_state.json").read_text())
    assert state["step"] == 3
    exported = train_ldm(data, out, bundle, cfg(), device="cpu")
    assert json.loads((out / "train_state.json").read_text())["step"] == 6
    log = [json.loads(line) for line in (out / "train.log").read_text().splitlines()]
    starts = [r for r in log if r.get("event") == "start"]
    assert [s["step"] for s in starts] == [0, 3]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(r["loss"]) for r in log if "loss" in r)
    # the exported bundle is complete, trained, normalised by the measured statistics
    manifest = json.loads((exported / "bundle.json").read_text())
    assert manifest["trained"] and manifest["training"]["steps"] == 6
    assert manifest["window_frames"] == 32
    b = load_bundle(exported)
    # with the text prior over the two training songs' stems (the test song is not in it)
    assert manifest["prior"] == {"file": "prior.safetensors"}
    assert len(b.prior) == 6 and b.prior.conditioner_id == b.conditioner.id
    stems = run_to_end(Generator(b).run(GenerationRequest(duration=1.0, steps=2,
                                                          prompt="bass")))
    assert stems[0].audio.shape == (1, SR)


def test_resume_refuses_another_architecture(setup):
    root, data, bundle = setup
    with pytest.raises(Exception, match="holds a tiny run"):
        train_ldm(data, root / "run", bundle, cfg(arch="small"), device="cpu")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, data, out, bundle):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    train_ldm(data, out, bundle, cfg(steps=2, checkpoint_every=2), device="cpu")
    # after DDP steps every replica holds the same weights
    from engine.train_state import load_state  # noqa: F401  (rank 0 wrote the checkpoint)

    torch.distributed.destroy_process_group()


def test_ddp_on_two_cpu_processes(setup):
    root, data, bundle = setup
    out = root / "ddp"
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), data, out, bundle),
                                nprocs=2, join=True)
    state = json.loads((out / "train_state.json").read_text())
    assert state["step"] == 2
    log = [json.loads(line) for line in (out / "train.log").read_text().splitlines()]
    assert log[0]["world"] == 2


def test_sigterm_checkpoints_the_current_step(setup, monkeypatch):
    """`kill PID` during training saves the step it reached (not only the last periodic
    checkpoint) and puts the previous SIGTERM handler back."""
    import os
    import signal

    from engine.training.dataset.pairs import LatentPairs

    root, data, bundle = setup
    calls = {"n": 0}
    sample = LatentPairs.sample

    def sample_then_kill(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 9:  # batch size 2: the first draw of step 5, after 4 steps
            os.kill(os.getpid(), signal.SIGTERM)
        return sample(self, *a, **k)

    monkeypatch.setattr(LatentPairs, "sample", sample_then_kill)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        train_ldm(data, root / "killed", bundle, cfg(steps=20), device="cpu")
    assert json.loads((root / "killed" / "train_state.json").read_text())["step"] == 4
    assert signal.getsignal(signal.SIGTERM) == before


class _CountingChroma(torch.nn.Module):
    calls = 0

    def forward(self, z):
        self.calls += 1
        return torch.sigmoid(z)


def test_context_features_extend_a_trained_model(setup, capsys):
    from engine.diffusion.context_features import BASS_DIM, FEATURE_DIM

    root, data, bundle = setup
    base = train_ldm(data, root / "plain", bundle, cfg(steps=2), device="cpu")
    out = train_ldm(data, root / "feat", bundle,
                    cfg(steps=3, context_features=True, init_from=str(base), feature_loss=1.0,
                        probe_steps=5, p_text_clap=0.5), device="cpu")
    printed = capsys.readouterr().out
    assert "starting from" in printed and "feature probe: 5 steps" in printed
    assert (root / "feat" / "probe.safetensors").exists()
    assert load_bundle(out).feature_dim == FEATURE_DIM
    log = [json.loads(line) for line in (root / "feat" / "train.log").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in log if "loss" in r)
    # features for every stem and every pre-encoded context mix of every song
    index = json.loads((root / "feat" / "latents" / "index.json").read_text())
    for song in index["songs"]:
        with np.load(root / "feat" / "features" / f"{song['id']}.npz") as z:
            names = {os.path.splitext(os.path.basename(e["latent"]))[0]
                     for e in song["stems"] + song["mixes"]}
            assert set(z.files) == names
            assert all(z[n].shape == (FEATURE_DIM, song["frames"]) for n in names)
    b = load_bundle(out)
    assert b.feature_dim == FEATURE_DIM
    ctx = sf.read(data / "songs" / "song2" / "00-bass.wav", dtype="float32")[0][None, :SR * 2]
    req = GenerationRequest(context=ctx, duration=2.0, steps=2, prompt="piano", seed=3)
    a = run_to_end(Generator(b).run(req))[0].audio
    assert a.shape == (1, 2 * SR) and np.isfinite(a).all()
    assert np.array_equal(a, run_to_end(Generator(b).run(req))[0].audio)
    # the run's harmony probe (the low register's pitch classes, and a drum row) travels in
    # the bundle, in float16, so harmony guidance works with it; a model without context
    # features has none
    assert "harmony probe: 5 steps" in printed
    tensors, _, probe_meta = read_checkpoint(out / "harmony_probe.safetensors")
    assert b.harmony_probe is not None and probe_meta["feature_dim"] == BASS_DIM + 1
    assert tensors["net.0.weight"].dtype == torch.float16
    assert load_bundle(base).harmony_probe is None
    # the feature probe goes with it, for rhythm guidance
    assert read_checkpoint(out / "rhythm_probe.safetensors")[2]["feature_dim"] == FEATURE_DIM
    assert b.rhythm_probe is not None and load_bundle(base).rhythm_probe is None
    # the guidance reads the probe at every network call, and only when asked to (a stand-in
    # probe counts; this untrained CAE decodes any latents to the same near-silence)
    b.harmony_probe = _CountingChroma()
    run_to_end(Generator(b).run(req))
    assert b.harmony_probe.calls == 0
    steered = run_to_end(Generator(b).run(replace(req, harmony=2.0)))[0]
    assert b.harmony_probe.calls == 3  # two Heun steps: three network calls
    assert np.isfinite(steered.audio).all()
    assert steered.provenance["parameters"]["harmony"] == 2.0
    b.rhythm_probe = _CountingChroma()
    run_to_end(Generator(b).run(replace(req, rhythm=1.0)))
    assert b.rhythm_probe.calls == 3 and b.harmony_probe.calls == 6  # which parts are drums
    with pytest.raises(Exception, match="with context features"):
        train_ldm(data, root / "feat", bundle, cfg(steps=4), device="cpu")
    # a model without features cannot continue a run that has them
    with pytest.raises(Exception, match="lacks"):
        train_ldm(data, root / "back", bundle, cfg(steps=1, init_from=str(out)), device="cpu")


def test_a_beat_grid_extends_a_feature_model_and_follows_the_request(setup):
    from engine.diffusion.context_features import FEATURE_DIM, GRID_DIM, BeatGrid, grid_features

    root, data, bundle = setup
    feat = train_ldm(data, root / "feat0", bundle, cfg(steps=2, context_features=True),
                     device="cpu")
    out = train_ldm(data, root / "grid", bundle,
                    cfg(steps=3, context_features=True, beat_grid=True, init_from=str(feat),
                        p_drop_grid=0.5), device="cpu")
    b = load_bundle(out)
    assert b.takes_beat_grid and b.feature_dim == FEATURE_DIM + GRID_DIM
    ctx = sf.read(data / "songs" / "song2" / "01-piano.wav", dtype="float32")[0][None, :SR * 2]
    req = GenerationRequest(context=ctx, duration=2.0, steps=2, prompt="drums", seed=1,
                            beat_grid=(120.0, 4.0, 0.0))
    stem = run_to_end(Generator(b).run(req))[0]
    assert stem.provenance["beat_grid"] == {"bpm": 120.0, "bar_beats": 4.0, "downbeat": 0.0,
                                            "used": True}
    again = run_to_end(Generator(b).run(req))[0]
    assert np.array_equal(stem.audio, again.audio)
    # the grid reaches the model after the context's chroma and onsets (zeros without one)
    lat = torch.zeros(1, b.cae.latent_dim, 24)
    grid = BeatGrid(120.0, 4.0, 0.25)
    c = b.context_condition(lat, ctx[0, :24 * b.hop], grid)[0].numpy()
    assert c.shape[0] == b.cae.latent_dim + FEATURE_DIM + GRID_DIM
    assert np.allclose(c[-GRID_DIM:], grid_features(grid, 24, b.hop, b.sample_rate))
    assert not b.context_condition(lat, ctx[0, :24 * b.hop])[0, -GRID_DIM:].any()
    # a model without a grid ignores one, and says so
    plain = run_to_end(Generator(load_bundle(feat)).run(req))[0]
    assert plain.provenance["beat_grid"]["used"] is False
    with pytest.raises(Exception, match="beat grid"):
        run_to_end(Generator(b).run(replace(req, beat_grid=(5.0, 4.0, 0.0))))
    with pytest.raises(Exception, match="with beat grid"):
        train_ldm(data, root / "grid", bundle, cfg(steps=4, context_features=True),
                  device="cpu")
    with pytest.raises(Exception, match="needs context_features"):
        train_ldm(data, root / "nogrid", bundle, cfg(steps=1, beat_grid=True), device="cpu")


def test_the_low_register_extends_a_grid_model_and_reaches_it(setup):
    from engine.diffusion.context_features import (
        BASS_DIM,
        FEATURE_DIM,
        GRID_DIM,
        bass_features,
    )

    root, data, bundle = setup
    grid = train_ldm(data, root / "grid0", bundle,
                     cfg(steps=2, context_features=True, beat_grid=True), device="cpu")
    out = train_ldm(data, root / "bass", bundle,
                    cfg(steps=3, context_features=True, beat_grid=True, bass_chroma=True,
                        init_from=str(grid)), device="cpu")
    b = load_bundle(out)
    assert b.takes_beat_grid and b.takes_bass_chroma
    assert b.feature_dim == FEATURE_DIM + GRID_DIM + BASS_DIM
    # a low-register chroma file for every stem and mix, beside the features
    index = json.loads((root / "bass" / "latents" / "index.json").read_text())
    for song in index["songs"]:
        with np.load(root / "bass" / "bass_features" / f"{song['id']}.npz") as z:
            assert all(z[n].shape == (BASS_DIM, song["frames"]) for n in z.files)
            assert len(z.files) == len(song["stems"]) + len(song["mixes"])
    # it reaches the model last, after the grid
    ctx = sf.read(data / "songs" / "song2" / "00-bass.wav", dtype="float32")[0][None, :SR * 2]
    lat = torch.zeros(1, b.cae.latent_dim, 24)
    c = b.context_condition(lat, ctx[0, :24 * b.hop])[0].numpy()
    assert c.shape[0] == b.cae.latent_dim + FEATURE_DIM + GRID_DIM + BASS_DIM
    assert np.allclose(c[-BASS_DIM:], bass_features(ctx[0, :24 * b.hop], b.sample_rate, b.hop, 24))
    assert c[-BASS_DIM:].any()
    req = GenerationRequest(context=ctx, duration=2.0, steps=2, prompt="bass", seed=2,
                            beat_grid=(100.0, 4.0, 0.0))
    one, two = (run_to_end(Generator(b).run(req))[0] for _ in range(2))
    assert np.array_equal(one.audio, two.audio) and np.isfinite(one.audio).all()
    with pytest.raises(Exception, match="without bass chroma"):
        train_ldm(data, root / "grid0", bundle,
                  cfg(steps=4, context_features=True, beat_grid=True, bass_chroma=True),
                  device="cpu")
    with pytest.raises(Exception, match="needs beat_grid"):
        train_ldm(data, root / "nobass", bundle,
                  cfg(steps=1, context_features=True, bass_chroma=True), device="cpu")

