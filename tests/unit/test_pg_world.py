"""The PostgreSQL kind's pure parts (issue 12): names reach libpq as data, the world
facts, the globals' roles, and one table's entries chosen from a real dump's table of
contents (captured from pg_restore 15 --list --verbose of a dump with an enum, a domain,
a function default, serial and identity columns, a policy and a foreign key)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from backupd.errors import RestoreError, UsageError, VerificationError
from backupd.local.process import CommandResult
from jobs.base import DatabaseRestore, slug
from jobs.pg_common import PostgresOptions, dbname_arg, split_fact_table, world_facts
from jobs.pg_restore import LARGE_OBJECT_BUDGET, PostgresRestore, single_transaction
from jobs.pg_roles import create_roles_sql, needed_roles, parse_globals, statements
from jobs.pg_toc import checkable, find_table, parse_toc, select_table

TOC = """;
; Archive created at 2026-11-29 14:55:29 UTC
;     dbname: shop k=v
;
; Selected TOC Entries:
;
3380; 0 0 ENCODING - ENCODING
3381; 0 0 STDSTRINGS - STDSTRINGS
3382; 0 0 SEARCHPATH - SEARCHPATH
3383; 1262 16384 DATABASE - shop k=v postgres
6; 2615 16421 SCHEMA - s=1 postgres
844; 1247 16388 TYPE public mood postgres
847; 1247 16394 DOMAIN public posint postgres
221; 1255 16397 FUNCTION public next_code() postgres
215; 1259 16396 SEQUENCE public codes postgres
217; 1259 16399 TABLE public people app_owner
;	depends on: 221 847 844
3384; 0 0 COMMENT public TABLE people app_owner
;	depends on: 217
3385; 0 0 ACL public TABLE people app_owner
;	depends on: 217
216; 1259 16398 SEQUENCE public people_id_seq app_owner
;	depends on: 217
3386; 0 0 SEQUENCE OWNED BY public people_id_seq app_owner
;	depends on: 216
219; 1259 16409 TABLE public tickets postgres
;	depends on: 847
218; 1259 16408 SEQUENCE public tickets_id_seq postgres
;	depends on: 219
220; 1259 16422 TABLE s=1 t|x y postgres
;	depends on: 6
3216; 2604 16402 DEFAULT public people id app_owner
;	depends on: 217 216 217
3374; 2613 16425 BLOB - 16425 postgres
3375; 2613 16426 BLOB - 16426 postgres
3376; 2613 16427 BLOB - 16427 postgres
3370; 0 16399 TABLE DATA public people app_owner
;	depends on: 217
3372; 0 16409 TABLE DATA public tickets postgres
;	depends on: 219
3373; 0 16422 TABLE DATA s=1 t|x y postgres
;	depends on: 220
3387; 0 0 SEQUENCE SET public codes postgres
;	depends on: 215
3388; 0 0 SEQUENCE SET public people_id_seq app_owner
;	depends on: 216
3389; 0 0 SEQUENCE SET public tickets_id_seq postgres
;	depends on: 218
3377; 0 0 BLOBS - BLOBS
3220; 2606 16407 CONSTRAINT public people people_pkey app_owner
;	depends on: 217
3222; 2606 16413 CONSTRAINT public tickets tickets_pkey postgres
;	depends on: 219
3218; 1259 16419 INDEX public people_m_idx app_owner
;	depends on: 217
3223; 2606 16414 FK CONSTRAINT public tickets tickets_person_fkey postgres
;	depends on: 217 219 3220
3367; 3256 16420 POLICY public people p app_owner
;	depends on: 217
3366; 0 16399 ROW SECURITY public people app_owner
;	depends on: 217
"""


def labels(entries: list[object]) -> list[str]:
    return [e.label for e in entries]  # type: ignore[attr-defined]


def test_one_table_brings_its_types_domain_function_and_what_it_owns() -> None:
    entries = parse_toc(TOC)
    people = find_table(entries, "public", "people")
    chosen = select_table(entries, people, present=())
    assert labels(chosen.entries) == [
        "encoding ENCODING",
        "stdstrings STDSTRINGS",
        "searchpath SEARCHPATH",
        "type public.mood",
        "domain public.posint",
        "function public.next_code()",
        "table public.people",
        "comment public.TABLE people",
        "acl public.TABLE people",
        "sequence public.people_id_seq",
        "sequence owned by public.people_id_seq",
        "default public.people id",
        "table data public.people",
        "sequence set public.people_id_seq",
        "constraint public.people people_pkey",
        "index public.people_m_idx",
        "policy public.people p",
        "row security public.people",
    ]
    # another table's foreign key to it is not its own: neither chosen nor reported
    assert chosen.left_out == []
    assert b"3370; 0 16399 TABLE DATA public people app_owner\n" in chosen.use_list()


def test_an_identity_table_leaves_out_its_foreign_key_and_says_so() -> None:
    entries = parse_toc(TOC)
    chosen = select_table(entries, find_table(entries, "public", "tickets"), present=())
    assert "sequence public.tickets_id_seq" in labels(chosen.entries)  # the identity
    assert "sequence set public.tickets_id_seq" in labels(chosen.entries)
    assert "table public.people" not in labels(chosen.entries)
    # pg_restore lists dependencies by id (the referenced table may come first): the
    # constraint's own table is the one its name begins with
    assert labels(chosen.left_out) == ["fk constraint public.tickets tickets_person_fkey"]


def test_a_foreign_key_between_tables_whose_names_share_a_prefix_belongs_to_its_own() -> None:
    toc = TOC.replace("TABLE public tickets postgres", "TABLE public people x postgres")
    toc = toc.replace("TABLE DATA public tickets", "TABLE DATA public people x")
    toc = toc.replace(
        "FK CONSTRAINT public tickets tickets_person_fkey", "FK CONSTRAINT public people x fk"
    )
    entries = parse_toc(toc)
    chosen = select_table(entries, find_table(entries, "public", "people x"), present=())
    assert labels(chosen.left_out) == ["fk constraint public.people x fk"]
    people = select_table(entries, find_table(entries, "public", "people"), present=())
    assert people.left_out == []


def test_what_the_target_has_is_not_restored_again() -> None:
    entries = parse_toc(TOC)
    people = find_table(entries, "public", "people")
    asked = labels(checkable(entries, people))
    assert "sequence public.people_id_seq" not in asked  # its own: dropped and made with it
    assert {"type public.mood", "domain public.posint", "sequence public.codes"} <= set(asked)
    chosen = select_table(entries, people, present={844, 221})  # mood, next_code() exist
    assert "type public.mood" not in labels(chosen.entries)
    assert "function public.next_code()" not in labels(chosen.entries)
    assert "domain public.posint" in labels(chosen.entries)


def test_a_table_whose_names_hold_syntax_is_found_exactly() -> None:
    entries = parse_toc(TOC)
    odd = find_table(entries, "s=1", "t|x\ny")  # the listing shows the newline as a space
    assert labels(select_table(entries, odd, present=()).entries)[3:] == [
        "schema s=1",
        "table s=1.t|x y",
        "table data s=1.t|x y",
    ]
    with pytest.raises(RestoreError, match="not in this dump's table of contents"):
        find_table(entries, "public", "peop")


def test_database_names_reach_libpq_as_data() -> None:
    assert dbname_arg("shop k=v") == "--dbname=dbname='shop k=v'"
    assert dbname_arg("it's \\ -x") == "--dbname=dbname='it\\'s \\\\ -x'"
    with pytest.raises(UsageError):
        dbname_arg("nul\x00")
    assert not slug("-x").startswith("-") and slug("-x") != slug("x")
    assert split_fact_table('"s=1"."t|x\ny"') == ("s=1", "t|x\ny")


GLOBALS = b"""\\restrict abc
--
-- Roles
--
SET standard_conforming_strings = on;
CREATE ROLE app_reader;
ALTER ROLE app_reader WITH NOSUPERUSER NOINHERIT NOLOGIN;
CREATE ROLE "Odd ""one""
two";
ALTER ROLE "Odd ""one""
two" WITH LOGIN PASSWORD 'x; NOINHERIT -- not a comment';
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT LOGIN;
GRANT app_reader TO "Odd ""one""
two" WITH INHERIT TRUE GRANTED BY postgres;
\\unrestrict abc
"""


def test_globals_give_roles_without_passwords_or_powers() -> None:
    known = parse_globals(GLOBALS)
    odd = 'Odd "one"\ntwo'
    assert known.inherit == {"app_reader": False, odd: True, "postgres": True}
    assert known.memberships == [("app_reader", odd)]
    sql = create_roles_sql(["app_reader", odd], known)
    assert sql == (
        'CREATE ROLE "app_reader" NOLOGIN NOINHERIT;\n'
        'CREATE ROLE "Odd ""one""\ntwo" NOLOGIN;\n'
        'GRANT "app_reader" TO "Odd ""one""\ntwo";\n'
    )
    assert "GRANT" not in create_roles_sql(["app_reader"], known)  # only among created ones
    assert len(list(statements("SELECT ';' ; -- x;\nSELECT \"a;b\";"))) == 2


def test_roles_a_restore_needs_with_and_without_owners() -> None:
    facts = {"roles": {"always": ["app_reader"], "owner": ["app_owner"], "privileges": ["web"]}}
    assert needed_roles(facts, keep_owners=True) == ["app_owner", "app_reader", "web"]
    assert needed_roles(facts, keep_owners=False) == ["app_reader"]
    assert needed_roles({}, keep_owners=True) is None  # an older backup did not record them


def test_world_facts_of_postgres_15_and_17() -> None:
    v15 = (
        '{"database": {"encoding": "SQL_ASCII", "datcollate": "C", "datctype": "C", '
        '"datlocprovider": "c", "daticulocale": null}, "roles": {"owner": ["app"]}, '
        '"bootstrap_role": "postgres", "extensions": {"plpgsql": "1.0"}, '
        '"large_objects": 20000, "relations": 3}'
    )
    facts = world_facts(v15)
    assert facts["database"] == {
        "encoding": "SQL_ASCII",
        "lc_collate": "C",
        "lc_ctype": "C",
        "locale_provider": "libc",
    }
    assert facts["roles"] == {"owner": ["app", "postgres"]}
    assert (facts["large_objects"], facts["relations"]) == (20000, 3)
    v17 = (
        '{"database": {"encoding": "UTF8", "datcollate": "C", "datctype": "C", '
        '"datlocprovider": "i", "datlocale": "sv-SE"}}'
    )
    assert world_facts(v17)["database"]["icu_locale"] == "sv-SE"
    assert world_facts(v17)["database"]["locale_provider"] == "icu"


def test_many_objects_to_lock_are_not_restored_in_one_transaction() -> None:
    assert single_transaction(DatabaseRestore("d", facts={"relations": 10_000}))
    assert single_transaction(DatabaseRestore("d"))  # an older backup: as before
    assert single_transaction(DatabaseRestore("d", facts={"large_objects": LARGE_OBJECT_BUDGET}))
    many = {"large_objects": LARGE_OBJECT_BUDGET + 1, "relations": 1}
    assert not single_transaction(DatabaseRestore("d", facts=many))
    assert single_transaction(DatabaseRestore("d", table="public.t", facts=many))


class ServerSays:
    """The one execution seam: a shell whose psql prints ``answer``."""

    label = "the backup host"

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.sql: list[bytes] = []

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        stdin: bytes | None = None,
        secrets: Sequence[str] = (),
    ) -> CommandResult:
        self.sql.append(stdin or b"")
        return CommandResult(tuple(argv), 0, self.answer.encode(), b"", 0.1)


RESTORED = (
    '{"database": {"encoding": "%s", "datcollate": "C", "datctype": "C", '
    '"datlocprovider": "c"}, "large_objects": %d}'
)
LEGACY = {
    "database": {
        "encoding": "SQL_ASCII",
        "lc_collate": "C",
        "lc_ctype": "C",
        "locale_provider": "libc",
    },
    "large_objects": 3,
}


def check(answer: str, table: str | None = None) -> list[dict[str, object]]:
    req = DatabaseRestore("copy", table=table, facts=LEGACY)
    return PostgresRestore().extra_checks(PostgresOptions(), ServerSays(answer), req)  # type: ignore[arg-type]


def test_a_restored_database_is_checked_against_its_recorded_properties() -> None:
    assert [c.detail for c in check(RESTORED % ("SQL_ASCII", 3))] == [
        "encoding SQL_ASCII, collate C, ctype C as recorded",
        "3 as recorded",
    ]
    with pytest.raises(VerificationError, match="encoding UTF8, recorded SQL_ASCII"):
        check(RESTORED % ("UTF8", 3))
    with pytest.raises(VerificationError, match="has 2 large object"):
        check(RESTORED % ("SQL_ASCII", 2))
    assert check(RESTORED % ("UTF8", 0), table="public.t") == []  # one table: not its database
