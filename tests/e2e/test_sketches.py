"""End to end: the sketch commands through Debian's redis-py (RESP2), using its own RedisBloom
helpers (r.bf(), r.cms()) where it has them, so replies must have the shapes it parses."""
import threading

import pytest
import redis


def test_bloom_through_redis_py(r):
    bf = r.bf()
    assert bf.create("bf", 0.01, 1000)
    with pytest.raises(redis.ResponseError, match="item exists"):
        bf.create("bf", 0.01, 1000)
    assert bf.add("bf", "a") == 1
    assert bf.add("bf", "a") == 0
    assert bf.madd("bf", "a", "b", "c") == [0, 1, 1]
    assert bf.exists("bf", "b") == 1
    assert bf.exists("bf", "zz") == 0
    assert bf.mexists("bf", "a", "zz") == [1, 0]
    info = bf.info("bf")
    assert info.capacity == 1000
    assert info.filterNum == 1
    assert info.insertedNum == 3
    assert info.expansionRate == 2
    assert r.execute_command("BF.CARD", "bf") == 3
    assert bf.insert("ins", ["x", "y"], capacity=10, error=0.001, noScale=True) == [1, 1]
    assert bf.info("ins").expansionRate is None
    with pytest.raises(redis.ResponseError, match="not found"):
        bf.insert("absent", ["x"], noCreate=True)
    assert r.type("bf") == "bloom"


def test_bloom_false_positive_rate_end_to_end(r):
    bf = r.bf()
    bf.create("fp", 0.01, 5000)
    pipe = r.pipeline(transaction=False)
    for i in range(5000):
        pipe.execute_command("BF.ADD", "fp", f"in{i}")
    pipe.execute()
    found = r.execute_command("BF.MEXISTS", "fp", *[f"in{i}" for i in range(5000)])
    assert all(found), "a Bloom filter has no false negatives"
    probes = r.execute_command("BF.MEXISTS", "fp", *[f"out{i}" for i in range(20000)])
    assert sum(probes) <= 20000 * 0.013


def test_count_min_through_redis_py(r):
    cms = r.cms()
    assert cms.initbyprob("c", 0.001, 0.01)
    assert cms.incrby("c", ["a", "b"], [5, 2]) == [5, 2]
    assert cms.query("c", "a", "b", "zz") == [5, 2, 0]
    info = cms.info("c")
    assert (info.width, info.depth, info.count) == (2000, 7, 7)


def test_hll_commands_and_pfadd_from_many_clients(floe_server):
    r = floe_server.client()
    r.flushall()
    r.execute_command("HLL.CREATE", "h", "LOG2M", "12", "EXPTHRESH", "13")

    def add(start):
        c = floe_server.client()
        for i in range(start, start + 500):
            c.execute_command("HLL.ADD", "h", "INT", i)
            c.pfadd("pf", f"e{i}")

    threads = [threading.Thread(target=add, args=(k * 500,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # EXPTHRESH 13 keeps up to 4096 elements exactly: nothing was lost between clients.
    assert float(r.execute_command("HLL.COUNT", "h")) == pytest.approx(2000.0)
    assert abs(r.pfcount("pf") - 2000) <= 2000 * 3 * 0.0081
    exported = r.execute_command("HLL.EXPORT", "h")
    assert exported.startswith(b"\\x")
    r.execute_command("HLL.IMPORT", "copy", exported)
    assert float(r.execute_command("HLL.COUNT", "copy")) == pytest.approx(2000.0)
    assert r.pfmerge("merged", "pf", "pf")
    assert r.pfcount("merged") == r.pfcount("pf")
    r.close()
