"""ModelPool and memory helpers, with small real torch modules as the pooled models."""

from __future__ import annotations

import contextvars
import gc
import logging
import threading
import time
import weakref
from collections.abc import Callable

import pytest
import torch

from comfygate.comfy_runtime.diffusion.memory import (
    default_budget,
    is_out_of_memory,
    module_bytes,
    pick_device,
    pick_dtype,
    total_ram_bytes,
)
from comfygate.comfy_runtime.diffusion.pool import ModelPool, current_load_timer, load_timer, size_of

WIDTH = 32
SIZE = WIDTH * WIDTH * 4  # one nn.Linear(32, 32, bias=False) in float32: 4096 bytes


class TinyModel:
    """A pooled model: one real Linear layer and its size, like a LoadedCheckpoint in miniature."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.module = torch.nn.Linear(WIDTH, WIDTH, bias=False)
        self.size_bytes = module_bytes(self.module)


class Loader:
    """Counts calls; keeps only weak references to what it built, so tests can see what the pool dropped."""

    def __init__(self, name: str, fail_first: BaseException | None = None) -> None:
        self.name = name
        self.calls = 0
        self.fail_first = fail_first
        self.built: list[weakref.ref[TinyModel]] = []

    def __call__(self) -> TinyModel:
        self.calls += 1
        if self.fail_first is not None and self.calls == 1:
            raise self.fail_first
        model = TinyModel(self.name)
        self.built.append(weakref.ref(model))
        return model

    def alive(self) -> bool:
        gc.collect()
        return any(ref() is not None for ref in self.built)


def use_once(pool: ModelPool, key: str, loader: Callable[[], object], **kwargs) -> None:
    with pool.use((key,), loader, **kwargs):
        pass


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        threading.Event().wait(0.001)  # another thread changes what we poll


def test_tiny_model_has_the_size_the_tests_assume() -> None:
    assert TinyModel("a").size_bytes == SIZE
    assert size_of(torch.nn.Linear(WIDTH, WIDTH, bias=False)) == SIZE  # bare modules are measured
    with pytest.raises(TypeError, match="need an int size_bytes; object has none"):
        size_of(object())


# -- reuse and eviction ------------------------------------------------------------------------------------------


def test_second_use_loads_nothing() -> None:
    pool = ModelPool(10 * SIZE)
    loader = Loader("a")
    with load_timer() as cold, pool.use(("a",), loader) as first:
        assert isinstance(first, TinyModel)
    with load_timer() as warm, pool.use(("a",), loader) as second:
        assert second is first
    assert loader.calls == 1
    assert len(cold.loads) == 1 and cold.loads[0]["key"] == ("a",) and cold.ms > 0
    assert warm.loads == [] and warm.ms == 0
    [row] = pool.report()
    assert row["key"] == ("a",) and row["size_bytes"] == SIZE
    assert (row["loads"], row["hits"], row["in_use"]) == (1, 1, False)
    assert row["load_ms"] > 0 and row["last_used"] > 0


def test_least_recently_used_idle_model_is_evicted_first() -> None:
    pool = ModelPool(2 * SIZE)
    a, b, c = Loader("a"), Loader("b"), Loader("c")
    use_once(pool, "a", a)
    use_once(pool, "b", b)
    use_once(pool, "a", a)  # a is now more recent than b
    use_once(pool, "c", c)
    assert not b.alive(), "the pool still references the evicted model"
    assert a.alive() and c.alive()
    assert {row["key"] for row in pool.report()} == {("a",), ("c",)}
    assert pool.used_bytes == 2 * SIZE
    assert pool.stats(("b",))["evictions"] == 1
    use_once(pool, "b", b)
    assert b.calls == 2 and pool.stats(("b",))["loads"] == 2


def test_room_is_made_before_a_load_when_the_size_is_known() -> None:
    pool = ModelPool(2 * SIZE)
    a, b = Loader("a"), Loader("b")
    use_once(pool, "a", a)
    use_once(pool, "b", b)
    seen: list[bool] = []

    def load_c() -> TinyModel:
        seen.append(pool.resident(("a",)))
        return TinyModel("c")

    use_once(pool, "c", load_c, size_hint=SIZE)
    assert seen == [False]  # a was evicted before c's load started, not after
    assert pool.resident(("b",))


def test_models_in_use_are_never_evicted() -> None:
    pool = ModelPool(SIZE)
    a, b = Loader("a"), Loader("b")
    with pool.use(("a",), a) as model_a:
        with pool.use(("b",), b) as model_b:  # over budget, but a is pinned by the run in progress
            assert pool.resident(("a",)) and pool.resident(("b",))
            assert pool.evict(("a",)) is False
            assert pool.free_idle() == 0
            assert model_a.name == "a" and model_b.name == "b"
            assert [row["in_use"] for row in pool.report()] == [True, True]
        assert pool.resident(("a",)), "a is still in use"
    assert pool.used_bytes <= SIZE  # back within budget once both runs are done
    assert [row["key"] for row in pool.report()] == [("a",)]  # the model released last stays warm


def test_model_larger_than_the_budget_still_loads_and_stays_warm(caplog: pytest.LogCaptureFixture) -> None:
    pool = ModelPool(SIZE // 2)
    big, other = Loader("big"), Loader("other")
    with caplog.at_level(logging.WARNING, logger="comfygate.comfy_runtime.diffusion.pool"), pool.use(
        ("big",), big
    ) as model:
        assert model.size_bytes > pool.budget_bytes
    del model
    assert "over its" in caplog.text
    use_once(pool, "big", big)
    assert big.calls == 1  # kept while nothing else needs the room
    use_once(pool, "other", other)
    assert not pool.resident(("big",))
    assert not big.alive()  # evicted to make room for the next model, and really dropped


def test_evict_and_free_idle_drop_the_pool_references() -> None:
    pool = ModelPool(10 * SIZE)
    a, b, c = Loader("a"), Loader("b"), Loader("c")
    for key, loader in (("a", a), ("b", b), ("c", c)):
        pool.preload((key,), loader)
    assert pool.evict(("a",)) is True
    assert pool.evict(("a",)) is False
    assert not a.alive()
    with pool.use(("c",), c):
        assert pool.free_idle() == SIZE  # b only; c is in use
    assert not b.alive() and c.alive()


# -- threads -----------------------------------------------------------------------------------------------------


def test_two_threads_asking_for_the_same_key_load_it_once() -> None:
    pool = ModelPool(10 * SIZE)
    release_load = threading.Event()
    calls: list[str] = []

    def slow_load() -> TinyModel:
        calls.append(threading.current_thread().name)
        release_load.wait(10)
        return TinyModel("shared")

    got: dict[str, object] = {}
    timers: dict[str, object] = {}

    def run(name: str) -> None:
        with load_timer() as timer, pool.use(("shared",), slow_load) as model:
            got[name] = model
        timers[name] = timer

    first = threading.Thread(target=run, args=("first",), name="first")
    first.start()
    wait_for(lambda: calls == ["first"], "the first load to start")
    second = threading.Thread(target=run, args=("second",), name="second")
    second.start()
    wait_for(lambda: len(pool._cond._waiters) == 1, "the second thread to wait for the load")
    release_load.set()
    first.join(10)
    second.join(10)
    assert calls == ["first"]
    assert got["first"] is got["second"]
    assert [load["shared"] for load in timers["first"].loads] == [False]
    assert [load["shared"] for load in timers["second"].loads] == [True]  # its wait counts as model-load time
    assert pool.stats(("shared",))["loads"] == 1


def test_failed_load_lets_a_waiting_thread_load_itself() -> None:
    pool = ModelPool(10 * SIZE)
    release = threading.Event()
    attempts: list[int] = []

    def flaky() -> TinyModel:
        attempts.append(1)
        if len(attempts) == 1:
            release.wait(10)
            raise ValueError("bad file")
        return TinyModel("x")

    errors: list[BaseException] = []

    def first() -> None:
        try:
            use_once(pool, "x", flaky)
        except ValueError as exc:
            errors.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    wait_for(lambda: attempts == [1], "the first load")
    second_done: list[bool] = []
    other = threading.Thread(target=lambda: second_done.append(use_once(pool, "x", flaky) is None))
    other.start()
    wait_for(lambda: len(pool._cond._waiters) == 1, "the second thread to wait")
    release.set()
    thread.join(10)
    other.join(10)
    assert [str(e) for e in errors] == ["bad file"]
    assert second_done == [True] and len(attempts) == 2 and pool.resident(("x",))


def test_load_timer_counts_only_the_loads_of_its_own_context() -> None:
    pool = ModelPool(10 * SIZE)
    timers: dict[str, object] = {}
    ready = threading.Barrier(2)

    def run(name: str) -> None:
        with load_timer() as timer:
            ready.wait(10)
            use_once(pool, name, Loader(name))
            timers[name] = timer

    threads = [threading.Thread(target=run, args=(name,)) for name in ("left", "right")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert [load["key"] for load in timers["left"].loads] == [("left",)]
    assert [load["key"] for load in timers["right"].loads] == [("right",)]
    assert current_load_timer() is None
    use_once(pool, "outside", Loader("outside"))  # no timer open: nothing to record, nothing fails


def test_load_timer_follows_a_copied_context_into_worker_threads() -> None:
    pool = ModelPool(10 * SIZE)
    with load_timer() as timer:
        context = contextvars.copy_context()
        thread = threading.Thread(target=context.run, args=(use_once, pool, "helper", Loader("helper")))
        thread.start()
        thread.join(10)
    assert [load["key"] for load in timer.loads] == [("helper",)]


# -- failures during load ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "oom",
    [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), MemoryError(),
     RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")],
    ids=["cuda", "python", "cpu-allocator"],
)
def test_out_of_memory_during_load_frees_idle_models_and_retries(oom: BaseException) -> None:
    pool = ModelPool(100 * SIZE)
    a, b = Loader("a"), Loader("b")
    pool.preload(("a",), a)
    big = Loader("big", fail_first=oom)
    with pool.use(("b",), b), pool.use(("big",), big) as model:
        assert model.name == "big"
        assert not a.alive(), "idle model a should have been freed for the retry"
        assert pool.resident(("b",)), "b is in use and must stay"
    assert big.calls == 2 and pool.stats(("big",))["loads"] == 1


def test_out_of_memory_twice_raises_and_leaves_no_half_entry() -> None:
    pool = ModelPool(100 * SIZE)
    calls: list[int] = []

    def never_fits() -> TinyModel:
        calls.append(1)
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.OutOfMemoryError):
        use_once(pool, "huge", never_fits)
    assert len(calls) == 2
    assert pool.report() == [] and pool.used_bytes == 0
    use_once(pool, "huge", Loader("huge"))  # a later run can load it
    assert pool.resident(("huge",))


def test_other_load_errors_are_not_retried_and_keep_idle_models() -> None:
    pool = ModelPool(100 * SIZE)
    a = Loader("a")
    pool.preload(("a",), a)
    broken = Loader("broken", fail_first=ValueError("checkpoint x.safetensors: missing key y"))
    with pytest.raises(ValueError, match="missing key y"):
        use_once(pool, "broken", broken)
    assert broken.calls == 1 and a.alive() and not pool.resident(("broken",))


def test_loaded_object_without_size_is_rejected() -> None:
    pool = ModelPool(SIZE)
    with pytest.raises(TypeError, match="size_bytes"):
        use_once(pool, "nosize", lambda: object())
    assert pool.report() == []


def test_a_load_asking_the_pool_for_itself_fails_instead_of_hanging() -> None:
    pool = ModelPool(SIZE)

    def recursive() -> TinyModel:
        with pool.use(("self",), recursive):
            pass
        return TinyModel("never")

    with pytest.raises(RuntimeError, match="asked for"):
        use_once(pool, "self", recursive)


def test_negative_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="budget"):
        ModelPool(-1)


# -- memory helpers ----------------------------------------------------------------------------------------------


def test_pick_device_and_dtype_on_cpu() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(" CPU ") == torch.device("cpu")
    assert pick_dtype("cpu", "auto") == torch.float32
    assert pick_dtype(torch.device("cpu"), "bf16") == torch.float32  # CPU runs float32 whatever is asked
    with pytest.raises(ValueError, match="device setting 'gpu' is not valid"):
        pick_device("gpu")
    with pytest.raises(ValueError, match="dtype setting 'fp8' is not valid"):
        pick_dtype("cpu", "fp8")
    if not torch.cuda.is_available():
        assert pick_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="no CUDA device"):
            pick_device("cuda:0")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pick_device_and_dtype_on_cuda() -> None:
    device = pick_device("cuda:0")
    assert device == torch.device("cuda", 0)
    assert pick_dtype(device, "auto") == torch.float16
    assert pick_dtype(device, "fp32") == torch.float32
    with pytest.raises(ValueError, match="only"):
        pick_device(f"cuda:{torch.cuda.device_count()}")
    budget = default_budget(device)
    assert 0 < budget < torch.cuda.get_device_properties(0).total_memory


def test_module_bytes_counts_parameters_and_buffers_once() -> None:
    norm = torch.nn.BatchNorm1d(8)  # weight, bias, running_mean, running_var (float32) + num_batches_tracked (int64)
    assert module_bytes(norm) == 4 * 8 * 4 + 8
    shared = torch.nn.Linear(4, 4, bias=False)
    tied = torch.nn.Sequential(shared, shared)
    assert module_bytes(tied) == 4 * 4 * 4
    assert module_bytes(torch.nn.Linear(4, 4).half()) == (16 + 4) * 2


def test_cpu_budget_is_a_share_of_ram() -> None:
    total = total_ram_bytes()
    assert 0 < default_budget("cpu") < total


def test_is_out_of_memory_recognises_torch_python_and_chained_errors() -> None:
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of memory"))  # only runtime errors carry allocator messages
    try:
        try:
            raise MemoryError()
        except MemoryError as inner:
            raise RuntimeError("node 3 (KSampler) failed") from inner
    except RuntimeError as wrapped:
        assert is_out_of_memory(wrapped)
