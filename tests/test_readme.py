"""The README's examples, run as written and in order on a fresh copy of the repository, as a new
user would type them after the quickstart.

Each ```bash block is run line by line (a line ending in a backslash continues); each ```python
block is run as one script. Left out, each for a stated reason: the installs of the two
commands (this suite runs inside that install; their last step, the quickstart, is run), the
test command (this suite), commands that need the Penn Treebank files (``--data-dir``),
which the tests never depend on, and the two that reach the Hugging Face hub (``seqvae push``,
``hf://``), which test_export.py runs against an offline stand-in for it.

The walk runs as two chains, each in the README's order, so that two test processes share it:
the quickstart and every example that uses its run (``runs/quickstart``), and the examples that
train runs of their own, which need only the corpus the quickstart writes (written here by the
quickstart's own function first, at a tenth of its default size: these examples are asserted to
run, and they run the same code on 1,000 training sentences (and 100 held out) as on 10,000).
Every example runs in exactly one chain.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
LEFT_OUT = {
    "python -m pytest": "the test command: this suite",
    "--data-dir": "needs the Penn Treebank files, which tests never depend on",
    "seqvae push": "uploads to the Hugging Face hub; test_export.py pushes to an offline stand-in for it",
    "hf://": "downloads from the Hugging Face hub; test_export.py loads from an offline stand-in for it",
}


def readme_examples(text: str) -> list[tuple[str, str]]:
    """(kind, code) for every example of the README in order: ("bash", one command line) or
    ("python", a whole block); installs are cut to the command they end with."""
    examples = []
    for kind, body in FENCE.findall(text):
        if kind == "python":
            examples.append(("python", body))
        elif kind == "bash":
            for line in body.replace("\\\n", " ").splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                if "pip install" in line:  # the install of the two commands: run what it ends with
                    line = line.rsplit("&&", 1)[-1].strip()
                if any(marker in line for marker in LEFT_OUT):
                    continue
                examples.append(("bash", line))
    return examples


SECOND_CHAIN_CORPUS = 1000
"""Training sentences of the corpus the second chain's examples train on (the quickstart's --corpus-size)."""
OWN_RUNS = ("seqvae train", "torchrun", "runs/mine")
"""A bash example with one of these trains (or uses) a run of its own; so does every python block."""


def chains(examples: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(the quickstart and the examples on its run, the examples that train runs of their own)."""
    own = [(kind, code) for kind, code in examples if kind == "python" or any(marker in code for marker in OWN_RUNS)]
    return [example for example in examples if example not in own], own


def test_the_examples_are_found_and_only_the_stated_ones_left_out():
    examples = readme_examples((REPO / "README.md").read_text(encoding="utf-8"))
    commands = [code for kind, code in examples if kind == "bash"]
    assert commands[0] == "python recipes/quickstart/run.py"  # the first of the two commands
    assert sum(kind == "python" for kind, _ in examples) >= 2 and len(commands) >= 15
    assert not any("pip install" in code or "pytest" in code for code in commands)
    quickstart, own = chains(examples)
    assert quickstart[0] == ("bash", "python recipes/quickstart/run.py") and len(quickstart) + len(own) == len(examples)
    assert not any("runs/quickstart" in code for _, code in own)  # the second chain needs only the corpus


def _fresh_copy(destination: Path) -> Path:
    """The repository's tracked files (a fresh clone's content), or the tree without runs and
    environments where there is no git checkout."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
        files = [name for name in listed.decode().split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        files = None
    if files is None:
        ignore = shutil.ignore_patterns(".git", ".venv", "runs", "__pycache__", "*.egg-info")
        shutil.copytree(REPO, destination, ignore=ignore)
        return destination
    for name in files:
        if (REPO / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, destination / name)
    return destination


def _walk(clone: Path, examples: list[tuple[str, str]]) -> None:
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for kind, code in examples:
        command = ["bash", "-c", code] if kind == "bash" else [sys.executable, "-c", code]
        done = subprocess.run(command, cwd=clone, env=environment, capture_output=True, text=True, timeout=900)
        report = f"README example failed (exit {done.returncode}):\n{code}\n--- stderr ---\n{done.stderr[-3000:]}"
        assert done.returncode == 0, report
        assert "Traceback" not in done.stderr, report
        if code.startswith("seqvae sample runs/quickstart -n 1000"):  # the pipe into head ends quietly
            assert len(done.stdout.splitlines()) == 3, report


def test_every_readme_example_runs_as_written_in_order(tmp_path):
    """The quickstart, then every example on its run."""
    clone = _fresh_copy(tmp_path / "seqvae")
    _walk(clone, chains(readme_examples((clone / "README.md").read_text(encoding="utf-8")))[0])


def test_every_readme_example_with_a_run_of_its_own_runs_as_written_in_order(tmp_path, monkeypatch):
    """The examples that train runs of their own, on the corpus the quickstart writes."""
    clone = _fresh_copy(tmp_path / "seqvae")
    specification = importlib.util.spec_from_file_location("quickstart_run", clone / "recipes/quickstart/run.py")
    quickstart = importlib.util.module_from_spec(specification)
    specification.loader.exec_module(quickstart)
    monkeypatch.chdir(clone)  # the config's paths are taken from the current directory, as for the user
    quickstart.write_quickstart_corpus(quickstart.load_config(quickstart.CONFIG), corpus_size=SECOND_CHAIN_CORPUS)
    _walk(clone, chains(readme_examples((clone / "README.md").read_text(encoding="utf-8")))[1])
