"""A submit on the event loop racing stop() on another thread (process mode: relays still sending after
the capture process's drain timeout) never loses an item uncounted: it is written, or counted dropped."""

from __future__ import annotations

import threading
from pathlib import Path

from runtap.analytics.ingest.batching import BatchQueue
from runtap.analytics.ingest.health import CaptureHealth, Kind
from runtap.analytics.ingest.records import CaptureItem
from runtap.analytics.ingest.writer import CaptureWriter, WriterConfig

from tests.test_writer import record


class StopsBeforePut(BatchQueue):
    """The queue, except that its next put lets stop() run to its end first: the thread switch between
    submit's check for a stopping writer and its append, made to happen every time."""

    writer: CaptureWriter | None = None

    def put(self, item: CaptureItem) -> str | None:
        writer, self.writer = self.writer, None
        if writer is not None:
            stopping = threading.Thread(target=writer.stop)
            stopping.start()
            stopping.join()
        return super().put(item)


def test_an_item_submitted_while_stop_finishes_is_written_or_counted(tmp_path: Path) -> None:
    health = CaptureHealth()
    writer = CaptureWriter(WriterConfig(db_path=str(tmp_path / "c.duckdb"), flush_interval_s=0.0), health=health)
    writer._queue.__class__ = StopsBeforePut
    writer.start()
    assert writer.submit(record("req_before")) and writer.flush(timeout=30)
    queue = writer._queue
    assert isinstance(queue, StopsBeforePut)
    queue.writer = writer
    accepted = writer.submit(record("req_racing"))
    assert not writer._owner.alive()
    written, dropped = health.total(Kind.WRITTEN, "requests"), health.total(Kind.DROPPED, "stopped")
    assert written + dropped == 2, (written, dropped)  # every item submitted: written or counted
    assert accepted == (written == 2) and writer.submitted == written
