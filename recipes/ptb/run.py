"""Penn Treebank recipe: train the LSTM VAE at Li et al. 2019's sizes, then evaluate on the test set.

    python recipes/ptb/run.py --data-dir DIR [--iw-samples K] [--overwrite | --resume] [section.key=value ...]

DIR holds the Mikolov split: ptb.train.txt, ptb.valid.txt, ptb.test.txt.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm.auto import tqdm

from seqvae import SeqVAEError, load_config, load_run, train
from seqvae.allocator import keep_freed_memory
from seqvae.evaluation import format_metrics

CONFIG = Path(__file__).with_name("config.toml")
FILES = {"train": "ptb.train.txt", "valid": "ptb.valid.txt", "test": "ptb.test.txt"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--data-dir", required=True, help="folder with ptb.{train,valid,test}.txt")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    parser.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    parser.add_argument(
        "--iw-samples", type=int, default=500,
        help="K of the importance-weighted bound in the final evaluation (500 as published; 0 skips it; "
        "K = 500 on the test set takes about 8 minutes on a 2-core CPU with the adaptive output layer)",
    )
    args = parser.parse_args(argv)
    keep_freed_memory()  # long loops reuse freed memory instead of faulting in fresh pages
    try:
        data_dir = Path(args.data_dir)
        if not data_dir.is_dir():
            raise SeqVAEError(f"{data_dir}: data directory not found")
        for name in FILES.values():
            if not (data_dir / name).is_file():
                raise SeqVAEError(f"{data_dir / name}: missing (a PTB directory holds {', '.join(FILES.values())})")
        data = [f"data.{split}={data_dir / name}" for split, name in FILES.items()]
        config = load_config(CONFIG, data + args.overrides)
        result = train(config, resume=args.resume, overwrite=args.overwrite, echo=tqdm.write)
        run = load_run(result.run_dir, device=config.run.device)
        print(f"\ntrained {result.epoch} epochs, {result.step} steps in {result.seconds:.0f} s")
        for split in ("valid", "test"):
            print(f"{split} (best checkpoint):")
            for line in format_metrics(run.evaluate(split, iw_samples=args.iw_samples, progress=True)):
                print(f"  {line}")
        print("\nfive sentences decoded from z ~ N(0, I):")
        for sentence in run.sample(5, seed=config.run.seed):
            print(f"  {sentence}")
    except SeqVAEError as error:
        print(f"ptb: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
