"""The state database: migrations, keys stored as hashes, usage rows, on a real SQLite file."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import exc, insert, select, update

from keepwarm.api.store_access import StoreAccess
from keepwarm.cost import Pricing
from keepwarm.errors import NotReady
from keepwarm.store import Database, KeyStore, StoreError, UsageEvent, UsageStore, usage_report
from keepwarm.store.migrations import STATE, versions
from keepwarm.store.schema import usage


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database.in_data_dir(tmp_path)
    yield database
    database.close()


def _version(db: Database) -> int:
    return db.scalar(select(versions.c.version).where(versions.c.name == STATE.name))


def test_new_database_is_migrated_to_the_latest_version_in_wal_mode(db: Database) -> None:
    assert _version(db) == STATE.version
    with db.reading() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() > 0


def test_reopening_applies_no_migration_twice(tmp_path: Path) -> None:
    KeyStore(Database.in_data_dir(tmp_path)).create("first")
    again = Database.in_data_dir(tmp_path)
    assert [k.name for k in KeyStore(again).list()] == ["first"]


def test_processes_opening_a_new_database_at_once_migrate_it_once(tmp_path: Path) -> None:
    script = (
        "from pathlib import Path; from keepwarm.store import Database; "
        f"Database.in_data_dir(Path({str(tmp_path)!r}))"
    )
    processes = [subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE) for _ in range(4)]
    assert all(p.wait(timeout=60) == 0 for p in processes), [p.stderr.read() for p in processes]
    assert _version(Database.in_data_dir(tmp_path)) == STATE.version


def test_a_database_from_a_newer_keepwarm_is_refused(tmp_path: Path) -> None:
    with Database.in_data_dir(tmp_path).transaction() as conn:
        conn.execute(update(versions).values(version=STATE.version + 1))
    with pytest.raises(StoreError, match="newer"):
        Database.in_data_dir(tmp_path)


def test_only_a_hash_of_the_secret_is_stored(db: Database) -> None:
    key, secret = KeyStore(db).create("alice")
    assert secret.startswith("kw-") and len(secret) > 40
    db.close()
    raw = b"".join(path.read_bytes() for path in db.path.parent.glob("keepwarm.db*"))
    assert secret.encode() not in raw and secret[len(key.prefix) :].encode() not in raw


def test_a_key_is_found_by_its_secret_and_nothing_else(db: Database) -> None:
    keys = KeyStore(db)
    key, secret = keys.create("alice", models=("m1",), rpm=10, tpm=1000)
    found = keys.find(secret)
    assert found == key and found.models == ("m1",) and found.rpm == 10 and found.tpm == 1000
    assert keys.find(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert keys.find(key.prefix) is None and keys.find("") is None and keys.find("sk-" + secret[3:]) is None


def test_a_revoked_key_stops_working_and_frees_its_name(db: Database) -> None:
    keys = KeyStore(db)
    key, secret = keys.create("alice")
    with pytest.raises(StoreError, match="already exists"):
        keys.create("alice")
    assert keys.revoke("alice").revoked_at is not None
    assert keys.find(secret) is None and not keys.has_active()
    replacement, _ = keys.create("alice")
    assert keys.revoke(replacement.prefix).id == replacement.id
    with pytest.raises(StoreError, match="no active key"):
        keys.revoke("alice")


def test_a_keys_models_and_limits_change_in_place_and_its_secret_keeps_working(db: Database) -> None:
    keys = KeyStore(db)
    key, secret = keys.create("alice", models=("m1",), rpm=10)
    updated = keys.update(key.prefix, models=("m1", "m2"), rpm=None, tpm=500)
    assert (updated.id, updated.models, updated.rpm, updated.tpm) == (key.id, ("m1", "m2"), None, 500)
    assert keys.find(secret) == updated and keys.get(key.id) == updated
    assert keys.update("alice", models=None, rpm=None, tpm=None).models is None
    keys.revoke("alice")
    with pytest.raises(StoreError, match="no active key"):
        keys.update("alice", models=None, rpm=1, tpm=None)
    assert keys.get(key.id).revoked_at is not None and keys.get(key.id + 100) is None


def test_usage_adds_up_per_day_key_model_and_version(db: Database) -> None:
    usage = UsageStore(db)
    day_one, day_two = 1_700_000_000.0, 1_700_000_000.0 + 86_400
    for at, key_id, version, tokens in [
        (day_one, 1, "v1", 10),
        (day_one, 1, "v1", 5),
        (day_one, 1, "v2", 7),
        (day_two, 1, "v1", 1),
        (day_one, 0, "v1", 3),
    ]:
        usage.record(UsageEvent(key_id, "m", version, tokens, cache_hits=1, compute_seconds=0.5, at=at))
    rows = {(r.day, r.key_id, r.version): (r.requests, r.tokens, r.cache_hits) for r in usage.report()}
    assert rows == {
        ("2023-11-14", 1, "v1"): (2, 15, 2),
        ("2023-11-14", 1, "v2"): (1, 7, 1),
        ("2023-11-15", 1, "v1"): (1, 1, 1),
        ("2023-11-14", 0, "v1"): (1, 3, 1),
    }
    assert [r.day for r in usage.report(since=date(2023, 11, 15))] == ["2023-11-15"]


def test_usage_report_prices_tokens_and_compute_hours(db: Database) -> None:
    key, _ = KeyStore(db).create("alice")
    UsageStore(db).record(UsageEvent(key.id, "m", "v1", 2_000_000, compute_seconds=1800))
    report = usage_report(UsageStore(db).report(key="alice"), Pricing(per_million_tokens=0.5, per_hour=2.0))
    assert report["data"][0]["key_name"] == "alice"
    assert report["data"][0]["cost"] == pytest.approx(2 * 0.5 + 0.5 * 2.0)
    assert report["total"]["tokens"] == 2_000_000 and report["total"]["cost"] == pytest.approx(2.0)


def test_a_failed_write_leaves_nothing_behind(db: Database) -> None:
    row = {"day": "d", "key_id": 1, "model": "m", "version": "v", "requests": 1, "tokens": 1}
    row |= {"cache_hits": 0, "compute_seconds": 0.0}
    with pytest.raises(exc.IntegrityError), db.transaction() as conn:
        conn.execute(insert(usage).values(row))
        conn.execute(insert(usage).values(row))
    assert UsageStore(db).report() == []


def test_a_database_fault_reaches_the_api_as_a_retryable_503(db: Database) -> None:
    access = StoreAccess(db)

    def broken() -> None:
        with db.transaction():
            raise exc.OperationalError("COMMIT", {}, Exception("disk I/O error"))

    try:
        with pytest.raises(NotReady, match="state database is unavailable"):
            asyncio.run(access.call(broken))
    finally:
        access.close()
