"""kombu's filesystem transport, made safe for a writer and a reader working at once.

The stock transport creates the message file under its final name and then writes into it, so a polling
consumer can pick up an empty or half-written file, fail to decode it and crash the worker (the run then
waits for the watchdog). Here a message is written under a name the consumer ignores and renamed into
place: a rename within one folder is atomic, so the consumer sees whole messages or none.

The exchange tables (which queue an exchange routes to) had the same flaw: the stock bind creates the table
file empty and fills it afterwards, so a sender binding at the same moment could read it empty or truncate
it. Here a new table appears whole (hard-linked into place), an existing one is updated under its lock, and
every channel makes sure the table holds its binding before it sends (kombu skips a binding that another
channel of the same process declared first, possibly before that channel wrote the table).
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

__all__ = ["Transport", "TRANSPORT_PATH"]

TRANSPORT_PATH = "comfygate.platform.filesystem_broker:Transport"


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        # Same naming as kombu's (the time prefix keeps FIFO order when the consumer sorts names).
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # The consumer matches names ending in ".<queue>.msg"; this one ends in ".part" until renamed.
        partial = final + ".part"
        try:
            with open(partial, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"cannot add message {name!r} to {self.data_folder_out!r}") from exc


    def queue_bind(self, queue: str, exchange: str | None = None, routing_key: str = "", arguments: Any = None,
                   **kwargs: Any) -> None:
        # kombu skips a binding another channel of this process declared, maybe before that channel wrote the
        # exchange table; a message sent meanwhile would be routed nowhere. So the table is checked here too.
        exchange = exchange or "amq.direct"
        declared_elsewhere = self.state.has_binding(queue, exchange, routing_key)
        super().queue_bind(queue, exchange, routing_key, arguments, **kwargs)
        if declared_elsewhere:
            self._queue_bind(exchange, *self.typeof(exchange).prepare_bind(queue, exchange, routing_key, arguments))

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        table = self._exchange_file(exchange)
        self.control_folder.mkdir(parents=True, exist_ok=True)
        entry = list(filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or ""))
        try:
            if self._create_table(table, entry):
                return
            with open(table, "r+b", buffering=0) as handle:
                filesystem.lock(handle, filesystem.LOCK_EX)
                try:
                    entries = loads(bytes_to_str(handle.read()))
                    if entry not in entries:
                        entries.insert(0, entry)
                        handle.seek(0)
                        handle.truncate()
                        handle.write(str_to_bytes(dumps(entries)))
                finally:
                    filesystem.unlock(handle)
        except OSError as exc:
            raise ChannelError(f"cannot bind queue {queue!r} in {table}") from exc

    @staticmethod
    def _create_table(table: os.PathLike[str], entry: list[str]) -> bool:
        """Put a table holding only ``entry`` in place unless one exists; True when this call made it."""
        partial = f"{table}.{uuid.uuid4().hex}.part"
        with open(partial, "wb") as handle:
            handle.write(str_to_bytes(dumps([entry])))
        try:
            os.link(partial, table)  # fails when the table exists: creation is atomic and never overwrites
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(partial)


class Transport(filesystem.Transport):
    Channel = Channel
