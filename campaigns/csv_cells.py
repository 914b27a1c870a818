"""The one rule for cells of the CSV files this site writes (contacts, reports, recipients)
and reads back (contact imports): formula-safe, and otherwise unchanged.

A spreadsheet opening a CSV reads a cell starting with `=`, `+`, `-` or `@` as a formula, and
a leading tab or carriage return can hide one (CSV injection): such a cell is written with a
leading `'`, which spreadsheets take as "this is text" and do not show. A cell that itself
starts with `'` gets one too, or a spreadsheet would eat its apostrophe (and an import could
not tell it from an escaped one). Nothing else is changed. Numbers follow the same rule as
text (OWASP's advice): a negative number is written `'-1`.

The import undoes exactly this (csv_cell_unescape), so a file exported here and imported
again, with or without a spreadsheet in between, holds the same values.
"""

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_ESCAPED_STARTS = (*FORMULA_STARTS, "'")


def csv_cell_escape(text: str) -> str:
    """`text` as written to a CSV cell."""
    return "'" + text if text.startswith(_ESCAPED_STARTS) else text


def csv_cell_unescape(cell: str) -> str:
    """The value a CSV cell written by csv_cell_escape holds."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(_ESCAPED_STARTS) else cell
