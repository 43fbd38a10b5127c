from __future__ import annotations

from backupd.remote.counters import make_counter, parse_fact_lines


def test_fact_lines_from_remote_stderr() -> None:
    facts = parse_fact_lines(
        ["backupd-fact rows 12 events", "backupd-fact rows 0 odd name", "backupd-fact bytes 4096"]
    )
    assert facts == {"rows": {"events": 12, "odd name": 0}, "bytes": 4096}


def test_hex_named_rows_keep_any_name_and_mark_tables_outside_the_snapshot() -> None:
    tab_newline = "new\nline\tand `tick`"
    facts = parse_fact_lines(
        [
            f"backupd-fact rows-hex 300 {tab_newline.encode().hex().upper()}",
            f"backupd-fact rows-outside-hex 7 {'café'.encode().hex()}",
            "backupd-fact rows-hex 1 zz",  # not hex: ignored, never a wrong name
            "backupd-fact commit_block_ms 31",
        ]
    )
    assert facts == {
        "rows": {tab_newline: 300, "café": 7},
        "rows_outside_snapshot": ["café"],
        "commit_block_ms": 31,
    }


def test_warnings_keep_their_whole_text_in_order() -> None:
    facts = parse_fact_lines(
        [
            "backupd-fact warning view v: definer a@localhost does not exist",
            "backupd-fact warning rows not counted: no RELOAD",
        ]
    )
    assert facts == {
        "warnings": ["view v: definer a@localhost does not exist", "rows not counted: no RELOAD"]
    }


def test_no_counter_unless_one_is_named() -> None:
    assert make_counter(None) is None
