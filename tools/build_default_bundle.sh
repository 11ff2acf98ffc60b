#!/usr/bin/env bash
# How the shipped default bundle (resources/models/default) was built, step by step, on a
# 2-core CPU. Every step resumes when run again. Budget knobs are environment variables.
# See resources/models/default/MODEL_CARD.md for what came out of it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
RUN=${RUN:-runs/default}
CAE_STEPS=${CAE_STEPS:-2400}       # consistency autoencoder steps before its encoder is frozen
ENC_STEPS=${ENC_STEPS:-2200}       # built-in text/audio encoder steps
LDM_STEPS=${LDM_STEPS:-4000}       # diffusion steps
TRAIN_SONGS=${TRAIN_SONGS:-200}    # training songs whose latents are pre-encoded
mkdir -p "$RUN"

# 1. the dataset: 400 songs of FluidSynth-rendered scores and grooves (~35 min, 3.8 GB)
$PY -m engine.cli dataset build --source scores --songs 400 --seed 0 --jobs 2 --out data/scores

# 2. the CAE (small) and the built-in encoder
$PY -m engine.cli train cae --data data/scores --out runs/cae_small --steps "$CAE_STEPS"
$PY -m engine.cli train encoder --data data/scores --out runs/encoder --steps "$ENC_STEPS"

# 3. freeze the CAE's encoder: a starting bundle with the trained CAE and encoder
cp runs/cae_small/cae.safetensors "$RUN/cae_snapshot.safetensors"
[ -f "$RUN/start/bundle.json" ] || $PY -m engine.cli models init --arch tiny \
    --cae "$RUN/cae_snapshot.safetensors" --conditioner runs/encoder/conditioner.safetensors \
    --out "$RUN/start"

# 4. in parallel: the decoder keeps training against the frozen encoder, and the diffusion
#    model trains on the frozen encoder's latents (a subset of the songs, to fit the budget)
$PY tools/subset_manifest.py data/scores data/scores_sub --train "$TRAIN_SONGS"
$PY tools/finetune_decoder.py "$RUN/cae_snapshot.safetensors" data/scores "$RUN/decoder" &
cat > "$RUN/ldm_config.json" <<JSON
{"arch": "tiny", "batch_size": 16, "frames": 64, "window_frames": 128, "lr": 0.0003,
 "warmup": 200, "ema_decay": 0.998, "checkpoint_every": 200, "sample_every": 0,
 "log_every": 25, "threads": 1, "steps": $LDM_STEPS}
JSON
$PY -m engine.cli train ldm --data data/scores_sub --bundle "$RUN/start" --out "$RUN/ldm" \
    --config "$RUN/ldm_config.json" --device cpu
kill %1 2>/dev/null || true

# 5. assemble: the LDM export with the further-trained decoder (same encoder, checked)
$PY tools/assemble_bundle.py "$RUN/ldm/bundle" resources/models/default \
    --cae "$RUN/decoder/cae.safetensors" --card "$RUN/MODEL_CARD.md" --name riffwright-default
