#!/usr/bin/env bash
# Sets up Riffwright in ./.venv on a Debian/Ubuntu machine (or any machine with Python >= 3.10).
#   ./setup.sh          runtime: the app and the headless engine
#   ./setup.sh --dev    also the test, lint and dataset tools
# System packages (PortAudio for playback, FluidSynth + a GM SoundFont for dataset rendering,
# the X/EGL libraries Qt needs) are installed with apt-get when it is available and we may use it.
set -euo pipefail
cd "$(dirname "$0")"
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"

if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
    pkgs="libportaudio2 libsndfile1 libegl1 libgl1 libxkbcommon0 libxkbcommon-x11-0 libfontconfig1 libdbus-1-3 libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0 libxcb-xinerama0 libxcb-randr0 libxcb-render-util0 libxcb-image0"
    [ -n "$extras" ] && pkgs="$pkgs fluidsynth fluid-soundfont-gm xvfb xauth"
    missing=$(dpkg-query -W -f='${Status} ${Package}\n' $pkgs 2>/dev/null | grep -v '^install ok installed' | awk '{print $NF}' || true)
    for p in $pkgs; do dpkg-query -W "$p" >/dev/null 2>&1 || missing="$missing $p"; done
    if [ -n "$(echo $missing)" ]; then
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
    fi
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# torch first and pinned: on our machines this CPU wheel is already on disk.
.venv/bin/python -m pip install -q "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install -q -e ".$extras" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import torch, soundfile, soxr, safetensors, engine" \
  || { echo "setup.sh: the installation is incomplete (see the pip output above)" >&2; exit 1; }
