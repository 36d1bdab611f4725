"""Segmentation of a response into steps (PAPER.md §6.1; the rule is [unknown] in the paper).

Newline split, then the regex ``(?<=[.!?])\\s+`` inside each line, LaTeX kept together, fragments of
<= 5 characters dropped (the predecessor's filter, §13); see :func:`segment`.

>>> segment("First we add. Then $x = 1. y$ holds!\\nok")
['First we add.', 'Then $x = 1. y$ holds!']
"""
from __future__ import annotations

import re

_SENT_BOUNDARY = re.compile(r"(?<=[.!?])\s+")
# Inline / display math spans that must not be cut. Order matters: $$ before $.
# Inline $..$ follows pandoc's rule (no space inside the delimiters, no digit after the closer), so
# currency ("$5. Then $6") is not taken for math.
_MATH_SPAN = re.compile(r"\$\$.+?\$\$|\\\[.+?\\\]|\\\(.+?\\\)"
                        r"|(?<![\\$])\$(?![\s$])(?:\\.|[^$\\])+?(?<!\s)\$(?!\d)", re.S)
# Openers of display blocks that may run over several lines, with their closers.
_BLOCK_OPEN = (("$$", "$$"), ("\\[", "\\]"))
_BEGIN_ENV = re.compile(r"\\begin\{([^}]+)\}")
_ABBREVIATIONS = frozenset(
    "e.g i.e etc vs cf approx resp fig figs eq eqs no nos dr mr mrs ms prof st sec ch vol al".split()
)
_ENUMERATOR = re.compile(r"^\(?(\d{1,3}|[a-zA-Z]|[ivxIVX]{1,4})[.)]$")
_DIGITS = re.compile(r"\d+")
_MAX_BLOCK_LINES = 40


def _merge_display_blocks(lines: list[str]) -> list[str]:
    """Join lines that belong to one multi-line display-math block (``$$``, ``\\[``, ``\\begin{env}``).

    A block whose closer is not found within ``_MAX_BLOCK_LINES`` lines is left as it is.

    >>> _merge_display_blocks(["We get", "\\\\[", "x = 1", "\\\\]", "done."])
    ['We get', '\\\\[ x = 1 \\\\]', 'done.']
    """
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        closer = _open_block_closer(line)
        if closer is not None:
            for j in range(i + 1, min(len(lines), i + 1 + _MAX_BLOCK_LINES)):
                if closer in lines[j]:
                    out.append(" ".join(s.strip() for s in lines[i:j + 1] if s.strip()))
                    i = j + 1
                    break
            else:
                out.append(line)
                i += 1
            continue
        out.append(line)
        i += 1
    return out


def _open_block_closer(line: str) -> str | None:
    """The closer a line leaves open (``"$$"``, ``"\\]"``, ``"\\end{env}"``), or None."""
    stripped = _MATH_SPAN.sub("", line)  # closed spans do not count
    for opener, closer in _BLOCK_OPEN:
        if opener in stripped:
            return closer
    for m in _BEGIN_ENV.finditer(line):
        end = f"\\end{{{m.group(1)}}}"
        if end not in line[m.end():]:
            return end
    return None


def _protected_spans(line: str) -> list[tuple[int, int]]:
    spans = [m.span() for m in _MATH_SPAN.finditer(line)]
    for m in _BEGIN_ENV.finditer(line):
        end = line.find(f"\\end{{{m.group(1)}}}", m.end())
        if end >= 0:
            spans.append((m.start(), end + len(m.group(1)) + 6))
    return spans


def _allowed_split(line: str, start: int, pos: int, spans: list[tuple[int, int]]) -> bool:
    """May the line be cut at ``pos`` (start of the whitespace after [.!?])?"""
    if any(a < pos < b for a, b in spans):
        return False
    before = line[start:pos].strip()
    last = before.split()[-1] if before.split() else ""
    word = last.rstrip(".").lower()
    if last.endswith(".") and (word in _ABBREVIATIONS or re.fullmatch(r"[A-Z]", last.rstrip("."))):
        return False  # "e.g. x", "Fig. 3", initials "J. Smith"
    if _ENUMERATOR.match(before):
        return False  # list marker "1." or "(a)" at the start of a fragment
    return True


def _split_sentences(line: str) -> list[str]:
    spans = _protected_spans(line)
    pieces, start = [], 0
    for m in _SENT_BOUNDARY.finditer(line):
        if _allowed_split(line, start, m.start(), spans):
            pieces.append(line[start:m.start()])
            start = m.end()
    pieces.append(line[start:])
    return pieces


def segment(text: str, rule: str = "sentence", min_chars: int = 5, mask_digits: bool = False) -> list[str]:
    """Cut one response into steps (PAPER.md §6.1; the rule is [unknown] in the paper).

    The rule, in order:

    1. split on newlines; a display-math block (``$$..$$``, ``\\[..\\]``, ``\\begin{env}..\\end{env}``)
       that runs over several lines is first joined into one line;
    2. ``rule="sentence"``: cut each line at the regex ``(?<=[.!?])\\s+``, except inside math spans
       (``$..$``, ``$$..$$``, ``\\(..\\)``, ``\\[..\\]``, ``\\begin..\\end``), after a known
       abbreviation (e.g., i.e., Fig., Eq., vs., ...) or a single capital initial, and after a leading
       list marker ("1.", "(a)"); ``rule="line"`` keeps whole lines (the predecessor's rule, §13);
    3. strip each fragment and drop fragments of ``<= min_chars`` characters (length measured before
       masking);
    4. ``mask_digits=True`` replaces every digit run with ``"0"`` (a recorded deviation used for the
       model organism, so "Path so far: 3 hops" and "... 4 hops" share a node).

    Deterministic: the same text gives the same list.

    >>> segment("Step 1. Add them. So x = 3.5 and e.g. y = 2. Done! Ok.")
    ['Step 1.', 'Add them.', 'So x = 3.5 and e.g. y = 2.']
    >>> segment("1. Start here.\\nok.\\nWe have $a. b$ here.", rule="line")
    ['1. Start here.', 'We have $a. b$ here.']
    >>> segment("Take 12 steps, then 345 more.", mask_digits=True)
    ['Take 0 steps, then 0 more.']
    """
    if rule not in ("sentence", "line"):
        raise ValueError(f"rule must be 'sentence' or 'line', got {rule!r}")
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}; fill missing responses with ''")
    if min_chars < 0:
        raise ValueError(f"min_chars must be >= 0, got {min_chars}")
    lines = _merge_display_blocks(text.splitlines())
    out: list[str] = []
    for line in lines:
        pieces = _split_sentences(line) if rule == "sentence" else [line]
        for piece in pieces:
            piece = piece.strip()
            if len(piece) <= min_chars:
                continue
            out.append(_DIGITS.sub("0", piece) if mask_digits else piece)
    return out


__all__ = ("segment",)
