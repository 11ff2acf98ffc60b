"""Write a dataset manifest that holds a subset of another dataset's songs (no audio copied).

    python tools/subset_manifest.py SRC_DIR DST_DIR --train N

Keeps the first N training songs and every valid/test song; stem paths point into SRC_DIR.
Used to fit the default bundle's latent pre-encoding into a CPU budget.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--train", type=int, required=True)
    args = ap.parse_args()
    src, dst = Path(args.src), Path(args.dst)
    m = json.loads((src / "manifest.json").read_text())
    rel = Path(os.path.relpath(src, dst))
    songs, n_train = [], 0
    for s in m["songs"]:
        if s["split"] == "train":
            if n_train >= args.train:
                continue
            n_train += 1
        s = dict(s, stems=[dict(st, path=str(rel / st["path"])) for st in s["stems"]])
        songs.append(s)
    dst.mkdir(parents=True, exist_ok=True)
    out = dict(m, songs=songs, subset_of=str(src))
    (dst / "manifest.json").write_text(json.dumps(out, indent=1))
    print(f"{len(songs)} songs ({n_train} train) -> {dst / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
