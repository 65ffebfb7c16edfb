"""When two names are the same name: one definition for the database's key and every lookup."""

import unicodedata


def name_key(name: str) -> str:
    """Return a name as compared: without regard to case, surrounding spaces or Unicode composition."""
    # casefold, not lower: "STRASSE" is "Straße", and a final sigma is a sigma. Python decides, never the
    # database: SQLite's LOWER() folds ASCII only, and PostgreSQL's lower() follows its own locale.
    return unicodedata.normalize("NFC", (name or "").strip()).casefold()
