"""The embedded broker under a writer and a reader at once: every message arrives whole, none is lost."""

import threading

from comfygate.platform.celery_app import create_celery
from comfygate.settings import Settings

# Large messages widen the window in which a reader can meet a half-written file (kombu's stock
# transport fails this test most of the time).
MESSAGES = 150
PAYLOAD = "x" * 1_000_000


def test_concurrent_send_and_receive_loses_and_corrupts_nothing(tmp_path):
    settings = Settings(data_dir=tmp_path)
    app = create_celery(settings)
    received: list[dict] = []
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            with app.connection_for_read() as connection:
                queue = connection.SimpleQueue(settings.queue_name, no_ack=True)
                while len(received) < MESSAGES:
                    received.append(queue.get(timeout=10).payload)

        except BaseException as exc:  # reported by the assertion below, with its type
            errors.append(exc)

    consumer = threading.Thread(target=consume)
    consumer.start()
    with app.connection_for_write() as connection:
        queue = connection.SimpleQueue(settings.queue_name)
        for number in range(MESSAGES):
            queue.put({"n": number, "pad": PAYLOAD})
    consumer.join(60)

    assert errors == []
    assert sorted(m["n"] for m in received) == list(range(MESSAGES))
    assert not list((settings.broker_dir / "queue").glob("*.part"))
