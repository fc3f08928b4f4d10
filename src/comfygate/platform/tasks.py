"""Celery tasks. They take ids, and the processor re-fetches the run: safe to deliver twice."""

from __future__ import annotations

from celery import Celery

from comfygate.platform.celery_app import RUN_TASK
from comfygate.platform.worker import RunProcessor

__all__ = ["register_tasks"]


def register_tasks(app: Celery, processor: RunProcessor) -> None:
    @app.task(name=RUN_TASK, acks_late=True)
    def run_workflow(run_id: str, attempt: int) -> str | None:
        return processor.process(run_id, attempt)
