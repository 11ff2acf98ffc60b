"""Model bundles: search order, validation, and loading that names what is wrong."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from engine.bundles.bundle import find_bundle, init_bundle, load_bundle, read_manifest
from engine.errors import BundleError
from engine.weights import read_checkpoint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return init_bundle("tiny", tmp_path_factory.mktemp("b") / "tiny")


def copy(tiny, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(tiny, dst)
    return dst


def test_search_order(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("RIFFWRIGHT_MODEL", str(tiny))
    assert find_bundle() == tiny
    other = copy(tiny, tmp_path)
    assert find_bundle(other) == other  # an explicit path wins
    monkeypatch.setenv("RIFFWRIGHT_MODEL", str(tmp_path / "nothing"))
    with pytest.raises(BundleError, match="RIFFWRIGHT_MODEL"):
        find_bundle()


def test_init_refuses_a_non_empty_folder(tiny):
    with pytest.raises(BundleError, match="not empty"):
        init_bundle("tiny", tiny)


def test_a_wrong_shape_is_named(tiny, tmp_path):
    from safetensors.torch import save_file

    b = copy(tiny, tmp_path)
    tensors, kind, config = read_checkpoint(b / "ldm.safetensors")
    tensors["out.weight"] = torch.zeros(3, 3, 3)
    save_file(tensors, str(b / "ldm.safetensors"),
              metadata={"riffwright.kind": kind, "riffwright.config": json.dumps(config)})
    with pytest.raises(BundleError, match=r"out\.weight has shape \(3, 3, 3\)"):
        load_bundle(b)


def test_a_model_with_no_known_feature_layout_is_refused(tiny, tmp_path):
    from engine.bundles.bundle import save_ldm
    from engine.models.unet import UNet1d, UNetConfig

    b = copy(tiny, tmp_path)
    _, _, config = read_checkpoint(b / "ldm.safetensors")
    save_ldm(UNet1d(UNetConfig.from_dict({**config, "feature_dim": 17})), b / "ldm.safetensors")
    with pytest.raises(BundleError, match="no context-feature layout has 17 channels"):
        load_bundle(b)


def test_missing_tensors_and_wrong_kind_are_named(tiny, tmp_path):
    from safetensors.torch import save_file

    b = copy(tiny, tmp_path)
    tensors, kind, config = read_checkpoint(b / "ldm.safetensors")
    del tensors["out.bias"]
    save_file(tensors, str(b / "ldm.safetensors"),
              metadata={"riffwright.kind": kind, "riffwright.config": json.dumps(config)})
    with pytest.raises(BundleError, match="missing, e.g. out.bias"):
        load_bundle(b)
    shutil.copy(b / "cae.safetensors", b / "ldm.safetensors")
    with pytest.raises(BundleError, match="expected riffwright-ldm"):
        load_bundle(b)


def test_pickles_are_refused_and_truncation_is_named(tiny, tmp_path):
    b = copy(tiny, tmp_path)
    m = json.loads((b / "bundle.json").read_text())
    torch.save({"x": torch.zeros(1)}, b / "ldm.pt")
    m["ldm"]["file"] = "ldm.pt"
    (b / "bundle.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="pickle"):
        load_bundle(b)
    m["ldm"]["file"] = "ldm.safetensors"
    (b / "bundle.json").write_text(json.dumps(m))
    data = (b / "ldm.safetensors").read_bytes()
    (b / "ldm.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="not a readable safetensors file"):
        load_bundle(b)


def test_manifest_fields_are_checked(tiny, tmp_path):
    b = copy(tiny, tmp_path)
    m = json.loads((b / "bundle.json").read_text())
    m["latent"]["std"] = m["latent"]["std"][:10]
    (b / "bundle.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="10 values for 64 channels"):
        read_manifest(b)
    m = json.loads((tiny / "bundle.json").read_text())
    m["format"] = 99
    (b / "bundle.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="newer than this Riffwright"):
        read_manifest(b)


def test_a_prior_section_that_is_not_an_object_is_named(tiny, tmp_path):
    b = copy(tiny, tmp_path)
    m = json.loads((b / "bundle.json").read_text())
    m["prior"] = None
    (b / "bundle.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="prior"):
        read_manifest(b)


def _with_probe(b, latent_dim=64, feature_dim=12, file="harmony_probe.safetensors",
                **defaults):
    from engine.models.probe import FeatureProbe, save_probe

    save_probe(FeatureProbe(latent_dim, feature_dim, width=8), b / "harmony_probe.safetensors")
    m = json.loads((b / "bundle.json").read_text())
    m["harmony_probe"] = {"file": file}
    m["defaults"].update(defaults)
    (b / "bundle.json").write_text(json.dumps(m))
    return b


def _with_features(b):
    """`b` with an untrained diffusion model that takes the context features (and grid)."""
    from engine.bundles.bundle import save_ldm
    from engine.diffusion.context_features import FEATURE_DIM, GRID_DIM
    from engine.models.unet import UNet1d, UNetConfig

    _, _, config = read_checkpoint(b / "ldm.safetensors")
    save_ldm(UNet1d(UNetConfig.from_dict({**config, "feature_dim": FEATURE_DIM + GRID_DIM})),
             b / "ldm.safetensors")
    return b


def test_guidance_probes_need_a_model_that_takes_the_context_features(tiny, tmp_path):
    with pytest.raises(BundleError, match="takes the context's features"):
        load_bundle(_with_probe(copy(tiny, tmp_path)))


def test_a_harmony_probe_loads_and_a_wrong_one_is_named(tiny, tmp_path):
    from engine.generation.driver import Generator
    from engine.generation.request import GenerationRequest

    b = load_bundle(_with_probe(_with_features(copy(tiny, tmp_path)), harmony=1.5))
    assert b.harmony_probe is not None and b.defaults["harmony"] == 1.5
    assert not any(p.requires_grad for p in b.harmony_probe.parameters())
    # without a context there is no harmony to follow: the default does not apply
    ctx = torch.zeros(1, 48000).numpy()
    gen = Generator(b)
    assert gen.resolve(GenerationRequest(duration=1.0)).harmony == 0.0
    assert gen.resolve(GenerationRequest(context=ctx)).harmony == 1.5
    for kw, why in (({"latent_dim": 32}, "reads 32-channel latents"),
                    ({"feature_dim": 4}, "fewer than the 12 rows"),
                    ({"file": "../harmony_probe.safetensors"}, "inside")):
        with pytest.raises(BundleError, match=why):
            load_bundle(_with_probe(_with_features(copy(tiny, tmp_path / str(len(why)))), **kw))


def test_rhythm_guidance_needs_both_probes(tiny, tmp_path):
    from engine.errors import RequestError
    from engine.generation.driver import Generator
    from engine.generation.request import GenerationRequest
    from engine.models.probe import FeatureProbe, save_probe

    ctx = torch.zeros(1, 48000).numpy()
    b = _with_probe(_with_features(copy(tiny, tmp_path)))  # a harmony probe, no rhythm probe
    gen = Generator(load_bundle(b))
    with pytest.raises(RequestError, match="lacks the probes rhythm guidance needs"):
        gen.resolve(GenerationRequest(context=ctx, rhythm=1.0))
    m = json.loads((b / "bundle.json").read_text())
    m["defaults"]["rhythm"] = 2.0
    (b / "bundle.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="needs a harmony and a rhythm probe"):
        load_bundle(b)
    save_probe(FeatureProbe(64, 12, width=8), b / "rhythm_probe.safetensors")
    m["rhythm_probe"] = {"file": "rhythm_probe.safetensors"}
    (b / "bundle.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="fewer than the 16 rows"):
        load_bundle(b)  # a rhythm probe must give the onset rows
    save_probe(FeatureProbe(64, 16, width=8), b / "rhythm_probe.safetensors")
    gen = Generator(load_bundle(b))
    assert gen.resolve(GenerationRequest(context=ctx)).rhythm == 2.0
    assert gen.resolve(GenerationRequest(duration=1.0)).rhythm == 0.0


def test_harmony_guidance_without_a_probe_is_a_clear_error(tiny, tmp_path):
    from engine.errors import RequestError
    from engine.generation.driver import Generator
    from engine.generation.request import GenerationRequest

    b = copy(tiny, tmp_path)
    m = json.loads((b / "bundle.json").read_text())
    m["defaults"]["harmony"] = 1.0
    (b / "bundle.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="needs a harmony probe"):
        load_bundle(b)
    gen = Generator(load_bundle(tiny))
    with pytest.raises(RequestError, match="no harmony probe"):
        gen.resolve(GenerationRequest(context=torch.zeros(1, 48000).numpy(), harmony=1.0))
    assert gen.resolve(GenerationRequest(context=torch.zeros(1, 48000).numpy())).harmony == 0


def test_a_conditioner_that_does_not_match_is_refused(tiny, tmp_path):
    b = copy(tiny, tmp_path)
    m = json.loads((b / "bundle.json").read_text())
    m["conditioner"]["id"] = "builtin-0000000000000000"
    (b / "bundle.json").write_text(json.dumps(m))
    with pytest.raises(BundleError):
        load_bundle(b)


def test_assemble_sets_defaults_and_refuses_another_encoder(tiny, tmp_path):
    import subprocess
    import sys


    tool = Path(__file__).resolve().parents[1] / "tools" / "assemble_bundle.py"
    out = tmp_path / "assembled"
    run = subprocess.run([sys.executable, str(tool), str(tiny), str(out), "--name", "mine",
                          "--description", "a test", "--default", "cfg_context=8",
                          "--default", "steps=12"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    m = json.loads((out / "bundle.json").read_text())
    assert (m["name"], m["description"]) == ("mine", "a test")
    assert m["defaults"]["cfg_context"] == 8.0 and m["defaults"]["steps"] == 12
    other = init_bundle("tiny", tmp_path / "other", seed=1)
    bad = subprocess.run([sys.executable, str(tool), str(tiny), str(tmp_path / "x"), "--cae",
                          str(other / "cae.safetensors")], capture_output=True, text=True)
    assert bad.returncode != 0 and "different encoder" in bad.stderr
    assert not (tmp_path / "x").exists()


def test_the_shipped_bundle_is_found_in_the_checkout():
    """resources/ is found from the engine's own location (it moved once, into
    engine/bundles/, and the default model silently went missing)."""
    from engine.bundles.bundle import default_bundle_dir, is_bundle, resources_dir

    assert resources_dir() == Path(__file__).resolve().parents[1] / "resources"
    assert is_bundle(default_bundle_dir())
