"""Checks on a rewrite against its original: length ratio, lost code blocks, lost equations.

The rewrite prompts say "keep code blocks, equations ... exactly as provided"; a rewrite is
flagged when a fenced code block's body or an equation of the original does not appear in the
rewrite (compared with runs of whitespace collapsed, so re-wrapping alone is not a loss).
Equations: $$...$$, \\[...\\], \\(...\\), and $...$ spans whose body holds a math character
(=, ^, _, \\, +, <, >) so that prices like "$5 and $10" are not taken for math.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_FENCE = re.compile(r"```[^\n`]*\n(.*?)```", re.DOTALL)
_DISPLAY = re.compile(r"\$\$(.+?)\$\$|\\\[(.+?)\\\]|\\\((.+?)\\\)", re.DOTALL)
_INLINE = re.compile(r"(?<![\\$])\$([^$\n]+?)\$(?!\$)")
_MATHY = re.compile(r"[=^_\\+<>]")


def _squash(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip()


def code_blocks(text: str) -> list[str]:
    """Bodies of ``` fenced blocks (language tag dropped)."""
    return [m.group(1) for m in _FENCE.finditer(text) if m.group(1).strip()]


def equations(text: str) -> list[str]:
    """Display and inline math bodies."""
    no_code = _FENCE.sub(" ", text)
    out = [next(g for g in m.groups() if g is not None) for m in _DISPLAY.finditer(no_code)]
    rest = _DISPLAY.sub(" ", no_code)
    out += [m.group(1) for m in _INLINE.finditer(rest) if _MATHY.search(m.group(1))]
    return [e for e in out if e.strip()]


@dataclass(frozen=True)
class RewriteCheck:
    len_ratio: float          # len(rewrite) / len(original), characters
    lost_code_blocks: int     # code blocks of the original missing from the rewrite
    lost_equations: int

    @property
    def flagged(self) -> bool:
        return self.lost_code_blocks > 0 or self.lost_equations > 0


def check_rewrite(original: str, rewrite: str) -> RewriteCheck:
    flat = _squash(rewrite)
    lost_code = sum(_squash(b) not in flat for b in code_blocks(original))
    lost_eq = sum(_squash(e) not in flat for e in equations(original))
    ratio = len(rewrite) / len(original) if original else float("inf") if rewrite else 1.0
    return RewriteCheck(ratio, lost_code, lost_eq)
