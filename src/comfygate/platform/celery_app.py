"""The Celery app, built from settings (never at import time).

The broker only carries "run this run id, attempt n": the run table is the source of truth. Tasks are
acknowledged late, so a broker that redelivers (Redis, RabbitMQ) hands a crashed worker's run to another;
the embedded filesystem broker loses unacked messages when a worker dies, and the watchdog covers that.
"""

from __future__ import annotations

from celery import Celery

from comfygate.platform.filesystem_broker import TRANSPORT_PATH
from comfygate.settings import Settings

__all__ = ["create_celery", "RUN_TASK"]

RUN_TASK = "comfygate.run_workflow"


def create_celery(settings: Settings) -> Celery:
    app = Celery("comfygate", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=settings.queue_name,
        task_acks_late=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        # Runs carry their own heartbeat; Celery's remote control and events are not needed and the
        # filesystem transport cannot broadcast.
        worker_enable_remote_control=False,
        worker_send_task_events=False,
    )
    if settings.uses_filesystem_broker:
        queue_dir = settings.broker_dir / "queue"
        queue_dir.mkdir(parents=True, exist_ok=True)
        app.conf.broker_transport = TRANSPORT_PATH
        app.conf.broker_transport_options = {
            "data_folder_in": str(queue_dir),
            "data_folder_out": str(queue_dir),
            # The exchange tables too: kombu's default is ./control, which litters whatever folder the process
            # was started from.
            "control_folder": str(settings.broker_dir / "control"),
            "store_processed": False,
            # The transport polls its folder; 10 ms keeps dispatch latency low at negligible CPU.
            "polling_interval": 0.002,
        }
    else:
        # A connection for a send is tried once: a broker that is down must not hold the caller's 202 (the
        # dispatch relay sends the run once it is back). Worker consumers reconnect with their own retries.
        app.conf.broker_transport_options = {"max_retries": 0}
        if settings.uses_redis_broker:
            # Longer than any run: a redelivery before that would only be a duplicate the claim refuses.
            app.conf.broker_transport_options["visibility_timeout"] = 3600
    return app
