"""The configuration reference (docs/config.md), generated from seqvae/config.py itself: every
section's dataclass, each field's type, default, allowed names and the docstring under it.

    python -m seqvae.config_reference            # print it
    python -m seqvae.config_reference --write    # rewrite docs/config.md

A test compares docs/config.md with this output, so the reference cannot drift from the code.
"""

from __future__ import annotations

import ast
import dataclasses
import sys
import typing
from pathlib import Path

from seqvae import config as config_module
from seqvae.config import CHOICES, SECTIONS

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def _field_docstrings() -> dict[str, dict[str, str]]:
    """{class name: {field: the string literal right under it}} from config.py's source."""
    tree = ast.parse(Path(config_module.__file__).read_text(encoding="utf-8"))
    found: dict[str, dict[str, str]] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        docs: dict[str, str] = {}
        body = node.body
        for item, following in zip(body, body[1:] + [None]):
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant) and isinstance(following.value.value, str):
                    docs[item.target.id] = " ".join(following.value.value.split()).replace("``", "`")
        found[node.name] = docs
    return found


def _type_name(annotation) -> str:
    if typing.get_origin(annotation) is tuple:
        return f"list of {typing.get_args(annotation)[0].__name__}"
    return getattr(annotation, "__name__", str(annotation))


def _value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    return repr(value)


def render() -> str:
    """docs/config.md as text."""
    docs = _field_docstrings()
    lines = [
        "# Configuration reference",
        "",
        "Generated from `seqvae/config.py` by `python -m seqvae.config_reference --write`; a test keeps it",
        "in step with the code. A config file is TOML with these sections; every key has the default",
        "shown, so a file names only what differs, and any key can be overridden on the command line as",
        "`section.key=value`. Relative paths (`data.train`, `data.valid`, `data.test`,",
        "`train.init_from`) are taken from the current directory.",
        "",
    ]
    for name, section in SECTIONS.items():
        hints = typing.get_type_hints(section)
        lines += [f"## `[{name}]`", "", " ".join((section.__doc__ or "").split()).replace("``", "`"), ""]
        lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for field in dataclasses.fields(section):
            default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
            meaning = docs.get(section.__name__, {}).get(field.name, "")
            choices = CHOICES.get(f"{name}.{field.name}")
            if choices:
                meaning = f"{meaning} Choices: {', '.join(f'`{c}`' for c in choices)}.".strip()
            meaning = meaning.replace("|", "\\|")
            lines.append(f"| `{field.name}` | {_type_name(hints[field.name])} | `{_value(default)}` | {meaning} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = render()
    if "--write" in argv:
        REFERENCE.parent.mkdir(parents=True, exist_ok=True)
        REFERENCE.write_text(text, encoding="utf-8")
        print(f"wrote {REFERENCE}")
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
