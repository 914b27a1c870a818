"""The one rule for cells of the CSV files this site writes (contacts, reports, recipients)
and reads back (contact imports): formula-safe, and otherwise unchanged.

A cell a spreadsheet would read as a formula (CSV injection), or that starts with `'`, is
written with a leading `'`; nothing else changes, numbers included (`'-1`). The import undoes
exactly this (csv_cell_unescape): a file exported and imported again holds the same values.
Why each character: docs/REPORTS.md (Downloads).
"""

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_ESCAPED_STARTS = (*FORMULA_STARTS, "'")


def csv_cell_escape(text: str) -> str:
    """`text` as written to a CSV cell."""
    return "'" + text if text.startswith(_ESCAPED_STARTS) else text


def csv_cell_unescape(cell: str) -> str:
    """The value a CSV cell written by csv_cell_escape holds."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(_ESCAPED_STARTS) else cell
