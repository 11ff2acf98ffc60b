"""Golden takes: fixed seeds on the untrained tiny bundle give the same takes as recorded
before the generation driver's redesign (issue 18).

Each take is fingerprinted by its shape, its peak and 16 evenly spaced samples divided by the
peak (the untrained decoder is quiet, so raw samples would round to zero), and so are the
latents handed to the decoder (the untrained decoder barely depends on them); a
change in how noise is drawn, how a mode plans its latents or how the result is decoded and
spliced moves these numbers. The `churn` expectation was re-recorded when every take started
drawing its churn noise from its own generator (before, all takes drew from take 0's), and
the `long` one when the last sampling window of a long take began to hold only the overlap
(it held up to 115 of 128 frames, which made the end of such takes burst). The audio
fingerprints (not the latents) were re-recorded when the decoder's phases began to be rebuilt
from its magnitudes (engine/models/cae/phase.py), and again when the low band began to keep
the network's own phases without their frame-locked part (the "hybrid" decode).
"""

import numpy as np
import pytest

from engine.bundles.bundle import load_bundle
from engine.generation.driver import Generator, run_to_end
from engine.generation.request import GenerationRequest

SR = 48000
STEPS = 3


def _tone(seconds: float, freq: float, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    pulse = 0.5 + 0.5 * (np.sin(2 * np.pi * 2 * t) > 0)
    return (amp * np.sin(2 * np.pi * freq * t) * pulse).astype(np.float32)[None]


def _cases() -> dict[str, dict]:
    clip = _tone(2.0, 220.0)
    other = _tone(1.5, 330.0)
    return {
        "accompaniment": dict(context=clip, prompt="warm upright bass", takes=2, seed=11),
        "inpaint": dict(source=clip, inpaint=(0.5, 1.2), seed=3),
        "regenerate": dict(source=clip, inpaint=(0.5, 1.2), regenerate=True, strength=0.6,
                           seed=4),
        "variation": dict(variation_of=clip, strength=0.6, seed=5),
        "loop": dict(context=clip, loop=(2, 0.5), seed=6),
        "continue": dict(continue_from=clip, duration=1.0, seed=7),
        "transition": dict(transition=(clip, other), gap=1.0, seed=8),
        "stereo": dict(context=clip, stereo_width=0.5, seed=9, sampler="euler"),
        "long": dict(prompt="drums", duration=15.0, seed=10, steps=2),
        "churn": dict(context=clip, takes=2, s_churn=5.0, seed=12),
    }


def fingerprint(audio: np.ndarray) -> list:
    """[shape, peak, 16 evenly spaced samples / peak rounded to 1e-5]."""
    flat = np.asarray(audio, dtype=np.float64).reshape(-1)
    peak = float(np.abs(flat).max()) or 1.0
    idx = np.linspace(0, flat.size - 1, 16).round().astype(int)
    return [list(audio.shape), float(f"{peak:.6g}"), [round(float(v) / peak, 5) for v in flat[idx]]]


# recorded from the code before the redesign (commit 769ec55)
EXPECTED: dict[str, list] = {
    'accompaniment': [
        [[1, 96000], 7.30933e-06,
         [-0.13197, 0.11765, 0.04187, 0.07602, -0.12206, -0.0886, 0.01837, 0.03143, 0.08213, -0.07475, -0.03008, -0.06489, 0.12669, -0.08783, -0.00754, -0.07557]],
        [[1, 96000], 7.74717e-06,
         [-0.03791, 0.03542, 0.08462, -0.00893, -0.13311, -0.2077, -0.23097, -0.07467, 0.07567, -0.03409, 0.07874, 0.0795, -0.00327, -0.06046, -0.09291, -0.05654]],
        [[1, 64, 24], 0.143778,
         [0.53524, 0.02598, -0.4251, 0.33526, -0.74844, 0.24134, 0.39831, -0.63391, -0.17055, 0.19339, 0.41947, 0.38308, -0.02526, -0.65929, -0.26437, -0.1288]],
        [[1, 64, 24], 0.140758,
         [0.38453, 0.23101, -0.43035, 0.29209, -0.53334, 0.2963, 0.37672, -0.58081, 0.22062, 0.1489, 0.33939, -0.13076, -0.29288, -0.69154, -0.58019, -0.26081]],
    ],
    # re-recorded with the fix: each take draws its churn noise from its own generator
    'churn': [
        [[1, 96000], 7.74717e-06,
         [-0.03791, 0.03542, 0.08462, -0.00893, -0.13311, -0.2077, -0.23097, -0.07467, 0.07567, -0.03409, 0.07874, 0.0795, -0.00327, -0.06046, -0.09291, -0.05654]],
        [[1, 96000], 8.53176e-06,
         [0.13821, 0.08716, 0.05617, 0.03084, 0.12024, 0.04442, -0.10709, 0.02661, 0.08156, 0.01378, -0.06084, -0.01107, -0.11232, 0.03205, -0.10734, -0.05874]],
        [[1, 64, 24], 0.158703,
         [0.53375, -0.00833, -0.4905, 0.12335, -0.44777, 0.38612, 0.29371, -0.41775, 0.30012, 0.15002, 0.20016, -0.21029, -0.2631, -0.47399, -0.63152, -0.17274]],
        [[1, 64, 24], 0.164619,
         [0.33095, -0.01134, -0.06706, -0.14911, -0.29977, 0.45235, 0.32635, -0.19178, 0.14488, 0.07426, 0.00144, 0.14024, -0.08311, -0.63822, -0.23001, -0.40664]],
    ],
    'continue': [
        [[1, 144000], 0.3,
         [0.0, 0.0, 0.0, -0.0, 0.0, 0.0, -0.0, -0.0, -0.02879, -0.0144, -0.01018, -0.0, -0.0, -0.0, -0.0, 0.0]],
        [[1, 64, 36], 0.131644,
         [0.52186, 0.24968, -0.52182, 0.09399, -0.60891, 0.26135, 0.27666, -0.50569, -0.14348, 0.13098, 0.16521, -0.00614, -0.06476, -0.70796, -0.29646, -0.49003]],
    ],
    'inpaint': [
        [[1, 96000], 0.3,
         [0.0, 0.86603, -0.43301, 0.0, -0.0, 0.0, 0.0, 0.0, -0.0, -0.02035, 0.44003, -0.42563, -0.02879, 0.88006, -0.42563, -0.0144]],
        [[1, 64, 24], 0.13719,
         [0.50076, 0.03612, -0.60039, 0.28162, -0.58207, 0.1071, 0.20691, -0.51063, -0.14186, 0.14643, 0.16025, 0.03617, 0.04839, -0.57214, -0.5553, -0.35146]],
    ],
    'long': [  # re-recorded when a short last window began to hold only the overlap
        [[1, 720000], 7.03528e-06,
         [0.07405, 0.10896, -0.17168, -0.04208, 0.14108, 0.15044, 0.05813, -0.05435, 0.01087, -0.09393, 0.11277, -0.10475, 0.13875, -0.00667, 0.1562, -0.1043]],
        [[1, 64, 176], 0.805358,
         [-0.06915, 0.41081, 0.17368, -0.14055, 0.00057, -0.11241, 0.32024, 0.12355, 0.00507, 0.14557, 0.67698, -0.19344, -0.11057, 0.04602, 0.00045, 0.12736]],
    ],
    'loop': [
        [[1, 96000], 7.8135e-06,
         [-0.00424, 0.00836, -0.22638, -0.00843, -0.08506, 0.04598, 0.00027, -0.22621, 0.01009, -0.06987, 0.11326, -0.17913, -0.13777, -0.04753, -0.07974, 0.14713]],
        [[1, 64, 24], 0.134439,
         [0.62943, 0.22886, -0.70519, 0.48694, -0.57587, 0.00347, 0.23156, -0.55823, -0.50525, 0.04471, -0.00724, 0.22078, 0.07551, -0.66448, -0.73456, -0.73083]],
    ],
    'regenerate': [
        [[1, 96000], 0.3,
         [0.0, 0.86603, -0.43301, 0.0, 0.0, -1e-05, -0.0, -0.0, 0.0, -0.02035, 0.44003, -0.42563, -0.02879, 0.88006, -0.42563, -0.0144]],
        [[1, 64, 24], 0.11356,
         [0.60496, 0.2519, -0.60371, 0.34022, -0.70318, 0.39169, 0.35703, -0.61689, -0.17137, 0.22416, 0.05353, 0.0437, -0.13473, -0.85378, -0.67085, -0.42459]],
    ],
    'stereo': [
        [[2, 96000], 7.62108e-06,
         [-0.2026, 0.06116, -0.03979, 0.06148, -0.03166, -0.03383, 0.1027, 0.05686, -0.14568, -0.11427, -0.02954, -0.08222, -0.05636, 0.04651, 0.07679, -0.08148]],
        [[1, 64, 24], 0.0947951,
         [0.90882, 0.33173, -0.68477, 0.41896, -0.82078, 0.3828, 0.36784, -0.72893, -0.18986, 0.16882, 0.19998, 0.08655, -0.13274, -0.97123, -0.75928, -0.57896]],
        [[1, 64, 24], 0.0955012,
         [0.86832, 0.34461, -0.69628, 0.38115, -0.84625, 0.36742, 0.35784, -0.71882, -0.18215, 0.19244, 0.21592, 0.09406, -0.10974, -0.97578, -0.74063, -0.5537]],
    ],
    'transition': [
        [[1, 216000], 0.3,
         [0.0, -0.0, -0.0, 0.0, -0.0, 0.0, 0.0, 0.0, -0.0, 0.0, -0.0, -0.02159, -0.04318, -0.02159, -0.04318, -0.02159]],
        [[1, 64, 53], 0.141587,
         [0.48521, 0.22429, -0.26255, 0.25181, -0.55628, 0.23675, 0.24509, -0.49826, -0.12612, 0.09572, -0.2954, 0.0634, -0.06645, -0.61568, -0.51211, -0.34023]],
    ],
    'variation': [
        [[1, 96000], 8.43774e-06,
         [-0.04499, 0.10382, 0.1115, 0.07746, 0.0047, 0.22844, 0.07139, -0.05707, -0.04236, 0.10567, -0.02325, -0.03893, -0.09466, -0.05549, -0.08003, 0.00255]],
        [[1, 64, 24], 0.113686,
         [0.64411, 0.37535, -0.56196, 0.39548, -0.81736, 0.26473, 0.33564, -0.70395, -0.12507, 0.16473, -0.01465, 0.06097, -0.13077, -0.88448, -0.69648, -0.41294]],
    ],
}


@pytest.fixture(scope="module")
def gen(tiny_bundle):
    return Generator(load_bundle(tiny_bundle, device="cpu"))


def takes_and_latents(gen, kw: dict) -> tuple[list, list]:
    """Run a request; the stems and every latent the decoder was given, in call order."""
    cae = gen.bundle.cae
    seen = []
    decode = cae.decode

    def spy(latents, *args, **kwargs):
        seen.append(latents.detach().cpu().numpy().copy())
        return decode(latents, *args, **kwargs)

    cae.decode = spy
    try:
        stems = run_to_end(gen.run(GenerationRequest(**{"steps": STEPS, **kw})))
    finally:
        del cae.decode
    return stems, seen


@pytest.mark.parametrize("name", sorted(_cases()))
def test_golden_take(gen, name):
    stems, latents = takes_and_latents(gen, _cases()[name])
    got = [fingerprint(s.audio) for s in stems] + [fingerprint(z) for z in latents]
    want = EXPECTED[name]
    assert [g[0] for g in got] == [w[0] for w in want]
    np.testing.assert_allclose([g[1] for g in got], [w[1] for w in want], rtol=1e-4)
    np.testing.assert_allclose([g[2] for g in got], [w[2] for w in want], rtol=0, atol=5e-5)


def test_golden_provenance_parameters(gen):
    stem = takes_and_latents(gen, _cases()["accompaniment"])[0][1]
    assert stem.seed == 12 and stem.take == 1
    assert stem.provenance["parameters"] == EXPECTED_PARAMETERS


EXPECTED_PARAMETERS: dict = {"mode": "accompaniment",
 "steps": 3,
 "cfg_context": 1.25,
 "cfg_clap": 1.25,
 "sampler": "heun",
 "s_churn": 0.0,
 "stereo_width": 0.0,
 "strength": 0.5,
 "mix": None,
 "prompt": "warm upright bass",
 "text_prior": False,
 "duration": None,
 "inpaint": None,
 "loop": None,
 "gap": None}


def test_churn_take_depends_only_on_its_own_seed(gen):
    """With churn on, take 1 of seeds 12, 13 is the take that seed 13 alone gives."""
    kw = _cases()["churn"]
    pair, pair_latents = takes_and_latents(gen, kw)
    alone, alone_latents = takes_and_latents(gen, {**kw, "takes": 1, "seed": 13})
    assert np.array_equal(pair_latents[1], alone_latents[0])
    assert np.array_equal(pair[1].audio, alone[0].audio)
