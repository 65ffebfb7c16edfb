"""What an import found, as every door shows it: the admin's preview, the job page, the command."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings

from licensing.cells import RowError


@dataclass
class ImportReport:
    """What an import found: counts of rows by outcome, every rejected cell counted, the first ones listed."""

    kind: str
    file_name: str = ""
    dry_run: bool = False
    rows_total: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    # The first settings.IMPORT_MAX_ERRORS by row; error_count counts them all.
    errors: list[RowError] = field(default_factory=list)
    error_count: int = 0
    # Row number -> outcome, kept only when asked (the admin's preview).
    row_outcomes: dict[int, str] | None = None
    job_id: int | None = None
    max_errors: int = field(default_factory=lambda: settings.IMPORT_MAX_ERRORS)

    @property
    def ok(self) -> bool:
        return self.error_count == 0

    @property
    def errors_not_listed(self) -> int:
        return self.error_count - len(self.errors)

    def add_error(self, error: RowError) -> None:
        """Count a rejected cell; keep it while it is among the first by row."""
        self.error_count += 1
        self.errors.append(error)
        # Trimmed now and then, not on every error: rows mostly come in order.
        if len(self.errors) > 2 * self.max_errors:
            self.finish()

    def add_stop(self, error: RowError) -> None:
        """Count the refusal that stopped the import, and list it first whatever its row: it says why."""
        self.error_count += 1
        self.finish()
        self.errors[:] = [error, *self.errors[: max(self.max_errors - 1, 0)]]

    def finish(self) -> None:
        """Sort the listed errors by row and keep the first settings.IMPORT_MAX_ERRORS."""
        self.errors.sort(key=lambda e: e.row or 0)
        del self.errors[self.max_errors :]

    def summary(self) -> str:
        return f"{self.rows_total} rows: {self.new} new, {self.updated} updated, {self.unchanged} unchanged"
