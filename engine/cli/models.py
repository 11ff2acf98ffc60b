"""`riffwright models list|info|init`: the model bundles this machine can use."""

from __future__ import annotations

import json

from engine.bundles import bundle as B


def add_parser(sub, parser_class) -> None:
    m = sub.add_parser("models", help="list, inspect and create model bundles")
    msub = m.add_subparsers(dest="models_cmd", parser_class=parser_class, required=True)
    msub.add_parser("list").set_defaults(handler=run_list)
    mi = msub.add_parser("info")
    mi.add_argument("dir", nargs="?")
    mi.set_defaults(handler=run_info)
    mn = msub.add_parser("init")
    mn.add_argument("--arch", choices=["tiny", "small", "base"], default="tiny")
    mn.add_argument("--cae-arch", choices=["tiny", "small"])
    mn.add_argument("--out", required=True)
    mn.add_argument("--seed", type=int, default=0)
    mn.add_argument("--cae", metavar="FILE", help="trained CAE weights to put in the bundle")
    mn.add_argument("--conditioner", metavar="FILE",
                    help="trained built-in encoder weights to put in the bundle")
    mn.set_defaults(handler=run_init)


def run_list(args) -> int:
    rows = B.list_bundles()
    if not rows:
        print("no bundles found (see `riffwright models init --help`)")
    for r in rows:
        if "error" in r:
            print(f"{r['path']}  [{r['origin']}]  BROKEN: {r['error']}")
        else:
            print(f"{r['name']:<28} {r['arch'] or '?':<6} {r['sample_rate']} Hz  "
                  f"[{r['origin']}]  {r['path']}")
    return 0


def run_info(args) -> int:
    path = B.find_bundle(args.dir)
    m = B.read_manifest(path)
    files = {f.name: f.stat().st_size for f in sorted(path.glob("*.safetensors"))}
    lat = m["latent"]
    info = {"path": str(path), "name": m.get("name"), "format": m["format"],
            "trained": m.get("trained", True), "sample_rate": m["sample_rate"],
            "latent": {"dim": lat["dim"], "hop": lat["hop"]},
            "sigma_data": m["sigma_data"], "window_frames": m["window_frames"],
            "cae": m["cae"], "conditioner": m["conditioner"], "ldm": m["ldm"],
            "prior": m.get("prior"), "defaults": m["defaults"], "files_bytes": files,
            "hash": B.bundle_hash(path)}
    print(json.dumps(info, indent=2))
    return 0


def run_init(args) -> int:
    out = B.init_bundle(args.arch, args.out, cae_arch=args.cae_arch, seed=args.seed,
                        cae_file=args.cae, conditioner_file=args.conditioner)
    print(f"wrote a {args.arch} bundle (diffusion model untrained) to {out}")
    return 0
