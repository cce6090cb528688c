"""Migration files: `<14-digit UTC timestamp>_<verb>_<object>.sql`, lowercase,
versions unique and strictly increasing, named verb first.

`supabase db push` compares versions as text and silently skips files whose
names do not match its pattern, so a malformed name is a migration that never
runs.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

MIGRATIONS = Path(__file__).resolve().parents[2] / "supabase" / "migrations"
NAME = re.compile(r"^(\d{14})_([a-z0-9]+(?:_[a-z0-9]+)+)\.sql$")
# The first word says what the migration does to the schema.
VERBS = {
    "add",
    "adopt",
    "alter",
    "backfill",
    "change",
    "create",
    "disable",
    "drop",
    "enable",
    "fix",
    "grant",
    "index",
    "move",
    "remove",
    "rename",
    "replace",
    "revoke",
    "schedule",
    "seed",
    "split",
    "unschedule",
    "update",
    "widen",
}


def names() -> list[str]:
    return sorted(p.name for p in MIGRATIONS.iterdir())


def parsed() -> list[tuple[str, str]]:
    """(version, name words) of every well-named migration, in file order."""
    matches = [NAME.match(n) for n in names()]
    return [(m.group(1), m.group(2)) for m in matches if m]


def test_every_file_is_a_well_named_migration() -> None:
    assert names(), "no migrations found"
    bad = [n for n in names() if not NAME.match(n)]
    assert bad == [], f"not <14 digits>_<verb>_<object>.sql (lowercase): {bad}"


def test_versions_are_utc_timestamps_unique_and_increasing() -> None:
    versions = [version for version, _ in parsed()]
    for version in versions:
        datetime.strptime(version, "%Y%m%d%H%M%S")  # raises on a non-date
    assert len(set(versions)) == len(versions), "duplicate versions"
    assert all(a < b for a, b in zip(versions, versions[1:], strict=False))


def test_names_start_with_a_verb() -> None:
    unknown = {v: words for v, words in parsed() if words.split("_")[0] not in VERBS}
    assert unknown == {}, (
        "start the name with what it does (add, create, fix, ...), or add the verb to VERBS"
    )
