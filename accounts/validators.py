"""Free text that people read (names, titles, reasons): no character that shows as something else.

Control characters (CR, LF, BEL, ESC ...) break lines and drive terminals in plain-text e-mails, CSV
files and logs; bidirectional controls (U+202E) and invisible characters (U+200B, a no-break space
that looks like a space) make one name look like another. Bulk onboarding, the User fields, the allow
list and every back-office form that takes such text use this one check.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.utils.deconstruct import deconstructible

# Letters, marks and symbols that are drawn as nothing (Hangul fillers, the braille blank, the combining
# grapheme joiner): str.isprintable() lets them through.
BLANK_CHARACTERS = "\u034f\u115f\u1160\u2800\u3164\uffa0"
_BLANK = frozenset(BLANK_CHARACTERS)


def has_hidden_characters(text: str) -> bool:
    """A control, format (bidi, zero-width), private-use, unassigned or blank character, or any separator
    but the plain space: str.isprintable() is false for all of Unicode's "Other" and "Separator" classes
    but U+0020, and it is fast enough for a million-row onboarding file."""
    return not text.isprintable() or not _BLANK.isdisjoint(text)


@deconstructible
class VisibleText:
    """A field validator: refuses text with hidden characters, naming the field."""

    code = "hidden_character"

    def __init__(self, label: str) -> None:
        self.label = label

    def __call__(self, value: str) -> None:
        if has_hidden_characters(value):
            raise ValidationError(f"{self.label} must not contain control or invisible characters", code=self.code)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VisibleText) and other.label == self.label
