from __future__ import annotations

from backupd.counters import SqlInsertCounter, parse_fact_lines

OLD = (
    b"CREATE TABLE `t` (\n  `id` int\n);\n"
    b"CREATE TABLE `empty``one` (\n  `id` int\n);\n"
    b"INSERT INTO `t` VALUES (1,'a'),(2,'x),(y'),(3,'it\\'s ),( here');\n"
    b"INSERT INTO `t` VALUES (4,NULL);\n"
)
NEW = (
    b"CREATE TABLE `t` (\n  `id` int\n);\n"
    b"INSERT INTO `t` VALUES\n(1,'a'),\n(2,'x),(y'),\n(3,'new\\nline');\n"
    b"INSERT INTO `u` VALUES\n(1,0x00FF);\n"
)


def feed_in_pieces(data: bytes, size: int) -> dict[str, object]:
    counter = SqlInsertCounter()
    for i in range(0, len(data), size):
        counter.feed(data[i : i + size])
    return counter.facts()


def test_counts_rows_in_one_line_extended_inserts_whatever_the_chunking() -> None:
    for size in (1, 7, 4096):
        assert feed_in_pieces(OLD, size) == {"rows": {"empty`one": 0, "t": 4}}


def test_counts_rows_in_one_tuple_per_line_inserts() -> None:
    for size in (1, 5, 4096):
        assert feed_in_pieces(NEW, size) == {"rows": {"t": 3, "u": 1}}


def test_fact_lines_from_remote_stderr() -> None:
    facts = parse_fact_lines(
        ["backupd-fact rows 12 events", "backupd-fact rows 0 odd name", "backupd-fact bytes 4096"]
    )
    assert facts == {"rows": {"events": 12, "odd name": 0}, "bytes": 4096}
