"""Text helpers shared by every wing: splitting a completion's <think> block, and making untrusted text inert."""

from __future__ import annotations


def split_think(text: str) -> tuple[str, str]:
    """(reasoning, answer) from a completion that may hold a <think> block."""
    if "</think>" in text:
        head, _, tail = text.partition("</think>")
        return head.split("<think>")[-1].strip(), tail.strip()
    if "<think>" in text:
        return text.split("<think>", 1)[1].strip(), ""
    return "", text.strip()


# -- untrusted text made inert --------------------------------------------------------------------
# Model outputs, judge replies, prompts and logs may hold terminal control sequences. Drawn raw they recolour,
# retitle or blank the terminal. Every control character becomes a visible placeholder instead (ESC as ␛, BEL
# as ␇, ...), so a sequence shows as text (`␛[31m`) and does nothing. C1 controls (0x80-0x9f) are 8-bit forms of
# ESC + a letter: 0x9b (CSI) is shown as `␛[`. Tabs are expanded; CRLF is an ordinary line end.

_PICTURES = {i: chr(0x2400 + i) for i in range(0x20)}  # U+2400 block: ␀ ␁ ... ␛ ... ␟
_PICTURES[0x7F] = "\u2421"  # ␡
_PICTURES.update({i: "\u241b" + chr(i - 0x40) for i in range(0x80, 0xA0)})  # C1: ␛ and its 7-bit letter
del _PICTURES[0x0A]  # newline stays a line break
del _PICTURES[0x09]  # tabs are expanded below
_TABLE = str.maketrans(_PICTURES)
TAB = 4


def inert(text: object, *, tab: int = TAB, oneline: bool = False) -> str:
    """`text` with every C0/C1 control character shown as a visible placeholder and tabs expanded.

    The result holds no character that a terminal acts on, only newlines (or, with oneline, not even those:
    they show as ⏎). Markup stays literal as long as the caller draws it as plain text (rich `Text`, never markup).
    """
    s = "" if text is None else str(text)
    if "\r\n" in s:
        s = s.replace("\r\n", "\n")
    s = s.translate(_TABLE)
    if "\t" in s:
        s = s.expandtabs(tab)
    if oneline and "\n" in s:
        s = s.replace("\n", "\u23ce")
    return s


def cut_middle(text: str, width: int) -> str:
    """`text` in at most `width` cells, cut in the middle (`20260211…0-snap`): both ends of a run id or a name say
    more than either end alone. Wide characters count as two cells."""
    from rich.cells import cell_len

    if width <= 0 or cell_len(text) <= width:
        return text if width > 0 else ""
    if width == 1:
        return "…"
    head_w = (width - 1 + 1) // 2
    tail_w = width - 1 - head_w
    head, tail = "", ""
    for ch in text:
        if cell_len(head + ch) > head_w:
            break
        head += ch
    for ch in reversed(text):
        if cell_len(ch + tail) > tail_w:
            break
        tail = ch + tail
    return head + "…" + tail


def cut_words(text: str, width: int) -> str:
    """`text` in at most `width` cells, cut after a whole word with `…` (never mid-word unless one word is too long)."""
    from rich.cells import cell_len

    if cell_len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    out = ""
    for word in text.split(" "):
        candidate = f"{out} {word}" if out else word
        if cell_len(candidate) > width - 1:
            break
        out = candidate
    if not out:  # one word longer than the width: cut it
        for ch in text:
            if cell_len(out + ch) > width - 1:
                break
            out += ch
    return out.rstrip(" ,;:") + "…"
