"""The spool: order, the acknowledged cursor across a reopen, segments deleted once passed, a torn tail."""

from __future__ import annotations

from pathlib import Path

from agentpulse.ingest.spool import Spool


def records(count: int, start: int = 0, size: int = 100) -> list[bytes]:
    return [f"{start + i:06d}".encode() + b"x" * size for i in range(count)]


def test_read_in_order_across_segments_and_ack_frees_them(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=1000)
    spool.open()
    written = records(50)
    for i in range(0, 50, 7):
        spool.append(written[i : i + 7])
    assert len(list(tmp_path.glob("*.seg"))) > 3
    got = spool.read(1000)
    assert [record for _, record in got] == written
    assert spool.read(10) == []
    spool.ack(got[24][0])
    assert spool.pending_bytes == 25 * (106 + 8)
    spool.ack(got[-1][0])
    assert spool.pending_bytes == 0
    assert len(list(tmp_path.glob("*.seg"))) <= 2
    spool.close()


def test_reopen_replays_from_the_cursor_and_rewind_rereads(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=1000)
    spool.open()
    spool.append(records(30))
    got = spool.read(30)
    spool.ack(got[9][0])
    spool.rewind()
    assert [r for _, r in spool.read(5)] == records(5, start=10)
    spool.close()  # as after a SIGKILL: the cursor is what was acknowledged
    again = Spool(tmp_path, segment_bytes=1000)
    assert again.open() == 20 * (106 + 8)
    assert [r for _, r in again.read(100)] == records(20, start=10)
    again.append(records(3, start=30))
    assert [r for _, r in again.read(100)] == records(3, start=30)
    again.close()


def test_a_torn_tail_is_cut_off_at_open(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.open()
    spool.append(records(5))
    spool.close()
    (segment,) = tmp_path.glob("*.seg")
    with segment.open("ab") as file:
        file.write(b"\x10\x00\x00\x00garbage")  # a record header and half a record
    again = Spool(tmp_path)
    again.open()
    assert [r for _, r in again.read(100)] == records(5)
    again.append(records(1, start=5))
    assert [r for _, r in again.read(100)] == records(1, start=5)
    again.close()


def test_a_record_bigger_than_the_read_chunk(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.open()
    big = b"y" * (3 << 20)
    spool.append([b"small", big, b"after"])
    got = [r for _, r in spool.read(10, max_bytes=16 << 20)]
    assert got == [b"small", big, b"after"]
    spool.close()


def test_take_hands_out_from_memory_what_the_file_holds_at_the_same_positions(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=1000)
    spool.open()
    written = records(40)
    for i in range(0, 40, 6):  # appends that roll segments, while the reader keeps up
        spool.append(written[i : i + 6])
        if i == 12:
            first, upto = spool.take(10)
            assert first == written[:10] and upto is not None
    rest, end = spool.take(1000)
    assert rest == written[10:] and end is not None
    assert spool.take(10) == ([], None)
    from_file = Spool(tmp_path, segment_bytes=1000)  # the same directory read from the file
    from_file.open()
    on_disk = from_file.read(1000)
    assert [record for _, record in on_disk] == written
    assert on_disk[9][0] == upto and on_disk[-1][0] == end  # memory's positions are the file's
    from_file.close()
    spool.ack(end)
    assert spool.pending_bytes == 0
    spool.close()


def test_after_a_rewind_take_reads_the_file_then_memory_again(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=1 << 20)
    spool.open()
    spool.append(records(5))
    spool.append(records(5, start=5))
    part, upto = spool.take(3)  # a chunk split: the rest stays in memory
    assert part == records(3) and upto is not None
    assert spool.take(4)[0] == records(4, start=3)
    spool.rewind()  # nothing acknowledged: everything again, from the file
    again, end = spool.take(100)
    assert again == records(10) and end is not None
    spool.append(records(2, start=10))  # caught up again
    more, after = spool.take(100)
    assert more == records(2, start=10) and after is not None and after > end
    spool.ack(after)
    assert spool.pending_bytes == 0
    spool.close()
