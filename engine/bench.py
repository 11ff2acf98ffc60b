"""`riffwright bench`: real-time factors and peak memory of the engine's stages.

Cases (each timed after a warm-up run):
- `cae_encode_10s`, `cae_decode_10s`: the CAE alone on 10 s of audio.
- `sample_10s`: the diffusion sampler alone (30 steps, both guidance branches, no stereo).
- `generate_10s`: the whole path a musician waits for: encode a 10 s context, embed a text
  prompt, sample with both guidance branches, pseudo-stereo (s = 0.4), decode both channels.

rtf = compute seconds / audio seconds (below 1 is faster than real time). peak_mb is the
peak GPU memory allocated on CUDA/MPS, or the peak resident set size of the process on the CPU
during the case.
"""

from __future__ import annotations

import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from engine.bundles.bundle import init_bundle, load_bundle

SECONDS = 10.0


class _PeakRSS:
    """Samples the process's resident memory in a thread (Linux /proc; else ru_maxrss)."""

    def __init__(self, interval=0.005):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def rss_mb() -> float:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except OSError:
            import resource

            r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return r / 2**20 if platform.system() == "Darwin" else r / 1024

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss_mb())
            time.sleep(self.interval)

    def __enter__(self):
        self.peak = self.rss_mb()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.rss_mb())


def _timed(fn, device, repeat: int):
    import torch

    fn()  # warm-up
    best = float("inf")
    peak = 0.0
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        with _PeakRSS() as mem:
            t = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
        if device.type == "cuda":
            peak = max(peak, torch.cuda.max_memory_allocated() / 2**20)
        elif device.type == "mps":
            peak = max(peak, torch.mps.driver_allocated_memory() / 2**20)
        else:
            peak = max(peak, mem.peak)
    return best, peak


def _demo_audio(sr: int, seconds: float) -> np.ndarray:
    """A deterministic musical test signal: a chord with a pulse and a little noise."""
    t = np.arange(int(sr * seconds)) / sr
    env = np.exp(-((t * 2) % 0.5) * 8)
    x = sum(np.sin(2 * np.pi * f * t) for f in (110, 220 * 1.26, 330, 440)) * 0.15 * env
    x += 0.01 * np.random.default_rng(0).standard_normal(t.shape)
    return x.astype(np.float32)[None]


def run_bench(arch: str | None = None, model: str | None = None, device: str = "auto",
              steps: int = 30, repeat: int = 1) -> dict:
    import torch

    from engine.generation.driver import STREAM_NOISE, Generator, Sampling, pick_device, run_to_end
    from engine.generation.request import GenerationRequest

    dev = pick_device(device)
    with tempfile.TemporaryDirectory() as tmp:
        if arch and not model:
            path = init_bundle(arch, Path(tmp) / f"bench-{arch}")
        else:
            path = model
        bundle = load_bundle(path, device=dev)
    sr = bundle.sample_rate
    audio = _demo_audio(sr, SECONDS)
    wave = torch.from_numpy(audio).to(dev)
    gen = Generator(bundle)
    with torch.inference_mode():
        lat = bundle.cae.encode(wave)
    frames = lat.shape[-1]
    g = torch.Generator().manual_seed(0)

    def encode():
        with torch.inference_mode():
            bundle.cae.encode(wave)

    def decode():
        with torch.inference_mode():
            bundle.cae.decode(lat, length=audio.shape[-1], generator=g)

    ctx = bundle.context_condition(bundle.normalize(lat), audio[0])
    clap = bundle.embed_prompt("warm upright bass, walking line").to(dev)
    job = Sampling(gen.resolve(GenerationRequest(steps=steps)), frames, ctx, clap, None, None,
                   None)

    def sample():
        run_to_end(gen._sample_latents(job, [0], STREAM_NOISE))

    req = GenerationRequest(context=audio, sample_rate=sr, prompt="warm upright bass",
                            steps=steps, stereo_width=0.4, seed=0)

    def generate():
        run_to_end(gen.run(req))

    cases = []
    for name, fn in [("cae_encode_10s", encode), ("cae_decode_10s", decode),
                     ("sample_10s", sample), ("generate_10s", generate)]:
        secs, peak = _timed(fn, dev, repeat)
        cases.append({"name": name, "seconds": round(secs, 4), "rtf": round(secs / SECONDS, 4),
                      "peak_mb": round(peak, 1)})
    from engine.models.unet import param_count

    return {
        "device": str(dev),
        "device_name": _device_name(dev),
        "threads": torch.get_num_threads(),
        "model": f"untrained {arch}" if arch and not model else str(bundle.path),
        "arch": bundle.manifest["ldm"].get("arch"),
        "ldm_params_m": round(param_count(bundle.precond.net) / 1e6, 2),
        "cae_params_m": round(sum(p.numel() for p in bundle.cae.parameters()) / 1e6, 2)
        if hasattr(bundle.cae, "parameters") else None,
        "steps": steps,
        "torch": torch.__version__,
        "cases": cases,
    }


def _device_name(dev) -> str:
    import torch

    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    if dev.type == "mps":
        return "Apple MPS"
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def print_report(r: dict) -> None:
    print(f"device: {r['device']} — {r['device_name']}, torch {r['torch']}, "
          f"{r['threads']} threads")
    print(f"model: {r['model']} (LDM {r['ldm_params_m']} M params, CAE {r['cae_params_m']} M)")
    print(f"{'case':<18}{'seconds':>10}{'rtf':>8}{'peak MB':>10}")
    for c in r["cases"]:
        print(f"{c['name']:<18}{c['seconds']:>10.3f}{c['rtf']:>8.3f}{c['peak_mb']:>10.1f}")
