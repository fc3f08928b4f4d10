"""Run-ended notices wake waiting requests, over the embedded socket and over Redis pub/sub."""

import asyncio

import pytest

from comfygate.platform.notify import Publisher, RunWaiters, start_listener
from comfygate.settings import Settings


async def wait_with_notice(settings: Settings) -> tuple[bool, float]:
    waiters = RunWaiters()
    stop = await start_listener(settings, waiters)
    ended = asyncio.Event()

    async def has_ended() -> bool:
        return ended.is_set()

    async def worker_finishes() -> None:
        await asyncio.sleep(0.05)
        ended.set()
        await asyncio.to_thread(Publisher(settings).run_ended, "run-1")

    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        _, woke = await asyncio.gather(worker_finishes(), waiters.wait_until_ended("run-1", 5, has_ended))
    finally:
        await stop()
    return woke, loop.time() - start


def test_embedded_socket_notice_wakes_the_waiter_before_the_db_recheck(tmp_path):
    woke, elapsed = asyncio.run(wait_with_notice(Settings(data_dir=tmp_path)))
    assert woke
    assert elapsed < 0.9, "woken by the DB re-check, not by the notice"


def test_redis_notice_wakes_the_waiter_before_the_db_recheck(tmp_path, redis_url):
    woke, elapsed = asyncio.run(wait_with_notice(Settings(data_dir=tmp_path, broker_url=redis_url)))
    assert woke
    assert elapsed < 0.9, "woken by the DB re-check, not by the notice"


def test_waiting_times_out_when_the_run_does_not_end():
    async def never() -> bool:
        return False

    async def scenario() -> bool:
        return await RunWaiters().wait_until_ended("run-2", 0.2, never)

    assert asyncio.run(scenario()) is False


@pytest.mark.parametrize(("notified", "expected_checks"), [("other-run", 2), ("mine", 3)])
def test_only_a_notice_for_its_own_run_wakes_the_waiter(notified, expected_checks):
    # Checks: one on entry, one when the timeout ends the wait, and one more only if a notice woke it.
    async def scenario() -> bool:
        waiters = RunWaiters()
        calls = 0

        async def has_ended() -> bool:
            nonlocal calls
            calls += 1
            return False

        task = asyncio.create_task(waiters.wait_until_ended("mine", 0.3, has_ended))
        await asyncio.sleep(0.05)
        waiters.notify(notified)
        result = await task
        return result is False and calls == expected_checks

    assert asyncio.run(scenario())


def test_webhook_senders_wake_only_on_notices_that_may_carry_a_webhook(tmp_path):
    # Over the real socket: a plain end notice wakes the run's waiters but not the webhook sender.
    async def scenario() -> tuple[list[str], bool]:
        settings = Settings(data_dir=tmp_path)
        waiters = RunWaiters()
        woken: list[str] = []
        waiters.add_listener(woken.append)
        stop = await start_listener(settings, waiters)
        plain = waiters.expect("plain-run")
        try:
            publisher = Publisher(settings)
            await asyncio.to_thread(publisher.run_ended, "plain-run")
            await asyncio.to_thread(publisher.run_ended, "hooked-run", webhook=True)
            await asyncio.wait_for(plain, 2)
            for _ in range(100):
                if woken:
                    break
                await asyncio.sleep(0.01)
        finally:
            await stop()
        return woken, plain.done()

    woken, plain_woke = asyncio.run(scenario())
    assert plain_woke
    assert woken == ["hooked-run"]
