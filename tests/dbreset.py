"""One database per pytest process, made clean again before each test instead of cloned anew.

Measured on this machine's PostgreSQL 15 under the usual shared load (template of 18 tables and
8 sequences; medians): CREATE DATABASE ... TEMPLATE + DROP DATABASE 0.45-0.69 s (the DROP is most
of it); TRUNCATE of every table in one statement 0.21 s; TRUNCATE ... RESTART IDENTITY CASCADE of
only the tables that hold rows (found by one probe query) 0.05-0.10 s; DELETE of only those tables,
triggers off, 0.01 s. A reset truncates: DELETE leaves the dead rows of the last test behind, and
the next test pays for them (the pool-under-load test, tests/integration/test_pools_concurrency.py,
measured overlapping attempts it never saw on fresh tables: 3 failures in 6 runs after DELETE
resets, 0 in 6 after TRUNCATE). A transaction rolled back at the end of each test is not an
option: the engine commits, and tests use many connections and threads. Opening a connection
costs ~0.1 s under load, so the resets keep one.

A reset makes the database equal to the migrated template again: other sessions on it are ended
(a test's leftover pool cannot hold a lock), the tables that hold rows are truncated, the rows the
migrations seeded are put back exactly (triggers off, so nothing else is derived from them), and
every sequence is set back to the template's state. A test that changes the schema (a table, a
function, a trigger, a constraint, a grant, a database setting) cannot be undone this way: the
catalog's fingerprint is compared after each test, and a test that changed it fails its teardown,
naming the ``fresh_db`` marker it must carry (tests/db_fixtures.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, create_engine, text

from tests.dbtools import create_database, drop_database

USER_SCHEMAS = (
    "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' "
    "AND n.nspname NOT LIKE 'pg\\_temp\\_%'"
)

# Everything a test could change in the schema, as one sorted text, hashed.
CATALOG_FINGERPRINT = text(
    f"""
SELECT md5(coalesce(string_agg(item, E'\\n' ORDER BY item), '')) FROM (
    SELECT concat_ws(' ', 'schema', n.nspname, n.nspacl) AS item
    FROM pg_namespace n WHERE {USER_SCHEMAS}
    UNION ALL
    SELECT concat_ws(' ', 'rel', c.oid::regclass, c.relkind, c.relrowsecurity, c.relacl,
        c.reloptions, pg_get_indexdef(i.indexrelid))
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_index i ON i.indexrelid = c.oid
    WHERE {USER_SCHEMAS}
    UNION ALL
    SELECT concat_ws(' ', 'column', a.attrelid::regclass, a.attname,
        format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attgenerated, a.attidentity,
        pg_get_expr(d.adbin, d.adrelid))
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE {USER_SCHEMAS} AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT concat_ws(' ', 'constraint', co.conrelid::regclass, co.conname,
        pg_get_constraintdef(co.oid))
    FROM pg_constraint co JOIN pg_namespace n ON n.oid = co.connamespace WHERE {USER_SCHEMAS}
    UNION ALL
    SELECT concat_ws(' ', 'trigger', pg_get_triggerdef(t.oid), t.tgenabled)
    FROM pg_trigger t WHERE NOT t.tgisinternal
    UNION ALL
    SELECT concat_ws(' ', 'function', p.oid::regprocedure, md5(p.prosrc), p.provolatile,
        p.proconfig, p.proacl)
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {USER_SCHEMAS}
    UNION ALL
    SELECT concat_ws(' ', 'type', t.oid::regtype, t.typtype,
        (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
         FROM pg_enum e WHERE e.enumtypid = t.oid))
    FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE {USER_SCHEMAS}
    UNION ALL
    SELECT concat_ws(' ', 'extension', extname, extversion) FROM pg_extension
    UNION ALL
    SELECT concat_ws(' ', 'setting', s.setrole, s.setconfig)
    FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
    WHERE d.datname = current_database()
) AS catalog
"""
)

TABLES = text(
    f"""
SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND {USER_SCHEMAS} AND c.relname <> 'alembic_version'
ORDER BY 1
"""
)

SEQUENCES = text(
    "SELECT format('%I.%I', schemaname, sequencename), coalesce(last_value, start_value), "
    "last_value IS NOT NULL FROM pg_sequences ORDER BY 1"
)

INSERTABLE_COLUMNS = text(
    "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute "
    "WHERE attrelid = CAST(:table AS regclass) AND attnum > 0 AND NOT attisdropped "
    "AND attgenerated = ''"
)

END_OTHER_SESSIONS = text(
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
)

SET_SEQUENCES = text(
    "SELECT count(setval(CAST(s AS regclass), v, c)) FROM unnest("
    "CAST(:names AS text[]), CAST(:values AS bigint[]), CAST(:called AS boolean[])) AS x(s, v, c)"
)


class SchemaChanged(AssertionError):
    """A test changed the schema of the shared database; it needs a fresh one."""


@dataclass(frozen=True)
class Snapshot:
    """What a reset restores: the migrated template's tables, seeded rows and sequences."""

    tables: tuple[str, ...]
    seeded: dict[str, tuple[str, str]]  # table -> (its insertable columns, its rows as JSON)
    sequences: tuple[tuple[str, int, bool], ...]  # (name, value, is_called)
    catalog: str

    @classmethod
    def take(cls, conn: Connection) -> Snapshot:
        tables = tuple(conn.execute(TABLES).scalars())
        seeded = {}
        for table in tables:
            rows = conn.execute(
                text(f"SELECT coalesce(json_agg(t), '[]')::text FROM {table} AS t")
            ).scalar_one()
            if rows != "[]":
                columns = conn.execute(INSERTABLE_COLUMNS, {"table": table}).scalar_one()
                seeded[table] = (columns, rows)
        sequences = tuple((str(n), int(v), bool(c)) for n, v, c in conn.execute(SEQUENCES))
        catalog = conn.execute(CATALOG_FINGERPRINT).scalar_one()
        return cls(tables, seeded, sequences, catalog)

    def probe(self) -> str:
        """One query naming the tables that differ from the template: those holding rows,
        and every seeded table (put back whole: comparing it would cost more)."""
        parts = [f"SELECT '{t}' WHERE EXISTS (SELECT 1 FROM {t})" for t in self.tables]
        parts += [f"SELECT '{t}'" for t in self.seeded]
        return " UNION ".join(parts) or "SELECT NULL WHERE false"

    def reset(self, conn: Connection) -> None:
        """Make the database in ``conn`` equal to the template again (data and sequences)."""
        conn.execute(text("SET LOCAL lock_timeout = '30s'"))
        conn.execute(END_OTHER_SESSIONS)
        dirty = list(conn.execute(text(self.probe())).scalars())
        if dirty:
            conn.execute(text(f"TRUNCATE {', '.join(dirty)} RESTART IDENTITY CASCADE"))
        # Triggers (foreign keys among them) off: the seeded rows go back exactly as the
        # template has them, nothing derived from them.
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        for table, (columns, rows) in self.seeded.items():
            conn.execute(
                text(
                    f"INSERT INTO {table} ({columns}) OVERRIDING SYSTEM VALUE "
                    f"SELECT {columns} FROM json_populate_recordset(NULL::{table}, "
                    "CAST(:rows AS json))"
                ),
                {"rows": rows},
            )
        if self.sequences:
            names, values, called = (list(column) for column in zip(*self.sequences, strict=True))
            conn.execute(SET_SEQUENCES, {"names": names, "values": values, "called": called})


class WorkerDatabase:
    """The database of this pytest process (so of one xdist worker): a clone of the template,
    reset before each test that uses it, re-cloned if a test broke it."""

    def __init__(self, template: str, name: str) -> None:
        self.template, self.name = template, name
        self.url = create_database(name, template=template)
        # One connection kept for the resets (opening one costs ~0.1 s on a loaded machine).
        self._engine = create_engine(self.url, pool_size=1, max_overflow=0, pool_pre_ping=True)
        try:
            with self._engine.connect() as conn:
                self.snapshot = Snapshot.take(conn)
        except BaseException:
            self.drop()
            raise

    def reset(self) -> str:
        """Clean the database for the next test; its URL."""
        with self._engine.begin() as conn:
            self.snapshot.reset(conn)
        return self.url

    def check_schema(self, test: str) -> None:
        """Raise SchemaChanged (and replace the database) if ``test`` changed its schema."""
        with self._engine.connect() as conn:
            catalog = conn.execute(CATALOG_FINGERPRINT).scalar_one()
        if catalog == self.snapshot.catalog:
            return
        self.recreate()
        raise SchemaChanged(
            f"{test} changed the schema of the shared test database (a table, function, "
            "trigger, constraint, grant or setting); mark it @pytest.mark.fresh_db so it gets "
            "a database of its own"
        )

    def recreate(self) -> None:
        self._engine.dispose()
        drop_database(self.name)
        create_database(self.name, template=self.template)

    def drop(self) -> None:
        self._engine.dispose()
        drop_database(self.name)
