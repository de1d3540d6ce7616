"""Write a tokenised corpus back as raw text, as people type it: punctuation and contractions
joined to their words, the first letter of the sentence capitalised.

    python recipes/text/detokenize.py IN.txt OUT.txt [--no-capitalize]

Used to try recipes/text/run.py on untokenised text made from corpora whose tokenised form we
know (the embedded corpus, PTB), e.g. "the cat 's toy is n't here ." becomes "The cat's toy isn't
here.". Markers such as PTB's ``<unk>`` and ``N`` are kept as they are.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

_JOIN_LEFT = re.compile(r" ([.,;:!?%)\]}]|'s|'re|'ve|'ll|'d|'m|n't)(?= |$)")
_JOIN_RIGHT = re.compile(r"(^| )([$(\[{]) ")


def detokenize(sentence: str, *, capitalize: bool = True) -> str:
    """One tokenised sentence as raw text."""
    text = " ".join(sentence.split())
    text = _JOIN_LEFT.sub(r"\1", text)
    text = _JOIN_LEFT.sub(r"\1", text)  # a second pass joins runs such as "n't ."
    text = _JOIN_RIGHT.sub(r"\1\2", text)
    if capitalize and text[:1].isalpha():
        text = text[0].upper() + text[1:]
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--no-capitalize", dest="capitalize", action="store_false")
    args = parser.parse_args(argv)
    source, target = Path(args.input), Path(args.output)
    if not source.is_file():
        print(f"detokenize: error: {source}: file not found", file=sys.stderr)
        return 2
    if target.exists():
        print(f"detokenize: error: {target}: exists; choose a new output path", file=sys.stderr)
        return 2
    lines = source.read_text(encoding="utf-8").splitlines()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("".join(detokenize(line, capitalize=args.capitalize) + "\n" for line in lines if line.strip()),
                      encoding="utf-8")
    print(f"{target}: {len(lines)} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
