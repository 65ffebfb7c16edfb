import io

import pytest

from licensing.services import agreements_import, order_sheet_import
from licensing.sheets import open_sheet


@pytest.fixture
def import_orders():
    """Import order-sheet bytes as a person would, returning the report."""

    def run(data: bytes, *, user=None, dry_run=False, name="orders.csv"):
        return order_sheet_import(sheet=open_sheet(io.BytesIO(data), file_name=name), acting_user=user, dry_run=dry_run)

    return run


@pytest.fixture
def import_agreements():
    def run(data: bytes, *, user=None, dry_run=False, name="agreements.csv"):
        return agreements_import(sheet=open_sheet(io.BytesIO(data), file_name=name), acting_user=user, dry_run=dry_run)

    return run


@pytest.fixture(autouse=True)
def import_files_dir(settings, tmp_path):
    settings.IMPORT_FILES_DIR = str(tmp_path / "imports")
