"""Loading a mariadb-dump stream elsewhere without a server: definers the target lacks,
the database's own name under --as, rows never touched, any chunking; and the one-table
filter on a name that holds a newline. (Loading for real: tests/e2e/test_field_mariadb.py.)"""

from __future__ import annotations

from jobs.mariadb_rewrite import PortableLoad
from jobs.sqlfilter import OneTableFilter

# the shapes mariadb-dump 10.11 writes (seen on a real server), trimmed
DUMP = b"""-- Host: localhost    Database: shop
DROP TABLE IF EXISTS `t`;
CREATE TABLE `t` (
  `id` int(11) NOT NULL
) ENGINE=InnoDB;
-- Dumping data for table `t`
INSERT INTO `t` VALUES
(1,'DEFINER=`reporter`@`localhost` shop.t `shop`.`t`.`id`'),
(2,'it\\'s');
DELIMITER ;;
/*!50003 CREATE*/ /*!50017 DEFINER=`reporter`@`localhost`*/ /*!50003 TRIGGER trg AFTER INSERT ON t
FOR EACH ROW INSERT INTO shop.audit VALUES (NEW.id, 'shop.t stays', "shop.t too") */;;
DELIMITER ;
-- Dumping routines for database 'shop'
DELIMITER ;;
CREATE DEFINER=`root`@`localhost` PROCEDURE `p`()
SELECT COUNT(*) FROM `shop`.`t` ;;
DELIMITER ;
-- Final view structure for view `v`
/*!50013 DEFINER=`reporter`@`localhost` SQL SECURITY DEFINER */
/*!50001 VIEW `v` AS select `shop`.`t`.`id` AS `id` from `t` */;
/*!50001 VIEW `w` AS select `shop`.`id` AS `id` from `other`.`shop` */;
"""


def rewritten(dump: bytes, new: str, tables: list[str], chunk: int) -> tuple[bytes, list[str]]:
    load = PortableLoad("shop", new, tables, lambda u, h: (u, h) == ("root", "localhost"))
    out = b"".join(load.feed(dump[i : i + chunk]) for i in range(0, len(dump), chunk))
    return out + load.end(), load.notes()


def test_missing_definers_become_the_login_and_the_database_its_new_name() -> None:
    out, notes = rewritten(DUMP, "shop copy", ["t", "audit"], len(DUMP))
    assert b"/*!50017 DEFINER=CURRENT_USER*/ /*!50003 TRIGGER trg" in out
    assert b"/*!50013 DEFINER=CURRENT_USER SQL SECURITY DEFINER */" in out
    assert b"CREATE DEFINER=`root`@`localhost` PROCEDURE" in out  # it exists there: kept
    assert b"select `shop copy`.`t`.`id` AS `id` from `t`" in out
    assert b"INSERT INTO `shop copy`.audit VALUES (NEW.id, 'shop.t stays', \"shop.t too\")" in out
    assert b"SELECT COUNT(*) FROM `shop copy`.`t` ;;" in out
    # the rows, the strings and the dump's comments are data: never rewritten
    assert b"(1,'DEFINER=`reporter`@`localhost` shop.t `shop`.`t`.`id`'),\n(2,'it\\'s');" in out
    assert b"-- Host: localhost    Database: shop\n" in out
    assert notes == [
        "2 object(s) defined by reporter@localhost (no such account here, or not one this "
        "login may name) loaded with the restoring login as definer",
        "4 reference(s) to database 'shop' renamed to 'shop copy'",
    ]
    for chunk in (1, 3, 50):
        assert rewritten(DUMP, "shop copy", ["t", "audit"], chunk) == (out, notes)


def test_a_table_named_like_the_database_keeps_its_two_part_column_names() -> None:
    out, _ = rewritten(DUMP, "other", ["t", "shop"], 9)
    assert b"select `shop`.`id` AS `id` from `other`.`shop`" in out  # table.column
    assert b"select `other`.`t`.`id` AS `id` from `t`" in out  # three parts: the database


def test_the_same_name_changes_no_names_and_existing_definers_stay() -> None:
    load = PortableLoad("shop", "shop", ["t"], lambda u, h: True)
    out = b"".join(load.feed(DUMP[i : i + 11]) for i in range(0, len(DUMP), 11)) + load.end()
    assert out == DUMP and load.notes() == []


def test_names_with_newlines_and_quotes_open_across_lines() -> None:
    dump = (
        b"/*!50013 DEFINER=`rep\norter`@`localhost` SQL SECURITY DEFINER */\n"
        b"/*!50001 VIEW `v` AS select `sh\nop`.`t`.`id` AS `id` from `t` */;\n"
    )
    load = PortableLoad("sh\nop", "n", ["t"], lambda u, h: False)
    out = b"".join(load.feed(dump[i : i + 4]) for i in range(0, len(dump), 4)) + load.end()
    assert out == (
        b"/*!50013 DEFINER=CURRENT_USER SQL SECURITY DEFINER */\n"
        b"/*!50001 VIEW `v` AS select `n`.`t`.`id` AS `id` from `t` */;\n"
    )
    assert load.notes()[0].startswith("1 object(s) defined by rep\norter@localhost")


def test_one_table_filter_follows_a_heading_continued_on_the_next_comment_line() -> None:
    dump = (
        b"/*!40101 SET NAMES utf8mb4 */;\n--\n-- Table structure for table `new\n-- line`\n"
        b"--\nCREATE TABLE `new\nline` (`id` int);\n--\n-- Dumping data for table `new\n"
        b"-- line`\n--\nINSERT INTO `new\nline` VALUES\n(1),\n(2);\n--\n"
        b"-- Table structure for table `other`\n--\nCREATE TABLE `other` (`id` int);\n"
        b"/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n"
    )
    for chunk in (1, 6, len(dump)):
        f = OneTableFilter("new\nline")
        out = b"".join(f.feed(dump[i : i + chunk]) for i in range(0, len(dump), chunk)) + f.end()
        assert f.matched
        assert b"CREATE TABLE `new\nline`" in out and b"(1),\n(2);" in out
        assert b"other" not in out and out.endswith(b"SET TIME_ZONE=@OLD_TIME_ZONE */;\n")
