"""Export a run's backbone alone: `python scripts/export.py ckpt_path=<run dir>/checkpoints/last.ckpt`.

Writes backbone.safetensors and backbone.pt beside the checkpoint (or in out=DIR), loadable strictly into
the stock torchvision (or timm) model with its classifier replaced by an identity, and prints the lines of
code that load it.

arguments (key=value):
  ckpt_path=PATH             a checkpoint written by train.py (required)
  format=torchvision|timm    how the printed code builds the model (default: torchvision for resnet18/34/50,
                             timm for a timm/<name> backbone; the weights are the same)
  out=DIR                    where to write the two files (default: the checkpoint's directory)
  encoder=online|momentum    BYOL, MoCo v2/v3, DINO: which encoder's backbone (default: the run's
                             method.eval_encoder: DINO's teacher, the others' online encoder)

examples:
  python scripts/export.py ckpt_path=outputs/train/runs/2026-01-01_12-00-00/checkpoints/last.ckpt
  python scripts/export.py ckpt_path=.../last.ckpt format=timm out=exported/
  make export CKPT=.../last.ckpt"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selfsup.errors import UserError, exit_on_user_error  # noqa: E402  (light: no torch)

KEYS = ("ckpt_path", "format", "out", "encoder")


def parse(argv: list[str]) -> dict[str, str]:
    args = {}
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq or key not in KEYS:
            raise UserError(f"unexpected argument '{arg}': pass {'=..., '.join(KEYS)}=... (see --help)")
        args[key] = value
    if not args.get("ckpt_path"):
        raise UserError("export.py needs a checkpoint: ckpt_path=<run dir>/checkpoints/last.ckpt")
    return args


@exit_on_user_error
def main(argv: list[str]) -> None:
    if {"-h", "--help"} & set(argv):
        print(__doc__)
        return
    args = parse(argv)
    from selfsup.export import export_backbone  # (torch loads only now: --help stays instant)

    paths, code = export_backbone(
        args["ckpt_path"], args.get("format") or None, args.get("out") or None, args.get("encoder") or None
    )
    from safetensors import safe_open

    with safe_open(str(paths[0]), "pt") as f:
        encoder = f.metadata()["encoder"]
    print("wrote " + " and ".join(str(p) for p in paths) + f" (the {encoder} encoder's backbone)")
    print("load it with:")
    print("\n".join(f"  {line}" for line in code))


if __name__ == "__main__":
    main(sys.argv[1:])
