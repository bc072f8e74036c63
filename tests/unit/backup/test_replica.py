"""The replicated tier's plain logic: the guest's Litestream configuration and unit, the LTX header
and the newest replicated state of a county's served folder."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from backup import replica
from backup.replica import LtxHeader, NotLtx, ReplicaSite
from provisioning.spec import GUESTFWD_ADDRESS, GUESTFWD_PORT

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBEXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPLE"


def ltx(min_txid: int, max_txid: int, ms: int, magic: bytes = b"LTX1") -> bytes:
    return struct.pack(">4sIIIQQq", magic, 2, 4096, 4, min_txid, max_txid, ms) + b"\0" * 60


def test_config_streams_the_database_through_the_guestfwd_with_a_pinned_host_key(tmp_path: Path) -> None:
    site = ReplicaSite("secondary", tmp_path)
    text = replica.litestream_config(database="/srv/tenant-data/tenant.db", tenant="taipei",
                                     host_key_line=HOST_KEY, site=site)
    [db] = yaml.safe_load(text)["dbs"]
    assert db["path"] == "/srv/tenant-data/tenant.db"
    target = db["replica"]
    assert target["type"] == "sftp"
    assert target["host"] == f"{GUESTFWD_ADDRESS}:{GUESTFWD_PORT}"
    assert target["key-path"] == replica.GUEST_KEY and "password" not in target
    assert target["host-key"] == HOST_KEY
    assert target["path"] == "/counties/taipei" == site.sftp_path("taipei")
    assert target["sync-interval"] == replica.SYNC_INTERVAL


def test_config_refuses_a_host_key_that_would_break_the_yaml(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        replica.litestream_config(database="/d.db", tenant="t", host_key_line='a"\nb',
                                  site=ReplicaSite("s", tmp_path))


def test_unit_runs_as_the_app_user_and_restarts() -> None:
    text = replica.unit_text("tenant-app")
    assert "User=tenant-app" in text and "Restart=always" in text
    assert f"ExecStart={replica.GUEST_BINARY} replicate -config {replica.GUEST_CONFIG}" in text


def test_ltx_header() -> None:
    header = replica.parse_ltx_header(ltx(2, 9, 1796431078472))
    assert header == LtxHeader(2, 9, datetime(2026, 12, 5, 0, 37, 58, 472000, tzinfo=UTC))
    with pytest.raises(NotLtx):
        replica.parse_ltx_header(ltx(1, 1, 0, magic=b"XXXX"))
    with pytest.raises(NotLtx):
        replica.parse_ltx_header(b"LTX1")


def test_newest_of_prefers_the_highest_txid_then_the_later_time() -> None:
    at = datetime(2026, 12, 5, tzinfo=UTC)
    later = datetime(2026, 12, 5, 0, 0, 1, tzinfo=UTC)
    assert replica.newest_of([]) is None
    assert replica.newest_of([LtxHeader(1, 4, later), LtxHeader(5, 5, at)]) == LtxHeader(5, 5, at)
    assert replica.newest_of([LtxHeader(1, 5, at), LtxHeader(2, 5, later)]) == LtxHeader(2, 5, later)


def test_newest_state_reads_every_level_and_skips_a_file_being_written(tmp_path: Path) -> None:
    site = ReplicaSite("secondary", tmp_path)
    assert replica.newest_state(site, "taipei") is None
    folder = site.county_dir("taipei") / "ltx"
    (folder / "0").mkdir(parents=True)
    (folder / "1").mkdir()
    (folder / "0" / "0000000000000003-0000000000000003.ltx").write_bytes(ltx(3, 3, 1796431077472))
    (folder / "1" / "0000000000000001-0000000000000004.ltx").write_bytes(ltx(1, 4, 1796431078472))
    (folder / "0" / "0000000000000005-0000000000000005.ltx").write_bytes(b"LT")  # half written
    state = replica.newest_state(site, "taipei")
    assert state is not None
    assert (state.txid, state.at.timestamp(), state.files, state.site) == (4, 1796431078.472, 2, "secondary")
    assert state.as_dict()["txid"] == "0000000000000004"
    assert replica.newest_state(site, "keelung") is None


def test_newest_state_before_a_time_leaves_out_later_transactions(tmp_path: Path) -> None:
    site = ReplicaSite("secondary", tmp_path)
    folder = site.county_dir("taipei") / "ltx" / "0"
    folder.mkdir(parents=True)
    for txid, ms in ((1, 1_000_000), (2, 2_000_000), (3, 3_000_000)):
        (folder / f"{txid:016x}-{txid:016x}.ltx").write_bytes(ltx(txid, txid, ms))
    before = datetime.fromtimestamp(2_500, UTC)
    state = replica.newest_state(site, "taipei", before)
    assert state is not None and state.txid == 2
    assert replica.newest_state(site, "taipei", datetime.fromtimestamp(500, UTC)) is None
    newest = replica.newest_state(site, "taipei")
    assert newest is not None and newest.txid == 3


def h(min_txid: int, max_txid: int, ms: int = 0) -> LtxHeader:
    return LtxHeader(min_txid, max_txid, datetime.fromtimestamp(ms / 1000, UTC))


def test_restorable_ends_follow_litestreams_plan_across_levels() -> None:
    snapshot = [h(1, 1)]
    assert replica.restorable_ends([h(t, t) for t in range(2, 6)], snapshot) == {1, 2, 3, 4, 5}
    # Level 0's 2-7 compacted into level 1's 2-10 and removed; 8-10 still kept (l0-retention):
    # 8 and 9 are listed but no restore can stop there; 10 and the new 11 can be reached.
    compacted = [h(2, 10), *(h(t, t) for t in (8, 9, 10, 11))]
    assert replica.restorable_ends(compacted, snapshot) == {1, 10, 11}
    assert replica.restorable_ends([h(1, 4), h(3, 3)]) == {4}  # no snapshot: from transaction 1
    assert replica.restorable_ends([h(1, 1), h(2, 2), h(5, 5)]) == {1, 2}  # a gap ends the chain
    assert replica.restorable_ends([h(3, 3)]) == set()
    assert replica.restorable_ends([], [h(1, 7)]) == {7}


def put(folder: Path, level: int, min_txid: int, max_txid: int, ms: int) -> None:
    (folder / str(level)).mkdir(parents=True, exist_ok=True)
    (folder / str(level) / f"{min_txid:016x}-{max_txid:016x}.ltx").write_bytes(ltx(min_txid, max_txid, ms))


def test_newest_state_offers_no_state_a_compaction_made_unrestorable(tmp_path: Path) -> None:
    site = ReplicaSite("secondary", tmp_path)
    folder = site.county_dir("taipei") / "ltx"
    put(folder, 9, 1, 1, 1_000_000)
    put(folder, 1, 2, 10, 10_000_000)
    for txid in (8, 9, 10):
        put(folder, 0, txid, txid, txid * 1_000_000)
    (folder / "0" / f"{11:016x}-{11:016x}.ltx.123.456.tmp").write_bytes(ltx(11, 11, 11_000_000))
    newest = replica.newest_state(site, "taipei")
    assert newest is not None and (newest.txid, newest.files) == (10, 5)  # the .tmp is not listed
    # At 9.5 s the listed transaction 9 is the newest written, but a restore cannot stop at it.
    at = replica.newest_state(site, "taipei", datetime.fromtimestamp(9_500, UTC))
    assert at is not None and at.txid == 1
    assert [f.name for f in replica.listing(site, "taipei") if f.level == 0] == [
        f"{t:016x}-{t:016x}.ltx" for t in (8, 9, 10)]
