"""engine.cli.request: the generation flags become a `GenerationRequest` field by field
(no model, no torch: the request is built from the parsed flags alone)."""

import numpy as np
import pytest
import soundfile as sf

from engine.cli import build_parser
from engine.cli.request import OUT_RATE, request_from_args
from engine.errors import RiffwrightError
from engine.params import PARAMS


def _request(*argv):
    return request_from_args(build_parser().parse_args([*argv, "--out", "unused"]))


@pytest.fixture
def wav(tmp_path):
    def make(name, seconds=1.0):
        path = tmp_path / name
        sf.write(path, np.zeros(int(seconds * OUT_RATE), np.float32), OUT_RATE)
        return str(path)

    return make


def test_every_parameter_flag_sets_the_field_of_its_name():
    req = _request("generate", "--mix", "0.3", "--cfg-context", "2", "--cfg-clap", "0.5",
                   "--steps", "7", "--seed", "5", "--takes", "2", "--duration", "3",
                   "--stereo-width", "0", "--sampler", "euler", "--strength", "0.4",
                   "--gap", "2.5", "--prompt", "walking bass", "--loop", "4:0.5",
                   "--no-text-prior", "--s-churn", "5")
    got = {name: getattr(req, name) for name in ("mix", "cfg_context", "cfg_clap", "steps",
                                                 "seed", "takes", "duration", "stereo_width",
                                                 "sampler", "strength", "gap", "s_churn")}
    assert got == {"mix": 0.3, "cfg_context": 2.0, "cfg_clap": 0.5, "steps": 7, "seed": 5,
                   "takes": 2, "duration": 3.0, "stereo_width": 0.0, "sampler": "euler",
                   "strength": 0.4, "gap": 2.5, "s_churn": 5.0}
    assert (req.prompt, req.loop, req.text_prior) == ("walking bass", (4, 0.5), False)
    assert req.sample_rate == OUT_RATE and req.mode == "single"


def test_flags_left_out_leave_the_bundle_to_decide():
    req = _request("generate", "--seed", "1")
    assert (req.mix, req.cfg_context, req.cfg_clap, req.steps, req.sampler, req.strength,
            req.duration, req.text_prior, req.loop) == (None,) * 9
    assert (req.takes, req.gap, req.stereo_width) == (PARAMS["takes"].default,
                                                      PARAMS["gap"].default, 0.0)
    assert 0 <= _request("generate").seed < 2**31  # no --seed: a fresh one


def test_audio_flags_fill_their_fields_and_labels(wav):
    a, b, c = wav("a.wav"), wav("b.wav", 0.5), wav("c.wav")
    req = _request("generate", "--context", a, "--context", b, "--transition", a, c,
                   "--seed", "0")
    assert req.context.shape[-1] == OUT_RATE  # summed, aligned at zero
    assert len(req.transition) == 2
    assert req.labels == {"context": "a.wav, b.wav", "transition": "a.wav -> c.wav"}
    req = _request("generate", "--inpaint", "0.1:0.4", "--source", c, "--seed", "0")
    assert (req.inpaint, req.regenerate, req.labels) == ((0.1, 0.4), False, {"source": "c.wav"})
    req = _request("generate", "--regenerate", "0.1:0.4", "--source", c, "--seed", "0")
    assert (req.inpaint, req.regenerate, req.mode) == ((0.1, 0.4), True, "regenerate")


@pytest.mark.parametrize("argv, words", [
    (["--inpaint", "0:1", "--regenerate", "0:1"], "either --inpaint or --regenerate"),
    (["--inpaint", "0:1"], "need --source"),
    (["--source", "x.wav"], "only used with --inpaint"),
    (["--duration", "0"], "--duration must be positive"),
])
def test_flag_mixes_that_make_no_request_are_one_line(argv, words):
    with pytest.raises(RiffwrightError, match=words):
        _request("generate", *argv)


def test_arrange_shares_the_flags_without_generate_only_ones(wav):
    req = _request("arrange", "--prompt", "bass", "--context", wav("a.wav"), "--seed", "3")
    assert req.prompt is None and req.seed == 3 and req.labels == {"context": "a.wav"}
    assert req.gap == PARAMS["gap"].default and req.strength is None


def test_tempo_flags_give_the_request_a_beat_grid(wav):
    ctx = wav("ctx.wav", 3.0)
    assert _request("generate", "--context", ctx).beat_grid is None
    req = _request("generate", "--context", ctx, "--tempo", "96", "--meter", "6/8",
                   "--downbeat", "0.5")
    assert req.beat_grid == (96.0, 3.0, 0.5)
    assert _request("generate", "--tempo", "120").beat_grid == (120.0, 4.0, 0.0)
    for argv, match in ((("--downbeat", "1"), "needs --tempo"),
                        (("--tempo", "fast"), "BPM or auto"),
                        (("--tempo", "auto"), "from --context"),
                        (("--tempo", "120", "--meter", "4"), "like 4/4"),
                        (("--tempo", "900"), "20–400"),
                        (("--context", ctx, "--tempo", "auto"), "no steady beat")):
        with pytest.raises(RiffwrightError, match=match):
            _request("generate", *argv)


def test_tempo_auto_reads_the_beat_off_the_context(tmp_path):
    bpm, first = 125.0, 0.12
    x = np.zeros(int(10 * OUT_RATE), np.float32)
    tick = np.exp(-np.arange(2400) / 200.0) * np.sin(np.arange(2400) * 0.3)
    for t in np.arange(first, 9.9, 60.0 / bpm):
        i = int(t * OUT_RATE)
        x[i:i + 2400] += tick.astype(np.float32)
    path = tmp_path / "clicks.wav"
    sf.write(path, 0.5 * x, OUT_RATE)
    got_bpm, bar, down = _request("generate", "--context", str(path), "--tempo", "auto"
                                  ).beat_grid
    assert abs(got_bpm - bpm) < 1.0 and bar == 4.0 and abs(down - first) < 0.015
