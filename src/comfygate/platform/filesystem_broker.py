"""kombu's filesystem transport, made safe for a writer and a reader working at once.

The stock transport creates the message file under its final name and then writes into it, so a polling
consumer can pick up an empty or half-written file, fail to decode it and crash the worker (the run then
waits for the watchdog). Here a message is written under a name the consumer ignores and renamed into
place: a rename within one folder is atomic, so the consumer sees whole messages or none.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

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


class Transport(filesystem.Transport):
    Channel = Channel
