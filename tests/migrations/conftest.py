"""The database built from the declarative schema (supabase/schemas), and the one assertion
that compares another database's catalog with it (llm_limits.testing.schemas)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llm_limits.local import localstack
from llm_limits.testing import schemas
from tests.conftest import create_database, drop_database

REPO = Path(__file__).resolve().parents[2]
FILES_LABEL = "supabase/schemas"


@pytest.fixture(scope="session")
def schema_files_url() -> Iterator[str]:
    """A database bootstrapped like a hosted project, then built from supabase/schemas only."""
    url = create_database(template=None, prefix="schemas")
    try:
        localstack.bootstrap(url)
        try:
            schemas.build(url, REPO)
        except schemas.SchemaBuildError as exc:
            pytest.fail(str(exc))
        yield url
    finally:
        drop_database(url)


def assert_same_catalog(
    url: str, what: str, schema_files_url: str, save_to: Path, rows: bool = False
) -> None:
    """The database at ``url`` (``what``: how it was built) has the catalog of the schema files.

    On a mismatch the message names every object that differs and shows both definitions
    (a unified diff: ``-`` lines from supabase/schemas, ``+`` lines from ``what``); both
    full catalogs are saved under ``save_to``.
    """
    want = schemas.catalog(schema_files_url, rows=rows)
    got = schemas.catalog(url, rows=rows)
    report = schemas.differences(want, got, FILES_LABEL, what)
    if not report:
        return
    save_to.mkdir(parents=True, exist_ok=True)
    (save_to / "from-schemas.txt").write_text(schemas.render(want))
    (save_to / "from-migrations.txt").write_text(schemas.render(got))
    pytest.fail(
        f"{what} differs from {FILES_LABEL} in {len(report)} object(s).\n"
        f"supabase/schemas holds the current definition of every object, and the migrations\n"
        f"must build exactly that. If the migration is right, bring the schema file that\n"
        f"defines the object up to date (supabase/schemas/README.md says which file holds\n"
        f"what); if the schema file is right, the migration is missing or wrong.\n"
        f"Full catalogs: {save_to}/from-schemas.txt and {save_to}/from-migrations.txt\n\n"
        + "\n\n".join(report),
        pytrace=False,
    )
