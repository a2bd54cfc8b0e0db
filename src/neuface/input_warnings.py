"""Structured warnings about partial inputs: a sequence that was processed, but not from all of its input.

The frames stage can keep going with less than the sheet promised — a truncated video whose first frames decode,
views of unequal length trimmed to the shortest, views absent from the sheet, a view that failed and was dropped
— and the crops stage drops a view in which no face was ever detected. Each such event becomes one **coded
warning** in the stage status (:attr:`neuface.status.StageStatus.warnings`), a short string
``kind:view[:detail]``:

======================  ===============================================  =================================
kind                    meaning                                          detail
======================  ===============================================  =================================
``truncated_decode``    decoding stopped before the end of the video     ``decoded/expected`` frames
                        (the frames that decoded are kept)               (``decoded/?`` when unknown)
``trimmed_views``       the view was longer than the shortest view and   ``had->kept`` frames
                        was cut to the common length
``missing_views``       the view exists for the sequence's peers in the  (none)
                        sheet but not for this sequence
``dropped_view``        the view failed (unreadable video, no face) and  the reason, one short line
                        the sequence went on without it
======================  ===============================================  =================================

e.g. ``truncated_decode:front:75/270``, ``trimmed_views:left:24->12``, ``missing_views:right``,
``dropped_view:top:no face detected``. Every later stage carries its upstream warnings
(:func:`neuface.status.carry_warnings`), the filter writes them to the manifest's ``warnings`` column and judges
them with ``partial_inputs: flag | reject``, and ``neuface pack`` stores them as the ``warnings`` attribute of
each packed sequence. Other warnings (prose, e.g. ``view front: face found in 10/20 frames``) are not coded and
are not picked up by :func:`input_warnings`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

TRUNCATED_DECODE = "truncated_decode"
TRIMMED_VIEWS = "trimmed_views"
MISSING_VIEWS = "missing_views"
DROPPED_VIEW = "dropped_view"
KINDS = (TRUNCATED_DECODE, TRIMMED_VIEWS, MISSING_VIEWS, DROPPED_VIEW)

#: Longest detail kept (a dropped view's reason can be a long decoder message; the full one is in the details).
MAX_DETAIL = 120
_UNSAFE = re.compile(r"[;\t\r\n]+")


@dataclass(frozen=True)
class InputWarning:
    """One partial-input event: ``kind`` (one of :data:`KINDS`), the ``view`` concerned, a short ``detail``."""

    kind: str
    view: str
    detail: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown input warning kind {self.kind!r}; one of {', '.join(KINDS)}")
        object.__setattr__(self, "view", _clean(self.view).replace(":", "_"))
        detail = _clean(self.detail)
        if len(detail) > MAX_DETAIL:
            detail = detail[: MAX_DETAIL - 1] + "…"
        object.__setattr__(self, "detail", detail)

    @property
    def code(self) -> str:
        """``kind:view[:detail]`` (no ``;``, tab or newline: safe in a TSV cell and in a ``;``-joined list)."""
        return f"{self.kind}:{self.view}" + (f":{self.detail}" if self.detail else "")

    @classmethod
    def parse(cls, text: str) -> InputWarning | None:
        """The warning coded in ``text``, or None when ``text`` is not a coded partial-input warning."""
        kind, sep, rest = str(text).partition(":")
        if kind not in KINDS or not sep or not rest:
            return None
        view, _, detail = rest.partition(":")
        return cls(kind, view, detail)

    def __str__(self) -> str:
        return self.code


def truncated_decode(view: str, decoded: int, expected: int | None) -> InputWarning:
    """``truncated_decode:<view>:<decoded>/<expected>`` (``?`` for an unknown expected count)."""
    return InputWarning(TRUNCATED_DECODE, view, f"{decoded}/{expected if expected else '?'}")


def trimmed_view(view: str, had: int, kept: int) -> InputWarning:
    """``trimmed_views:<view>:<had>-><kept>``."""
    return InputWarning(TRIMMED_VIEWS, view, f"{had}->{kept}")


def missing_view(view: str) -> InputWarning:
    """``missing_views:<view>``."""
    return InputWarning(MISSING_VIEWS, view)


def dropped_view(view: str, reason: str) -> InputWarning:
    """``dropped_view:<view>:<reason>`` (the reason cut to :data:`MAX_DETAIL` characters)."""
    return InputWarning(DROPPED_VIEW, view, reason)


def input_warnings(warnings: Iterable[str]) -> list[str]:
    """The coded partial-input warnings among ``warnings`` (any stage's warning strings), in order, once each."""
    seen: dict[str, None] = {}
    for text in warnings:
        parsed = InputWarning.parse(text)
        if parsed is not None:
            seen.setdefault(parsed.code, None)
    return list(seen)


def split_codes(cell: str) -> list[str]:
    """A manifest ``warnings`` cell (``;``-joined codes, empty for none) as a list."""
    return [c for c in (part.strip() for part in str(cell).split(";")) if c]


def _clean(text: str) -> str:
    return " ".join(_UNSAFE.sub(", ", str(text)).split())


__all__ = [
    "DROPPED_VIEW",
    "KINDS",
    "MISSING_VIEWS",
    "TRIMMED_VIEWS",
    "TRUNCATED_DECODE",
    "InputWarning",
    "dropped_view",
    "input_warnings",
    "missing_view",
    "split_codes",
    "trimmed_view",
    "truncated_decode",
]
