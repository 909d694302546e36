"""English sentences for the text workload.

Real sentences come from two Debian packages that ship plain English prose:
the reStructuredText sources of the Python documentation (``python3.11-doc``)
and the fortune cookie files (``fortunes``). When neither is available a
seeded word model makes grammatical-looking sentences instead, so the
benchmark still runs anywhere.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np

MIN_CHARS = 40
MAX_CHARS = 150

_DOC_ROOTS = (Path("/usr/share/doc/python3.11/html/_sources"),)
_FORTUNE_ROOT = Path("/usr/share/games/fortunes")
# Collections left out: pictures rather than prose, text that is not English,
# and a few whose jokes are not worth shipping in benchmark data.
_FORTUNE_SKIP = {"ascii-art", "art", "translate-me", "ethnic", "men-women", "drugs", "politics"}

_DEBIAN_PACKAGES = ("python3.11-doc", "fortunes")


def _doc_files() -> list[Path]:
    files: list[Path] = []
    for root in _DOC_ROOTS:
        if root.is_dir():
            files.extend(sorted(root.rglob("*.txt")))
            files.extend(sorted(root.rglob("*.txt.gz")))
    return files


def _fortune_files() -> list[Path]:
    if not _FORTUNE_ROOT.is_dir():
        return []
    # The collections are the files without a suffix; ``.dat`` files are
    # binary indexes and ``.u8`` files are links to the same text.
    return sorted(
        p
        for p in _FORTUNE_ROOT.iterdir()
        if p.is_file() and "." not in p.name and p.name not in _FORTUNE_SKIP
    )


def debian_text_available() -> bool:
    """Return True if at least one of the real-text sources is installed."""
    return bool(_doc_files() or _fortune_files())


def ensure_debian_text(timeout: float = 120.0) -> bool:
    """Install the Debian packages holding real English text, if possible.

    Nothing is attempted when the text is already there, when not running as
    root, or when ``apt-get`` is missing. Failures are ignored: the caller
    falls back on generated sentences.

    Parameters
    ----------
    timeout : float
        Upper bound in seconds for each ``apt-get`` call.

    Returns
    -------
    bool
        Whether real text is available afterwards.
    """
    if _doc_files() and _fortune_files():
        return True
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return debian_text_available()
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-qq", *_DEBIAN_PACKAGES]
    # A fresh machine may have no package lists yet; refresh them only when
    # the plain install fails, since an update costs several seconds.
    for cmd in (install, ["apt-get", "update", "-qq"], install):
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired):
            break
        if cmd is install and done.returncode == 0:
            break
    return debian_text_available()


# --- reStructuredText clean-up -------------------------------------------

_ROLE = re.compile(r":[\w.+-]+(?::[\w.+-]+)*:`([^`]*)`")
_LITERAL = re.compile(r"``([^`]*)``")
_LINK = re.compile(r"`([^`<]*?)\s*(?:<[^>]*>)?`__?")
_STRONG = re.compile(r"\*\*([^*]+)\*\*")
_EMPH = re.compile(r"\*([^*\s][^*]*)\*")
_FOOTNOTE = re.compile(r"\s*\[(?:#\w*|\d+|\*)\]_")
_UNDERLINE = re.compile(r"^\s*([=\-~^\"'`#*+.:_])\1{2,}\s*$")
_SPACES = re.compile(r"\s+")
# A sentence ends at . ! or ? followed by space and a capital letter or quote.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(]?[A-Z])")
# Characters that only survive in sentences whose markup was not removed, or
# in code, tables and pictures.
_REJECT = re.compile(r"[`*|<>={}\[\]\\~^@#]|::|\.\.\s*$|\s-{2,}|_{2,}|\t")
_WORD = re.compile(r"[A-Za-z][a-z']+")


def _role_text(match: re.Match[str]) -> str:
    text = match.group(1)
    if "<" in text:  # :ref:`title <target>` shows the title
        text = text.split("<", 1)[0].strip()
    if text.startswith(("~", "!")):  # ~a.b.c shows only c
        text = text[1:].rsplit(".", 1)[-1]
    return text


def _strip_inline(text: str) -> str:
    text = _ROLE.sub(_role_text, text)
    text = _LITERAL.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _STRONG.sub(r"\1", text)
    text = _EMPH.sub(r"\1", text)
    return _FOOTNOTE.sub("", text)


def _blocks(lines: list[str]) -> Iterator[list[str]]:
    block: list[str] = []
    for line in lines:
        if line.strip():
            block.append(line)
        elif block:
            yield block
            block = []
    if block:
        yield block


def _rst_paragraphs(text: str) -> Iterator[str]:
    """Yield prose paragraphs of a reST source, markup removed."""
    literal_indent = None  # indentation of the paragraph that opened a ``::`` block
    for block in _blocks(text.splitlines()):
        indent = len(block[0]) - len(block[0].lstrip())
        if literal_indent is not None:
            if indent > literal_indent:
                continue  # still inside a literal (code) block
            literal_indent = None
        first = block[0].strip()
        if block[-1].rstrip().endswith("::"):
            literal_indent = indent
        # Directives, field lists, doctests, tables, lists and titles.
        if first.startswith(("..", ":", ">>>", "|", "+", "*", "-", "#", "=")):
            continue
        if not first[:1].isupper() or any(_UNDERLINE.match(line) for line in block):
            continue
        yield _strip_inline(" ".join(line.strip() for line in block))


def _fortune_paragraphs(text: str) -> Iterator[str]:
    for entry in text.split("\n%\n"):
        lines = [
            line.strip()
            for line in entry.splitlines()
            # Attributions ("-- Somebody") and indented verse or dialogue.
            if line.strip() and not line.lstrip().startswith("--") and not line.startswith("\t")
        ]
        if lines:
            yield " ".join(lines)


def _sentences(paragraph: str) -> Iterator[str]:
    for sentence in _SENTENCE_END.split(_SPACES.sub(" ", paragraph).strip()):
        if not MIN_CHARS <= len(sentence) <= MAX_CHARS:
            continue
        if not sentence[:1].isupper() or sentence[-1] not in ".!?":
            continue
        if _REJECT.search(sentence) or len(_WORD.findall(sentence)) < 6:
            continue
        yield sentence


def _read(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace")


@lru_cache(maxsize=1)
def real_sentences() -> tuple[tuple[str, ...], str]:
    """Return the unique real sentences found on this machine.

    Returns
    -------
    sentences : tuple of str
        Unique sentences in a fixed order (sorted), empty if no source exists.
    origin : str
        Names of the packages the sentences came from.
    """
    found: set[str] = set()
    origins = []
    docs = _doc_files()
    for path in docs:
        for paragraph in _rst_paragraphs(_read(path)):
            found.update(_sentences(paragraph))
    if docs:
        origins.append("python3.11-doc")
    before = len(found)
    for path in _fortune_files():
        for paragraph in _fortune_paragraphs(_read(path)):
            found.update(_sentences(paragraph))
    if len(found) > before:
        origins.append("fortunes")
    # Sorting makes the pool, and so every sample drawn from it, independent
    # of file-system iteration order.
    return tuple(sorted(found)), " + ".join(origins)


# --- fallback word model ----------------------------------------------------

_DET = ("the", "a", "every", "this", "that", "one", "some", "no")
_ADJ = (
    "small quiet large old new bright dark simple careful strange early late "
    "final open closed empty full slow quick cold warm clever patient busy"
).split()
_NOUN = (
    "file reader writer table record process worker buffer system river city "
    "garden window teacher student letter question answer market engine road "
    "storm village painter machine library program network signal kitchen"
).split()
_VERB = (
    "reads writes opens closes finds keeps sends carries follows watches "
    "builds checks moves holds answers changes measures describes returns"
).split()
_PREP = ("in", "on", "near", "behind", "under", "after", "before", "with", "without", "across")
_LINK_WORDS = (", and", ", but", " because", " while", " until", ", so")


def _noun_phrase(rng: np.random.Generator) -> str:
    words = [_DET[rng.integers(len(_DET))]]
    if rng.random() < 0.6:
        words.append(_ADJ[rng.integers(len(_ADJ))])
    words.append(_NOUN[rng.integers(len(_NOUN))])
    return " ".join(words)


def _clause(rng: np.random.Generator) -> str:
    parts = [_noun_phrase(rng), _VERB[rng.integers(len(_VERB))], _noun_phrase(rng)]
    if rng.random() < 0.5:
        parts += [_PREP[rng.integers(len(_PREP))], _noun_phrase(rng)]
    return " ".join(parts)


def generated_sentences(count: int, seed: int = 0) -> tuple[str, ...]:
    """Make up to ``count`` unique sentences from a small seeded word model.

    Parameters
    ----------
    count : int
        Number of sentences wanted.
    seed : int
        Seed of the random generator; equal seeds give equal sentences.

    Returns
    -------
    tuple of str
        Unique sentences of ``MIN_CHARS`` to ``MAX_CHARS`` characters.
    """
    rng = np.random.default_rng(seed)
    found: dict[str, None] = {}  # insertion-ordered set
    attempts = 0
    while len(found) < count and attempts < 20 * count:
        attempts += 1
        text = _clause(rng)
        while len(text) < MIN_CHARS or (len(text) < 90 and rng.random() < 0.3):
            text += _LINK_WORDS[rng.integers(len(_LINK_WORDS))] + " " + _clause(rng)
        if len(text) <= MAX_CHARS:
            found[text[0].upper() + text[1:] + "."] = None
    return tuple(found)
