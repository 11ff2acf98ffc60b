"""`riffwright` on the command line: outputs, reproducibility and bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from engine.cli import main

SR = 48000


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / "tiny"
    assert main(["models", "init", "--arch", "tiny", "--out", str(out)]) == 0
    return str(out)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("a") / "ctx.wav"
    t = np.arange(3 * SR) / SR
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), SR, subtype="PCM_24")
    return str(path)


def gen(bundle, out, *extra):
    return main(["generate", "--model", bundle, "--steps", "3", "--out", str(out), "--quiet",
                 *extra])


def test_generate_writes_24bit_wavs_with_provenance_and_json(bundle, clip, tmp_path, capsys):
    rc = gen(bundle, tmp_path / "o", "--context", clip, "--prompt", "bass", "--takes", "2",
             "--stereo-width", "0.4", "--json")
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["stems"]) == 2
    for row in report["stems"]:
        info = sf.info(row["path"])
        assert info.samplerate == SR and info.subtype == "PCM_24" and info.channels == 2
        assert row["channels"] == 2 and abs(row["seconds"] - 3.0) < 1e-6
        assert info.frames == 3 * SR
        prov = json.loads(open(row["provenance"]).read())
        assert prov["seed"] == row["seed"] and prov["parameters"]["prompt"] == "bass"
    assert [r["seed"] for r in report["stems"]] == [0, 1]


def test_same_seed_gives_identical_files(bundle, clip, tmp_path):
    for name in ("a", "b", "c"):
        seed = "9" if name != "c" else "10"
        assert gen(bundle, tmp_path / name, "--context", clip, "--seed", seed) == 0
    a = (tmp_path / "a" / "accompaniment_take1_seed9.wav").read_bytes()
    b = (tmp_path / "b" / "accompaniment_take1_seed9.wav").read_bytes()
    c = (tmp_path / "c" / "accompaniment_take1_seed10.wav").read_bytes()
    assert a == b and a != c


def test_default_length_without_context_is_ten_seconds(bundle, tmp_path):
    assert gen(bundle, tmp_path, "--prompt", "drums") == 0
    (wav,) = tmp_path.glob("*.wav")
    assert sf.info(wav).frames == 10 * SR


def test_inpaint_via_cli_keeps_the_source(bundle, tmp_path):
    src = np.random.default_rng(1).uniform(-0.4, 0.4, (6 * SR, 2)).astype(np.float32)
    sf.write(tmp_path / "src.wav", src, SR, subtype="PCM_24")
    assert gen(bundle, tmp_path / "o", "--inpaint", "2:4", "--source",
               str(tmp_path / "src.wav")) == 0
    (wav,) = (tmp_path / "o").glob("*.wav")
    out, _ = sf.read(wav, dtype="int32")
    ref, _ = sf.read(tmp_path / "src.wav", dtype="int32")
    lo, hi = int(1.95 * SR), int(4.05 * SR)
    assert np.array_equal(out[:lo], ref[:lo]) and np.array_equal(out[hi:], ref[hi:])
    assert not np.array_equal(out[lo:hi], ref[lo:hi])


def test_arrange_builds_parts_over_each_other(bundle, clip, tmp_path, capsys):
    rc = main(["arrange", "--model", bundle, "--steps", "2", "--context", clip, "--prompt",
               "bass", "--prompt", "piano", "--out", str(tmp_path), "--json", "--quiet"])
    assert rc == 0
    rows = json.loads(capsys.readouterr().out)["stems"]
    assert len(rows) == 2 and (tmp_path / "arrangement_mix.wav").exists()
    second = json.loads(open(rows[1]["provenance"]).read())
    assert second["arrangement"] == {"part": 2, "of": 2, "kind": "prompt", "value": "piano"}


def write_bad(tmp_path, kind):
    p = tmp_path / f"{kind}.wav"
    if kind == "text":
        p.write_text("this is not audio at all\n" * 10)
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "zero":
        sf.write(p, np.zeros((0, 1), np.float32), SR)
    elif kind == "nan":
        sf.write(p, np.full(SR, np.nan, np.float32), SR, subtype="FLOAT")
    elif kind == "eight":
        sf.write(p, np.zeros((SR, 8), np.float32), SR)
    elif kind == "lowrate":
        sf.write(p, np.zeros(8000, np.float32), 8000)
    return str(p)


@pytest.mark.parametrize("kind", ["text", "empty", "zero", "nan", "eight", "lowrate"])
def test_bad_audio_exits_2_with_one_line_and_writes_nothing(bundle, tmp_path, capsys, kind):
    out = tmp_path / "out"
    rc = gen(bundle, out, "--context", write_bad(tmp_path, kind))
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("riffwright: error:")
    assert "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("args,word", [
    (["--inpaint", "5:9"], "outside"),
    (["--duration", "-2"], "duration"),
    (["--loop", "x"], "N:FRACTION"),
    (["--steps", "0"], "steps"),
])
def test_bad_arguments_exit_2(bundle, clip, tmp_path, capsys, args, word):
    extra = ["--source", clip] if args[0] == "--inpaint" else []
    rc = gen(bundle, tmp_path / "out", *args, *extra)
    err = capsys.readouterr().err
    assert rc == 2 and word in err and not (tmp_path / "out").exists()


def test_wrong_bundle_is_named(tmp_path, capsys):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "bundle.json").write_text("{not json")
    assert gen(str(tmp_path / "b"), tmp_path / "out") == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_models_info_and_list(bundle, capsys):
    assert main(["models", "info", bundle]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["ldm"]["arch"] == "tiny" and info["latent"] == {"dim": 64, "hop": 4096}
    assert info["prior"] is None  # `models init` makes no text prior
    assert main(["models", "list"]) == 0


def test_bench_reports_the_required_cases(bundle, capsys):
    assert main(["bench", "--model", bundle, "--steps", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    names = {c["name"] for c in report["cases"]}
    assert {"generate_10s", "cae_encode_10s", "cae_decode_10s"} <= names
    assert all(c["rtf"] > 0 and c["peak_mb"] > 0 for c in report["cases"])


def test_console_script_entry_point(tmp_path):
    r = subprocess.run([sys.executable, "-m", "app.launcher", "models", "info", "/nonexistent"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "not a model bundle" in r.stderr
