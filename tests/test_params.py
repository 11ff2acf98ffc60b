"""One parameter table (engine.params) feeds the CLI's help, `Generator.resolve`, the bundle's
defaults and the panel's ranges; an iterative arrangement is written once (engine.arrange)."""

import dataclasses
import json

import numpy as np
import pytest

from engine.errors import BundleError, RequestError
from engine.params import BUNDLE_DEFAULTS, PARAMS, check_bundle_defaults, pick


def test_pick_prefers_the_value_then_the_bundle_then_the_table():
    assert pick("steps", 12, {"steps": 40}) == 12
    assert pick("steps", None, {"steps": 40}) == 40
    assert pick("steps", None, {}) == PARAMS["steps"].default
    assert pick("strength", None, {"variation_strength": 0.25}) == 0.25
    assert pick("mix", None, {"mix": 0.9}) == PARAMS["mix"].default  # no bundle default
    with pytest.raises(RequestError, match="steps must be between 1 and 200"):
        pick("steps", 201)
    with pytest.raises(RequestError, match="whole number"):
        pick("steps", 2.5)
    with pytest.raises(RequestError, match="unknown sampler 'rk4'"):
        pick("sampler", "rk4")


def test_bundle_defaults_are_checked_against_the_table():
    assert check_bundle_defaults({k: p.default for k, p in BUNDLE_DEFAULTS.items()}) is None
    assert "unknown default 'stepz'" in check_bundle_defaults({"stepz": 3})
    assert "wrong type" in check_bundle_defaults({"steps": "30"})
    assert "between 0 and 12" in check_bundle_defaults({"cfg_clap": 40.0})


def test_a_bundle_with_an_out_of_range_default_is_refused(tiny_bundle, tmp_path):
    import shutil

    from engine.bundles.bundle import MANIFEST, load_bundle

    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    m = json.loads((copy / MANIFEST).read_text())
    m["defaults"]["steps"] = 900
    (copy / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BundleError, match="steps must be between 1 and 200"):
        load_bundle(copy, device="cpu")


def test_cli_help_shows_the_table_ranges_and_defaults(capsys):
    from engine.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in ("steps", "cfg_context", "cfg_clap", "stereo_width", "strength", "takes",
                 "gap", "mix"):
        p = PARAMS[name]
        assert f"{p.range_text}; default:" in text, name
        assert " ".join(p.help.split()) in text, name


def test_panel_ranges_come_from_the_table(qtbot):
    from app.panel import GuidancePanel

    panel = GuidancePanel()
    qtbot.addWidget(panel)
    for name in ("steps", "takes", "seed", "duration", "loop_n"):
        spin = getattr(panel, name)
        assert (spin.minimum(), spin.maximum()) == (PARAMS[name].low, PARAMS[name].high), name
    for name in ("cfg_context", "cfg_clap", "mix", "stereo_width", "strength", "loop_frac"):
        s = getattr(panel, name)
        s.set_value(PARAMS[name].high + 5)
        assert s.value() == pytest.approx(PARAMS[name].high), name
        s.set_value(PARAMS[name].low - 5)
        assert s.value() == pytest.approx(PARAMS[name].low), name


@pytest.fixture(scope="module")
def gen(tiny_bundle):
    from engine.bundles.bundle import load_bundle
    from engine.generation.driver import Generator

    return Generator(load_bundle(tiny_bundle, device="cpu"))


def test_requests_are_frozen_and_resolve_to_a_frozen_record(gen):
    from engine.generation.request import GenerationRequest, ResolvedRequest

    req = GenerationRequest(prompt="bass", steps=3, seed=4, takes=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.steps = 5
    r = gen.resolve(req)
    assert isinstance(r, ResolvedRequest) and r.seeds == [4, 5]
    assert r.cfg_context == gen.bundle.defaults["cfg_context"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.steps = 5
    with pytest.raises(RequestError, match="CFG context must be between 0 and 12"):
        gen.resolve(GenerationRequest(cfg_context=12.5))


def test_take_generator_is_the_one_seed_formula():
    import torch

    from engine.generation.driver import take_generator

    a = torch.randn(4, generator=take_generator(7, 1))
    assert torch.equal(a, torch.randn(4, generator=take_generator(7, 1)))
    assert not torch.equal(a, torch.randn(4, generator=take_generator(7, 0)))
    assert not torch.equal(a, torch.randn(4, generator=take_generator(8, 1)))


def test_arrangement_hears_the_parts_before_it(gen):
    from engine.arrange import Part, arrange, arrangement_mix, part_request
    from engine.document.inputs import mix_down
    from engine.generation.driver import run_to_end
    from engine.generation.request import GenerationRequest

    sr = 48000
    t = np.arange(sr * 2) / sr
    ctx = (0.3 * np.sin(2 * np.pi * 110 * t)).astype(np.float32)[None]
    base = GenerationRequest(context=ctx, steps=2, seed=20, takes=3)
    parts = [Part("prompt", "drums"), Part("reference", "/x/keys.wav", ctx[:, : sr])]
    events = []
    run = arrange(gen, base, parts)
    while True:
        try:
            events.append(next(run))
        except StopIteration as stop:
            stems = stop.value
            break
    assert [s.seed for s in stems] == [20, 21]
    assert any(e.message.startswith("part 2/2:") for e in events)
    assert stems[1].provenance["arrangement"] == {"part": 2, "of": 2, "kind": "reference",
                                                  "value": "/x/keys.wav"}
    assert stems[1].provenance["inputs"]["reference"]["label"] == "keys.wav"
    # part 2 is exactly the take generated over the context plus part 1
    heard = mix_down([ctx, stems[0].audio.mean(axis=0, keepdims=True)])
    again = run_to_end(gen.run(part_request(base, parts[1], 1, heard)))[0]
    assert np.array_equal(again.audio, stems[1].audio)
    mix = arrangement_mix(stems, ctx, sr)
    assert mix.shape[-1] == ctx.shape[-1] and np.abs(mix).max() <= 1.0


def test_an_arrangement_refuses_a_bad_part_before_any_work(gen):
    from engine.arrange import Part, arrange
    from engine.generation.request import GenerationRequest

    parts = [Part("prompt", "ok"), Part("prompt", "  ")]
    with pytest.raises(RequestError, match="prompt is empty"):
        next(arrange(gen, GenerationRequest(steps=2), parts))  # before the first event
    with pytest.raises(RequestError, match="prompt or a reference"):
        Part("melody", "x")
