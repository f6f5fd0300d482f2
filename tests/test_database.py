"""One schema on SQLite and PostgreSQL: files from earlier releases carried forward, the same
behaviour on both backends, and state that several processes share through PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers.legacy import BATCH_MIGRATIONS, CACHE_TABLE, STATE_MIGRATIONS, legacy_file
from sqlalchemy import inspect, select

from keepwarm.api.limits import RateLimiter
from keepwarm.batches.db import open_batch_database
from keepwarm.engine.cache import EmbeddingCache
from keepwarm.errors import RateLimited
from keepwarm.store import ApiKey, Database, KeyStore, StoreError, UsageEvent, UsageStore
from keepwarm.store.buckets import BucketStore
from keepwarm.store.keys import hash_secret
from keepwarm.store.migrations import BATCH, CACHE, STATE, versions
from keepwarm.store.schema import files

SECRET = "kw-" + "s" * 43


def _columns(db: Database) -> dict[str, set[str]]:
    with db.reading() as conn:
        inspector = inspect(conn)
        return {
            table: {c["name"] for c in inspector.get_columns(table)} for table in inspector.get_table_names()
        }


def _version(db: Database, group: str) -> int:
    return db.scalar(select(versions.c.version).where(versions.c.name == group))


def test_a_state_file_of_the_previous_release_is_carried_forward_with_its_keys_and_usage(
    tmp_path: Path,
) -> None:
    old = legacy_file(tmp_path / "old" / "keepwarm.db", STATE_MIGRATIONS, version=2)
    old.execute(
        "INSERT INTO api_keys (name, prefix, secret_hash, rpm, created_at) VALUES ('alice', ?, ?, 5, 1.5)",
        (SECRET[:11], hash_secret(SECRET)),
    )
    old.execute("INSERT INTO usage VALUES ('2026-01-01', 1, 'm', 'v', 3, 30, 1, 0.25)")
    old.close()
    db = Database.in_data_dir(tmp_path / "old")
    assert _version(db, STATE.name) == STATE.version
    assert KeyStore(db).find(SECRET).rpm == 5
    [row] = UsageStore(db).report(key="alice")
    assert (row.requests, row.tokens, row.compute_seconds) == (3, 30, 0.25)
    assert _columns(db) == _columns(Database.in_data_dir(tmp_path / "new"))


def test_a_batch_file_from_before_key_ownership_is_carried_forward(tmp_path: Path) -> None:
    old = legacy_file(tmp_path / "old" / "batches.db", BATCH_MIGRATIONS, version=1)
    old.execute(
        "INSERT INTO files (id, filename, purpose, bytes, created_at) VALUES ('file-1', 'a', 'batch', 3, 1)"
    )
    old.close()
    state = Database.in_data_dir(tmp_path)
    db = open_batch_database(state, tmp_path / "old")
    assert _version(db, BATCH.name) == BATCH.version
    assert db.query(select(files.c.id, files.c.key_id)) == [{"id": "file-1", "key_id": 0}]
    assert _columns(db) == _columns(open_batch_database(state, tmp_path / "new"))


def test_a_cache_file_of_the_previous_release_keeps_its_vectors(tmp_path: Path) -> None:
    old = legacy_file(tmp_path / "cache.sqlite", (), version=0)
    vector = np.arange(4, dtype="<f4")
    old.execute(CACHE_TABLE)
    old.execute("INSERT INTO vectors VALUES (?, ?)", (b"k", vector.tobytes()))
    old.close()
    cache = EmbeddingCache(1 << 20, tmp_path / "cache.sqlite")
    try:
        [found, missing] = cache.get_many([b"k", b"other"])
        assert np.array_equal(found, vector) and missing is None
    finally:
        cache.close()


def test_a_newer_schema_on_postgres_is_refused(database_url: str) -> None:
    with Database(database_url, (STATE,)).transaction() as conn:
        conn.execute(versions.update().values(version=STATE.version + 1))
    with pytest.raises(StoreError, match="newer"):
        Database(database_url, (STATE,))
    with Database(database_url, ()).transaction() as conn:
        conn.execute(versions.update().values(version=STATE.version))


def test_replicas_creating_a_new_postgres_schema_at_once_create_it_once(postgres: str) -> None:
    from helpers.postgres import fresh_database

    script = "import sys; from keepwarm.store import Database; Database.open(sys.argv[1], None)"
    with fresh_database(postgres) as url:
        processes = [
            subprocess.Popen([sys.executable, "-c", script, url], stderr=subprocess.PIPE) for _ in range(4)
        ]
        assert all(p.wait(timeout=120) == 0 for p in processes), [p.stderr.read() for p in processes]
        db = Database.open(url, Path())
        assert [_version(db, g.name) for g in (STATE, BATCH, CACHE)] == [STATE.version, BATCH.version, 1]
        db.close()


def test_keys_and_usage_behave_on_postgres_as_on_sqlite(database_url: str) -> None:
    db = Database.open(database_url, Path())
    keys, usage = KeyStore(db), UsageStore(db)
    key, secret = keys.create("bob", models=("m",), tpm=100)
    with pytest.raises(StoreError, match="already exists"):
        keys.create("bob")
    assert keys.find(secret) == key and keys.update("bob", models=None, rpm=3, tpm=None).rpm == 3
    event = UsageEvent(key.id, "m", "v", 10, cache_hits=1, compute_seconds=0.5, at=1_700_000_000.0)
    usage.record(event)
    usage.record_lines("batch_x", [(1, event), (2, event)])
    usage.record_lines("batch_x", [(2, event), (3, event)])  # line 2 redone after a crash
    [row] = usage.report(key="bob")
    assert (row.day, row.requests, row.tokens, row.cache_hits) == ("2023-11-14", 4, 40, 4)
    assert row.compute_seconds == pytest.approx(2.0)
    keys.revoke(key.prefix)
    assert keys.find(secret) is None and not keys.has_active()
    db.close()


def test_shared_buckets_admit_no_more_than_the_limit_whatever_the_concurrency(database_url: str) -> None:
    db = Database.open(database_url, Path())
    key = ApiKey(id=77, name="busy", prefix="kw-busy", rpm=40)
    limiters = [RateLimiter(shared=BucketStore(db)) for _ in range(4)]  # four replicas' limiters
    admitted = []

    def client(limiter: RateLimiter) -> None:
        for _ in range(20):
            try:
                limiter.check_request(key)
                admitted.append(1)
            except RateLimited:
                pass

    threads = [threading.Thread(target=client, args=(limiters[n % 4],)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 40 <= len(admitted) <= 41  # the bucket, and at most one more refilled while they ran
    db.close()


def test_postgres_without_its_driver_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(StoreError, match=r"pip install 'keepwarm\[cluster\]'"):
        Database("postgresql://postgres@127.0.0.1/postgres")


def test_a_vector_cached_by_one_replica_is_a_hit_on_another(database_url: str) -> None:
    vector = np.linspace(0, 1, 8, dtype="<f4")
    one, other = EmbeddingCache(1 << 20, database_url), EmbeddingCache(1 << 20, database_url)
    try:
        one.put_many([(b"key-of-both", vector)])
        one.close()  # its writes are committed
        [found] = other.get_many([b"key-of-both"])
        assert np.array_equal(found, vector)
    finally:
        other.close()
