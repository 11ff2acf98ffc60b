"""The text prior: nearest training-stem audio embeddings stand in for a prompt's text
embedding; built from a run's crop embeddings, shipped in a bundle, used by the generator."""

import json
import shutil

import numpy as np
import pytest
import torch

from engine.bundles.bundle import load_bundle
from engine.errors import BundleError, RequestError
from engine.generation.driver import Generator, run_to_end
from engine.generation.request import GenerationRequest
from engine.models.conditioning.prior import load_prior, make_prior
from engine.training.ldm import build_text_prior


def clusters(n=6, d=16, seed=0):
    """Two tight clusters of unit vectors around orthogonal centres a and b."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.zeros(d), torch.zeros(d)
    a[0], b[1] = 1.0, 1.0
    pts = torch.cat([a + 0.05 * torch.randn(n, d, generator=g),
                     b + 0.05 * torch.randn(n, d, generator=g)])
    return torch.nn.functional.normalize(pts, dim=1), a, b


def test_prior_answers_with_the_nearest_stems_keeping_the_norm():
    bank, a, b = clusters()
    prior = make_prior(bank, "cond-x", k=4)
    text = 0.6 * a + 0.4 * b + 0.05 * torch.randn(16, generator=torch.Generator().manual_seed(1))
    text = 2.0 * text / text.norm()
    out = prior(text)
    assert out.shape == text.shape
    assert torch.allclose(out.norm(), torch.tensor(2.0), atol=1e-5)
    assert torch.nn.functional.cosine_similarity(out, a, dim=0) > 0.95
    # the answer is nearer the cluster's own embeddings than the text was
    assert (bank[:6] @ out / 2).mean() > (bank[:6] @ text / 2).mean()
    # batched, deterministic, and k larger than the bank clamps
    batch = torch.stack([text, 2.0 * b])
    assert torch.equal(prior(batch)[0], out)
    assert torch.nn.functional.cosine_similarity(prior(batch)[1], b, dim=0) > 0.95
    assert torch.allclose(make_prior(bank, "c", k=100)(text), make_prior(bank, "c", k=12)(text))


def test_prior_rejects_bad_input():
    with pytest.raises(BundleError, match="non-empty"):
        make_prior(torch.zeros(0, 4), "c")
    with pytest.raises(BundleError, match="non-zero"):  # nothing left once zero rows go
        make_prior(torch.zeros(3, 4), "c")
    with pytest.raises(BundleError, match="finite"):
        make_prior(torch.full((3, 4), float("nan")), "c")
    with pytest.raises(BundleError, match="at least 1"):
        make_prior(torch.ones(3, 4), "c", k=0)
    with pytest.raises(BundleError, match="16-d"):
        make_prior(clusters()[0], "c")(torch.ones(8))


def test_prior_file_round_trip_and_wrong_files(tmp_path, tiny_bundle):
    bank, a, _ = clusters()
    prior = make_prior(bank, "cond-x", k=3)
    prior.save(tmp_path / "prior.safetensors")
    back = load_prior(tmp_path / "prior.safetensors")
    assert (back.k, back.conditioner_id, len(back)) == (3, "cond-x", 12)
    assert torch.allclose(back.bank, bank, atol=1e-3)  # stored as float16
    assert torch.nn.functional.cosine_similarity(back(a), prior(a), dim=0) > 0.999
    with pytest.raises(BundleError, match="expected riffwright-text-prior"):
        load_prior(tiny_bundle / "ldm.safetensors")
    with pytest.raises(BundleError, match="not found"):
        load_prior(tmp_path / "missing.safetensors")
    # a file that would give NaN conditioning is refused when it loads
    from engine.weights import save_module

    save_module(torch.nn.Module(), tmp_path / "k0.safetensors", "riffwright-text-prior",
                {"k": 0, "conditioner_id": "c"}, extra_tensors={"bank": bank.half()})
    with pytest.raises(BundleError, match="k0.safetensors: the text prior's k must be at least"):
        load_prior(tmp_path / "k0.safetensors")


def fake_run(root, stems_active, dim=4):
    """A run folder's latents/index.json, activities and crop embeddings for one train song
    and one test song; stem j of the train song plays where stems_active[j] says."""
    lat, clap = root / "latents", root / "clap"
    (lat / "songs").mkdir(parents=True)
    clap.mkdir()
    hop, sr, frames = 4096, 48000, 200
    songs = []
    for sid, split in (("s0", "train"), ("s1", "test")):
        stems = []
        for j, active in enumerate(stems_active):
            act = np.zeros(frames, np.uint8)
            act[active] = 1
            np.save(lat / "songs" / f"{sid}-{j}.act.npy", act)
            stems.append({"activity": f"songs/{sid}-{j}.act.npy", "family": "x"})
        songs.append({"id": sid, "split": split, "frames": frames, "stems": stems})
        starts = np.arange(0, frames * hop - 5 * sr + 1, int(2.5 * sr))
        emb = np.zeros((len(stems_active), len(starts), dim), np.float32)
        emb[..., 0] = 1.0  # crops where nothing plays: the embedding of silence
        for j, active in enumerate(stems_active):
            for c, s in enumerate(starts):
                if act_frac(active, s, hop, sr, frames) > 0:
                    emb[j, c] = np.eye(dim)[1 + j]
        np.savez(clap / f"{sid}.npz", emb=emb.astype(np.float16), starts=starts)
    (lat / "index.json").write_text(json.dumps({"sample_rate": sr, "hop": hop,
                                                "songs": songs}))
    return lat, clap


def act_frac(active, s, hop, sr, frames):
    a = np.zeros(frames)
    a[active] = 1
    return a[s // hop : (s + 5 * sr) // hop].mean()


def test_build_weights_crops_by_activity_and_skips_silent_stems(tmp_path):
    # stem 0 plays in the first third only, stem 1 throughout, stem 2 never
    lat, clap = fake_run(tmp_path, [slice(0, 20), slice(0, 200), slice(0, 0)])
    prior = build_text_prior(lat, clap, "cond-x", k=1)
    assert len(prior) == 2  # the silent stem is left out, the test song never read
    # the embedding of silence does not leak into the stem that plays a third of the time
    assert prior.bank[0, 0] < 0.05 and prior.bank[0, 1] > 0.99
    assert prior.bank[1, 2] > 0.99
    with pytest.raises(Exception, match="no valid stems with crop embeddings"):
        build_text_prior(lat, clap, "cond-x", split="valid")


@pytest.fixture(scope="module")
def prior_bundle(tmp_path_factory, tiny_bundle):
    """The tiny bundle with a text prior over random embeddings for its conditioner."""
    path = tmp_path_factory.mktemp("prior") / "b"
    shutil.copytree(tiny_bundle, path)
    b = load_bundle(path)
    bank = torch.randn(10, b.conditioner.dim, generator=torch.Generator().manual_seed(0))
    make_prior(bank, b.conditioner.id, k=2).save(path / "prior.safetensors")
    m = json.loads((path / "bundle.json").read_text())
    m["prior"] = {"file": "prior.safetensors"}
    (path / "bundle.json").write_text(json.dumps(m))
    return path


def test_bundle_checks_the_prior_belongs_to_its_conditioner(prior_bundle, tmp_path):
    assert len(load_bundle(prior_bundle).prior) == 10
    other = tmp_path / "other"
    shutil.copytree(prior_bundle, other)
    make_prior(torch.randn(4, 8), "builtin-000000000000", k=2).save(other / "prior.safetensors")
    with pytest.raises(BundleError, match="text prior was built with conditioner"):
        load_bundle(other)
    (other / "prior.safetensors").unlink()
    with pytest.raises(BundleError, match="not found"):
        load_bundle(other)


def test_generator_feeds_the_prior_and_records_it(prior_bundle, tiny_bundle, monkeypatch):
    gen = Generator(load_bundle(prior_bundle))
    seen = []
    original = gen._sample_latents

    def spy(job, *args, **kw):
        seen.append(job.clap)
        return (yield from original(job, *args, **kw))

    monkeypatch.setattr(gen, "_sample_latents", spy)

    def take(**kw):
        stems = run_to_end(gen.run(GenerationRequest(duration=1.0, steps=2, prompt="warm pad",
                                                     **kw)))
        return stems[0]

    on, off = take(), take(text_prior=False)
    assert on.provenance["parameters"]["text_prior"] is True
    assert off.provenance["parameters"]["text_prior"] is False
    text = gen.bundle.conditioner.embed_text(["warm pad"]).float()
    assert torch.allclose(seen[1], text, atol=1e-6)
    assert torch.allclose(seen[0], gen.bundle.prior(text), atol=1e-6)
    # a text + reference mix uses it for its text half, not when r = 0 leaves only the audio
    ref = np.random.default_rng(0).standard_normal(48000).astype(np.float32) * 0.1
    assert take(reference=ref, mix=0.5).provenance["parameters"]["text_prior"] is True
    assert take(reference=ref, mix=0.0).provenance["parameters"]["text_prior"] is False
    # without a prompt there is nothing to map
    assert run_to_end(gen.run(GenerationRequest(duration=1.0, steps=2)))[0].provenance[
        "parameters"]["text_prior"] is False
    # asking for a prior the model does not have is an error, not a silent no-op
    with pytest.raises(RequestError, match="has no text prior"):
        Generator(load_bundle(tiny_bundle)).resolve(
            GenerationRequest(prompt="bass", text_prior=True))


def test_assemble_tool_adds_a_prior_from_a_run(tmp_path, tiny_bundle):
    import subprocess
    import sys
    from pathlib import Path

    run = tmp_path / "run"
    fake_run(run, [slice(0, 200), slice(0, 100)], dim=256)
    tool = Path(__file__).resolve().parents[1] / "tools" / "assemble_bundle.py"

    def assemble(out):
        return subprocess.run([sys.executable, str(tool), str(tiny_bundle), str(out), "--prior",
                               str(run), "--prior-k", "1"], capture_output=True, text=True)

    # crop embeddings made by another conditioner are refused
    (run / "clap" / "conditioner.id").write_text("builtin-000000000000")
    bad = assemble(tmp_path / "bad")
    assert bad.returncode != 0 and "not made with the bundle's conditioner" in bad.stderr
    assert not (tmp_path / "bad").exists() and not (tmp_path / ".bad.staging").exists()
    (run / "clap" / "conditioner.id").write_text(load_bundle(tiny_bundle).conditioner.id)
    ok = assemble(tmp_path / "ok")
    assert ok.returncode == 0, ok.stderr
    b = load_bundle(tmp_path / "ok")
    assert len(b.prior) == 2 and b.prior.k == 1
    assert json.loads((tmp_path / "ok" / "bundle.json").read_text())["prior"] == {
        "file": "prior.safetensors"}


def test_the_shipped_default_bundle_maps_prompts_through_its_prior():
    from engine.bundles.bundle import default_bundle_dir, is_bundle, read_manifest

    path = default_bundle_dir()
    if not is_bundle(path) or "prior" not in read_manifest(path):
        pytest.skip("the default bundle has no text prior")
    b = load_bundle(path)
    assert b.prior.conditioner_id == b.conditioner.id and len(b.prior) > 100
    t = b.conditioner.embed_text(["drawbar organ, organ, mid register"]).float()
    p = b.prior(t)
    # the answer is a blend of stems, nearer to them than the text was
    assert torch.allclose(p.norm(), t.norm(), atol=1e-4)
    nearest = (torch.nn.functional.normalize(p, dim=-1) @ b.prior.bank.T).max()
    assert nearest > (torch.nn.functional.normalize(t, dim=-1) @ b.prior.bank.T).max()
