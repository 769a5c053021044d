import pytest


@pytest.fixture(autouse=True)
def _single_slot(redis_single_slot):
    """Every billing test proves, with Redis, that its scripts and multi-key commands touch one
    hash slot each (tests/redis_slots.py), as a Redis Cluster demands."""
    return redis_single_slot
