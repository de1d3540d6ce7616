"""Whether two runs ended with the same weights: bit for bit, or how far apart.

    python benchmarks/compare_weights.py RUN_A RUN_B [--checkpoint last] [--json]

Reads ``checkpoints/CHECKPOINT.pt`` of both runs and prints, for the model's tensors, whether
every one is bit-identical, the largest absolute difference and the tensor it is in. For the CUDA
checks (benchmarks/cuda.sh): a killed and resumed run against the run that went on, and a
CUDA-graph run against the eager run of the same config.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def load_weights(run_dir: Path, checkpoint: str) -> dict[str, torch.Tensor]:
    path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    if not path.is_file():
        raise SystemExit(f"compare_weights: error: {path}: not found (not a run directory?)")
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def compare(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> dict:
    """identical (every tensor bit-equal), the largest absolute difference and where it is."""
    if first.keys() != second.keys():
        missing = sorted(first.keys() ^ second.keys())
        raise SystemExit(f"compare_weights: error: the runs' models differ in their tensors: {', '.join(missing[:5])}")
    largest, where = 0.0, ""
    identical = True
    for name, value in first.items():
        other = second[name]
        if value.shape != other.shape:
            raise SystemExit(f"compare_weights: error: {name}: shapes {tuple(value.shape)} and {tuple(other.shape)}")
        identical &= torch.equal(value, other)
        if value.is_floating_point():
            difference = (value.double() - other.double()).abs().max().item() if value.numel() else 0.0
            if difference > largest:
                largest, where = difference, name
    return {"identical": identical, "max_abs_difference": largest, "tensor": where, "tensors": len(first)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--checkpoint", default="last", help="last or best [last]")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = compare(load_weights(args.first, args.checkpoint), load_weights(args.second, args.checkpoint))
    if args.json:
        print(json.dumps(result))
    else:
        verdict = "bit-identical" if result["identical"] else f"differ: largest |difference| {result['max_abs_difference']:.3g} in {result['tensor']}"
        print(f"{args.first} and {args.second} ({result['tensors']} tensors, {args.checkpoint}.pt): {verdict}")
    return result


if __name__ == "__main__":
    main()
