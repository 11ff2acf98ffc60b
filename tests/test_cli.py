"""`riffwright` on the command line: outputs, reproducibility and bad input."""

import json
import os
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
             "--stereo-width", "0.4", "--seed", "0", "--json")
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
    a = (tmp_path / "a" / "accompaniment_seed9_take1.wav").read_bytes()
    b = (tmp_path / "b" / "accompaniment_seed9_take1.wav").read_bytes()
    c = (tmp_path / "c" / "accompaniment_seed10_take1.wav").read_bytes()
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
    assert len(rows) == 2 and len(list(tmp_path.glob("arrangement_mix_seed*.wav"))) == 1
    assert [p.split("/")[-1].split("_seed")[0] for p in (r["path"] for r in rows)] == [
        "part1_bass", "part2_piano"]
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
    (["--inpaint", "4:2"], "start is not before its end"),
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


def test_generating_commands_use_the_apps_thread_count():
    """Through `riffwright`, generate/arrange/eval/bench run torch on the threads the app's
    engine uses (one fewer than the cores on up to 4: on 2 cores, 1 thread, twice as fast as
    two waiting ones); other commands, and an OMP_NUM_THREADS of the user's, are left alone."""
    from engine.service import engine_threads

    assert [engine_threads(n) for n in (1, 2, 4, 8)] == [1, 1, 3, None]
    probe = ("import sys; import app.launcher as l; sys.argv[1:] and l.main(sys.argv[1:]); "
             "import torch; print('THREADS', torch.get_num_threads())")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}

    def threads(*argv, **extra):
        r = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True,
                           text=True, env={**env, **extra})
        assert r.returncode == 0, r.stderr
        return int(r.stdout.rsplit("THREADS", 1)[1])

    torch_default = threads()
    assert threads("bench", "--help") == (engine_threads() or torch_default)
    assert threads("models", "list") == torch_default
    assert threads("bench", "--help", OMP_NUM_THREADS="2") == 2


def test_readme_examples_in_order_never_overwrite(bundle, clip, tmp_path, capsys):
    """Issue 17 item 2: two runs into one folder keep every output; names say what made
    them (prompt or mode, seed, take); without --seed each run draws a fresh seed."""
    out = tmp_path / "takes"
    assert gen(bundle, out, "--context", clip, "--prompt", "walking upright bass",
               "--takes", "2") == 0
    first = capsys.readouterr().out
    assert "drawn at random" in first
    assert gen(bundle, out, "--context", clip, "--prompt", "bright piano") == 0
    assert gen(bundle, out, "--context", clip, "--seed", "5") == 0
    assert gen(bundle, out, "--context", clip, "--seed", "5") == 0  # the same name again
    names = sorted(p.name for p in out.glob("*.wav"))
    assert len(names) == 5 and len(list(out.glob("*.json"))) == 5
    assert sum(n.startswith("walking-upright-bass_seed") for n in names) == 2
    assert sum(n.startswith("bright-piano_seed") for n in names) == 1
    assert "accompaniment_seed5_take1.wav" in names
    assert "accompaniment_seed5_take1_2.wav" in names
    bass = sorted(n for n in names if n.startswith("walking"))
    assert bass[0].endswith("_take1.wav") and bass[1].endswith("_take2.wav")
    seed = int(bass[0].split("_seed")[1].split("_")[0])
    prov = json.loads((out / bass[0]).with_suffix(".json").read_text())
    assert prov["seed"] == seed and f"seed {seed}" in first
    # the inpaint mode is in the name; WAV and sidecar share the umask's permissions
    assert gen(bundle, out, "--inpaint", "1:2", "--source", clip, "--seed", "3") == 0
    inp = out / "inpaint_seed3_take1.wav"
    assert inp.exists()
    assert (inp.stat().st_mode & 0o777) == (inp.with_suffix(".json").stat().st_mode & 0o777)
    assert inp.stat().st_mode & 0o044  # readable by others under the usual umask 022


def test_stereo_comes_from_the_bundle(bundle, tmp_path, capsys):
    """Issue 17 item 8: without --stereo-width the bundle's default (stereo) applies; a
    variation of a stereo file is stereo; --stereo-width 0 still gives mono."""
    src = np.random.default_rng(2).uniform(-0.3, 0.3, (2 * SR, 2)).astype(np.float32)
    sf.write(tmp_path / "st.wav", src, SR, subtype="PCM_24")
    assert gen(bundle, tmp_path / "v", "--variation-of", str(tmp_path / "st.wav"),
               "--json") == 0
    (row,) = json.loads(capsys.readouterr().out)["stems"]
    assert row["channels"] == 2 and sf.info(row["path"]).channels == 2
    prov = json.loads(open(row["provenance"]).read())
    assert prov["parameters"]["stereo_width"] == 0.4  # the tiny bundle's default
    assert gen(bundle, tmp_path / "p", "--prompt", "drums", "--duration", "1") == 0
    (wav,) = (tmp_path / "p").glob("*.wav")
    assert sf.info(wav).channels == 2
    assert gen(bundle, tmp_path / "m", "--prompt", "drums", "--duration", "1",
               "--stereo-width", "0") == 0
    (wav,) = (tmp_path / "m").glob("*.wav")
    assert sf.info(wav).channels == 1


def test_generate_help_describes_every_option_with_its_default(capsys):
    assert main(["generate", "--help"]) == 0
    text = capsys.readouterr().out
    import re

    opts = set(re.findall(r"^\s+(--[a-z-]+)", text, re.M))
    assert {"--seed", "--stereo-width", "--steps", "--inpaint", "--gap", "--out"} <= opts
    blocks = re.split(r"\n(?=  --)", text.split("options:")[1])
    for b in blocks:
        if b.strip().startswith("--") and not b.strip().startswith("--help"):
            assert "default" in b or "required" in b, b
