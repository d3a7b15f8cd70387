"""Generated blocks in README.md: the text between two marker comments is a copy of a report file.

A block names the file it holds, relative to the README's folder::

    <!-- results:begin reports/lmosynth-study/README_results.md -->
    ...the file's text, written by update_readme...
    <!-- results:end reports/lmosynth-study/README_results.md -->

:func:`update_readme` (``bopkd report ... --update-readme README.md``) replaces the block's text with the
file's; nothing else of the README changes. :func:`blocks` lists the blocks, so a test can check that each
equals its file.
"""

from __future__ import annotations

import re
from pathlib import Path

from bopkd.errors import BopkdError

BEGIN = "<!-- results:begin {name} -->"
END = "<!-- results:end {name} -->"
_BLOCK = re.compile(r"<!-- results:begin (\S+) -->\n(.*?)<!-- results:end \1 -->", re.DOTALL)


def blocks(text: str) -> dict[str, str]:
    """``{name: text between the markers}`` of every block (the text after the begin marker's line)."""
    return {m.group(1): m.group(2) for m in _BLOCK.finditer(text)}


def replace_block(text: str, name: str, content: str, source: str = "README.md") -> str:
    """``text`` with block ``name``'s content replaced by ``content`` (ending in one newline)."""
    found = [m for m in _BLOCK.finditer(text) if m.group(1) == name]
    if not found:
        raise BopkdError(
            f"{source}: no block {BEGIN.format(name=name)} ... {END.format(name=name)}; "
            "add that pair of lines where the results go"
        )
    if len(found) > 1:
        raise BopkdError(f"{source}: block {name} appears {len(found)} times; keep one pair of its markers")
    m = found[0]
    body = content.rstrip("\n") + "\n" if content.strip() else ""
    new = f"{BEGIN.format(name=name)}\n{body}{END.format(name=name)}"
    return text[: m.start()] + new + text[m.end() :]


def block_name(readme: Path, file: Path) -> str:
    """The name of ``file``'s block: its path relative to the README's folder, with ``/``."""
    try:
        return Path(file).resolve().relative_to(Path(readme).resolve().parent).as_posix()
    except ValueError:
        raise BopkdError(
            f"{file}: not under {Path(readme).resolve().parent}; write the report inside the README's "
            "repository (e.g. --out reports/NAME)"
        ) from None


def update_readme(readme: str | Path, file: str | Path) -> str:
    """Replace the block of ``file`` in ``readme`` by ``file``'s text; returns the block's name."""
    readme, file = Path(readme), Path(file)
    if not readme.is_file():
        raise BopkdError(
            f"{readme}: no such file; give the README to update (e.g. --update-readme README.md)"
        )
    if not file.is_file():
        raise BopkdError(f"{file}: no such file; build the report first (bopkd report RESULTS --out DIR)")
    from bopkd.utils.atomic import atomic_write_text

    name = block_name(readme, file)
    text = readme.read_text(encoding="utf-8")
    new = replace_block(text, name, file.read_text(encoding="utf-8"), str(readme))
    if new != text:
        atomic_write_text(readme, new)
    return name
