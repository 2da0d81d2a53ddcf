"""The heap collector: what survives a full collection is frozen, so the next one walks only what is new."""

import asyncio
import gc

from nothing.scheduler.collector import HeapCollector


async def _full_collection_then_loop_turn() -> None:
    gc.collect()  # a full collection, as the interpreter sets one off
    await asyncio.sleep(0)  # the freeze is done on the loop
    await asyncio.sleep(0)


def test_survivors_of_a_full_collection_are_frozen_and_later_ones_walk_only_new_objects():
    async def scenario():
        collector = HeapCollector()
        collector.start()
        try:
            await _full_collection_then_loop_turn()
            frozen = gc.get_freeze_count()
            assert collector.freezes == 1 and frozen > 1000  # the test process's modules, functions, ...
            made = [[i] for i in range(5000)]  # new long-lived objects: not frozen yet
            assert gc.get_freeze_count() == frozen
            await _full_collection_then_loop_turn()
            assert collector.freezes == 2 and gc.get_freeze_count() >= frozen + len(made)
        finally:
            collector.stop()
        assert gc.get_freeze_count() == 0  # stopping thaws everything

    asyncio.run(scenario())


def test_frozen_objects_are_thawed_every_thaw_seconds_so_their_cycles_can_be_freed():
    async def scenario():
        collector = HeapCollector(thaw_seconds=0.0)
        collector.start()
        try:
            gc.freeze()
            assert gc.get_freeze_count() > 0
            await _full_collection_then_loop_turn()  # due: thawed instead of frozen again
            assert collector.thaws == 1 and collector.freezes == 0
            assert gc.get_freeze_count() == 0
        finally:
            collector.stop()

    asyncio.run(scenario())


def test_off_leaves_python_s_collector_as_it_is():
    async def scenario():
        collector = HeapCollector(freeze=False)
        collector.start()
        await _full_collection_then_loop_turn()
        assert collector.freezes == 0 and gc.get_freeze_count() == 0
        collector.stop()

    asyncio.run(scenario())
