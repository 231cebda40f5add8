"""Provenance tables: the record comes back as written, and the rows come back whole."""

from __future__ import annotations

import pandas as pd

from radsynth.core.tables import read_table, read_table_provenance, write_table


def test_a_hash_sign_in_a_field_survives_the_round_trip(tmp_path):
    frame = pd.DataFrame({"image": ["a#1.png", "b.png"], "note": ["# not a comment", "x"]})
    out = tmp_path / "table.csv"
    write_table(frame, out, provenance={"radsynth_version": "0.1.0", "config_hash": "abc"})
    assert out.read_text().splitlines()[:3] == [
        "# radsynth_version: 0.1.0",
        "# config_hash: abc",
        "image,note",
    ]
    back = read_table(out)
    assert back["image"].tolist() == ["a#1.png", "b.png"]
    assert back["note"].tolist() == ["# not a comment", "x"]
    assert read_table_provenance(out) == {"radsynth_version": "0.1.0", "config_hash": "abc"}


def test_a_table_without_provenance_reads_from_its_header(tmp_path):
    out = tmp_path / "plain.csv"
    out.write_text("a,b\n1,2\n")
    assert read_table(out).to_dict("list") == {"a": [1], "b": [2]}
    assert read_table_provenance(out) == {}
