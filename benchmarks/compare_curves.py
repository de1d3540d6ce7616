"""Whether two training runs' loss curves agree within noise: the same config trained on two
devices or at two precisions (fp32 / bf16), compared window by window.

    python benchmarks/compare_curves.py RUN_A RUN_B [--reference RUN_C] [--key loss] [--json]

Each run's ``metrics.jsonl`` holds one ``split = "train"`` record per ``train.log_every`` steps,
the mean of the window's batch losses. Runs of the same seed and config see the same batches and
start from the same weights, so the difference of their window means is the effect of the
arithmetic plus the sampling noise of z and dropout, drawn differently on another device.

The noise scale: the root-mean-square difference between RUN_A and ``--reference`` RUN_C, a run
of the same config on RUN_A's device whose noise is drawn differently (``torchrun
--nproc_per_node 1`` draws it from the shared generator instead of inside the model) - the
difference that sampling alone makes. Without a reference, the window-to-window spread of RUN_A
(the standard deviation of consecutive differences over sqrt(2)), which also holds the batches'
own variation and so is lenient. RUN_B **agrees within noise** with RUN_A when its RMS difference
is at most 1.5 times the scale and its mean difference over the last half of the steps is under
the scale (no drift).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path


def train_curve(run_dir: Path, key: str) -> dict[int, float]:
    """step -> the logged window mean of ``key`` of a run's training records."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise SystemExit(f"compare_curves: error: {path}: not found (not a run directory?)")
    curve = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.get("split") == "train" and key in record:
            curve[record["step"]] = float(record[key])
    if len(curve) < 4:
        raise SystemExit(f"compare_curves: error: {path}: fewer than 4 training records of '{key}'")
    return curve


def _rms(values: list[float]) -> float:
    return math.sqrt(statistics.fmean(value * value for value in values))


def compare(a: dict[int, float], b: dict[int, float], reference: dict[int, float] | None = None) -> dict:
    steps = sorted(set(a) & set(b) & (set(reference) if reference is not None else set(a)))
    if len(steps) < 4:
        raise SystemExit("compare_curves: error: the runs share fewer than 4 logged steps")
    differences = [b[step] - a[step] for step in steps]
    if reference is not None:
        noise = _rms([reference[step] - a[step] for step in steps])
    else:
        consecutive = [a[later] - a[earlier] for earlier, later in zip(steps, steps[1:])]
        noise = statistics.pstdev(consecutive) / math.sqrt(2)
    mean_late = statistics.fmean(differences[len(differences) // 2 :])
    rms = _rms(differences)
    return {
        "steps": [steps[0], steps[-1]],
        "windows": len(steps),
        "noise": noise,
        "noise_from": "reference run" if reference is not None else "window-to-window spread",
        "rms_difference": rms,
        "mean_difference_last_half": mean_late,
        "agree": rms <= 1.5 * noise and abs(mean_late) < noise,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--reference", type=Path, help="RUN_A's config on RUN_A's device with its noise drawn differently")
    parser.add_argument("--key", default="loss", help="the training record's figure to compare [loss]")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    reference = train_curve(args.reference, args.key) if args.reference is not None else None
    result = compare(train_curve(args.run_a, args.key), train_curve(args.run_b, args.key), reference)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{args.key}: steps {result['steps'][0]}..{result['steps'][1]} ({result['windows']} windows), noise {result['noise']:.3f} "
            f"({result['noise_from']}), RMS difference {result['rms_difference']:.3f}, mean difference over the last half "
            f"{result['mean_difference_last_half']:+.3f}: "
            + ("agree within noise" if result["agree"] else "DIFFER")
        )
    return 0 if result["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
