"""The hostile SQL corpus itself, as the conformance kit ships it (sqladapter/testing/hostile_sql.json).

Every dialect runs the statements that apply to it in its conformance suite (the kit's
`test_hostile_statements_are_refused_and_change_nothing`: tests/test_sqlite_conformance.py and
each plugin's tests/). Here: that the corpus is well formed, that its placeholders are the ones
the kit fills in, and that each shipped dialect's suite has statements to run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from sqladapter.testing import hostile

PLACEHOLDERS = {"{outside}", "{secret}", "{secret_csv}", "{secret_json}", "{escape_link}", "{data_dir}", "{database}"}


def test_every_entry_says_what_it_is_where_it_applies_and_what_must_happen():
    entries = hostile.corpus()
    assert len(entries) >= 350
    for entry in entries:
        assert set(entry) == {"sql", "dialects", "expect", "why"}, entry
        assert entry["sql"].strip() and entry["why"].strip(), entry
        assert entry["expect"] in hostile.EXPECTATIONS, entry
        assert entry["dialects"] and set(entry["dialects"]) <= hostile.SHIPPED, entry


def test_placeholders_are_the_ones_the_kit_fills_in(tmp_path: Path):
    used = {p for entry in hostile.corpus() for p in re.findall(r"\{[a-z_]+\}", entry["sql"])}
    assert used <= PLACEHOLDERS
    outside = hostile.make_outside()
    try:
        for entry in hostile.corpus():
            rendered = hostile.render(entry["sql"], outside, tmp_path, "kitdb")
            assert not set(re.findall(r"\{[a-z_]+\}", rendered)) & PLACEHOLDERS, rendered
        assert outside.marker in outside.secret.read_text()
        assert json.loads(outside.secret_json.read_text()) == {"marker": outside.marker}
        assert outside.listing() == []
    finally:
        outside.remove()
    assert not outside.root.exists()


def test_each_shipped_dialect_has_statements_to_run_and_common_ones_are_shared():
    common = hostile.applicable(["common"])
    assert len(common) >= 40
    assert all(hostile.SHIPPED <= set(entry["dialects"]) for entry in common)
    for dialect in hostile.SHIPPED:
        own = hostile.applicable([dialect])
        assert len(own) > len(common), dialect
        assert all(dialect in entry["dialects"] for entry in own)
    # A new dialect of the SQLite family (the conformance kit's toy plugin) runs SQLite's.
    assert len(hostile.applicable(["common", "sqlite"])) == len(hostile.applicable(["sqlite"]))
