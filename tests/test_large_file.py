"""A 50 MB source file lands and stages completely, with every row accounted for."""

from pathlib import Path

import pytest

from c360_pipelines.ingest import land_batch, stage_landed_batch
from resources.warehouse import WarehouseResource
from tests.conftest import write_project

pytestmark = pytest.mark.slow

SOURCES = """
sources:
  - name: web
    path: data/web.csv
    id: id
    fields: {first_name: first, last_name: last, email: email, city: city, postal_code: zip}
"""


def test_a_50_mb_file_is_landed_and_staged_in_full(tmp_path: Path) -> None:
    path = tmp_path / "data" / "web.csv"
    path.parent.mkdir(parents=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("id,first,last,email,city,zip,notes\n")
        row = 0
        while handle.tell() < 50 * 1024 * 1024:
            row += 1
            handle.write(f'{row},Ann{row % 977},Lee{row % 1913},ann{row}@example.com,Springfield,{row % 99999:05d},'
                         f'"free text, with a comma and\na newline for row {row}"\n')
    config = write_project(tmp_path, SOURCES, {}, f"sqlite:///{tmp_path / 'w.db'}")
    warehouse = WarehouseResource(url=config.warehouse)
    warehouse.ensure_tables()
    landing = land_batch(config, config.source("web"), "data/web.csv", warehouse)
    staging = stage_landed_batch(config.source("web"), "data/web.csv", warehouse)
    assert path.stat().st_size >= 50 * 1024 * 1024
    assert landing.rows_read == row and landing.rows_unreadable == 0
    assert staging.rows_staged == row and staging.rows_quarantined == 0
    assert warehouse.count("staged_contact_point_email", {"source": "web"}) == row
