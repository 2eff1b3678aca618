// Reads from cached copies in a cluster (docs/cluster.md, rules C7 and C8): a node serves a
// read of another node's key from a leased copy, and a change at the key's home invalidates
// every copy before it replies. Three Engines with a ClusterNode each, on loopback, in one
// process; each test names the rule it checks.

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>

#include "cluster/cluster.h"
#include "server/command_test.h"
#include "server/internal/cluster_node.h"
#include "server/internal/cluster_testing.h"
#include "server/internal/sink_session_testing.h"

namespace floe::server {
namespace {

using internal::ClusterNode;
using internal::ReturnsWithin;
using internal::SinkSession;

class CachedReads : public ::testing::Test {
 protected:
  void SetUp() override {
    cluster_ = std::make_unique<internal::InProcessCluster>(internal::InProcessClusterOptions{
        .members = 3, .timeout_ms = 5000, .base = Config(), .first_client_port = 6100});
    ASSERT_TRUE(cluster_->WaitFormed());
  }
  void TearDown() override { cluster_.reset(); }

  Engine& engine(size_t i) { return cluster_->engine(i); }
  ClusterNode& node(size_t i) { return cluster_->node(i); }
  std::string KeyAt(int home, const std::string& prefix = "k") const {
    return cluster_->KeyAt(static_cast<size_t>(home), prefix);
  }
  static Reply Do(Session& s, std::vector<std::string> args) {
    return CommandTest::Decode(s.Run(args));
  }
  // Reads `key` at node i until the node holds a copy of it (the first read's prefetch).
  bool WaitForCopy(size_t i, const std::string& key) {
    Session s(&engine(i), 0);
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < until) {
      Do(s, {"GET", key});
      if (node(i).dkv().TryGetLocal(key).has_value()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return false;
  }
  uint64_t Proxied(size_t i) { return node(i).stats().proxied.load(); }

  std::unique_ptr<internal::InProcessCluster> cluster_;
};

// C8: after its first miss, a read of a key homed elsewhere runs from the node's copy: no
// request reaches the home.
TEST_F(CachedReads, ReadOfARemoteKeyIsServedFromItsCopy) {
  const std::string k = KeyAt(1);
  Session s0(&engine(0), 0);
  ASSERT_THAT(Do(s0, {"SET", k, "v", "EX", "1000"}), IsOk());
  ASSERT_TRUE(WaitForCopy(0, k));
  const uint64_t proxied = Proxied(1);
  const uint64_t hits = node(0).dkv().stats().cache_hits.load();
  EXPECT_THAT(Do(s0, {"GET", k}), IsBulk("v"));
  EXPECT_THAT(Do(s0, {"STRLEN", k}), IsInt(1));
  EXPECT_THAT(Do(s0, {"GETRANGE", k, "0", "-1"}), IsBulk("v"));
  EXPECT_THAT(Do(s0, {"EXISTS", k}), IsInt(1));
  EXPECT_THAT(Do(s0, {"TYPE", k}), IsSimple("string"));
  EXPECT_THAT(Do(s0, {"MGET", k}), IsArrayOfSize(1));
  const Reply ttl = Do(s0, {"TTL", k});
  EXPECT_TRUE(ttl.type == Reply::Type::kInteger && ttl.integer > 990 && ttl.integer <= 1000);
  EXPECT_EQ(Proxied(1), proxied);
  EXPECT_GE(node(0).dkv().stats().cache_hits.load(), hits + 7);
  // INFO says so.
  const std::string info = Do(s0, {"INFO", "cluster"}).str;
  EXPECT_NE(info.find("cache_keys:1\r\n"), std::string::npos) << info;
  EXPECT_NE(info.find("cluster_home_ready:1\r\n"), std::string::npos) << info;
}

// C7: a change at the home (a client of the home itself) invalidates every copy before its
// reply: the next read anywhere sees it.
TEST_F(CachedReads, ChangeAtTheHomeInvalidatesEveryCopyFirst) {
  const std::string k = KeyAt(1);
  Session home(&engine(1), 0);
  ASSERT_THAT(Do(home, {"SET", k, "old"}), IsOk());
  ASSERT_TRUE(WaitForCopy(0, k));
  ASSERT_TRUE(WaitForCopy(2, k));
  const uint64_t sent = node(1).dkv().stats().invalidations_sent.load();
  for (const char* v : {"new", "newer"}) {
    ASSERT_THAT(Do(home, {"SET", k, v}), IsOk());
    Session s0(&engine(0), 0), s2(&engine(2), 0);
    EXPECT_THAT(Do(s0, {"GET", k}), IsBulk(v));
    EXPECT_THAT(Do(s2, {"GET", k}), IsBulk(v));
  }
  EXPECT_GE(node(1).dkv().stats().invalidations_sent.load(), sent + 2);
  // In-place changes too (APPEND, SETRANGE, INCR), and the expiry.
  ASSERT_TRUE(WaitForCopy(0, k));
  ASSERT_THAT(Do(home, {"APPEND", k, "!"}), IsInt(6));
  Session s0(&engine(0), 0);
  EXPECT_THAT(Do(s0, {"GET", k}), IsBulk("newer!"));
  ASSERT_TRUE(WaitForCopy(0, k));
  ASSERT_THAT(Do(home, {"SETRANGE", k, "0", "N"}), IsInt(6));
  EXPECT_THAT(Do(s0, {"GET", k}), IsBulk("Newer!"));
  ASSERT_TRUE(WaitForCopy(0, k));
  ASSERT_THAT(Do(home, {"EXPIRE", k, "500"}), IsInt(1));
  const Reply ttl = Do(s0, {"TTL", k});
  EXPECT_TRUE(ttl.type == Reply::Type::kInteger && ttl.integer > 490) << ttl.str;
  ASSERT_TRUE(WaitForCopy(0, k));
  ASSERT_THAT(Do(home, {"DEL", k}), IsInt(1));
  EXPECT_THAT(Do(s0, {"GET", k}), IsNil());
}

// C7 through a proxy session: a client of a third node changes the key.
TEST_F(CachedReads, ChangeThroughAnotherNodeInvalidatesCopies) {
  const std::string k = KeyAt(1);
  Session s0(&engine(0), 0), s2(&engine(2), 0);
  ASSERT_THAT(Do(s2, {"SET", k, "1"}), IsOk());
  ASSERT_TRUE(WaitForCopy(0, k));
  for (int i = 2; i <= 20; i++) {
    ASSERT_THAT(Do(s2, {"INCR", k}), IsInt(i));
    EXPECT_THAT(Do(s0, {"GET", k}), IsBulk(std::to_string(i)));
    Do(s0, {"GET", k});  // prefetches the copy again
  }
}

// C8: while a client's own request to the home is outstanding, its reads of that home's keys
// follow it there instead of reading the copy (the copy may not show the client's write yet).
TEST_F(CachedReads, AClientsReadFollowsItsOwnOutstandingWrite) {
  const std::string k = KeyAt(1);
  Session s0(&engine(0), 0);
  ASSERT_THAT(Do(s0, {"SET", k, "old"}), IsOk());
  ASSERT_TRUE(WaitForCopy(0, k));
  for (int i = 0; i < 50; i++) {
    SinkSession c(&engine(0));
    const std::string v = "v" + std::to_string(i);
    c.Send({"SET", k, v});
    c.Send({"GET", k});
    const std::vector<Reply> r = c.Replies();
    ASSERT_EQ(r.size(), 2u);
    EXPECT_THAT(r[0], IsOk());
    EXPECT_THAT(r[1], IsBulk(v)) << "round " << i;
    ASSERT_TRUE(WaitForCopy(0, k));
  }
}

// C7: a change at the home that waits for invalidations holds the client's next commands, so
// its own next read sees the change.
TEST_F(CachedReads, AWaitingChangeHoldsItsClientsNextCommands) {
  const std::string k = KeyAt(1);
  Session s1(&engine(1), 0);
  ASSERT_THAT(Do(s1, {"SET", k, "old"}), IsOk());
  ASSERT_TRUE(WaitForCopy(0, k));
  SinkSession c(&engine(1));
  c.Send({"SET", k, "new"});
  EXPECT_TRUE(c.Blocked());  // a connection runs nothing more until the change ran
  const std::vector<Reply> r = c.Replies();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_THAT(r[0], IsOk());
  EXPECT_FALSE(c.Blocked());
  c.Send({"GET", k});
  EXPECT_THAT(c.Replies()[0], IsBulk("new"));
  Session s0(&engine(0), 0);
  EXPECT_THAT(Do(s0, {"GET", k}), IsBulk("new"));
}

// C7: the part of a split DEL homed at the client's own node waits for its keys' copies, the
// client's reply comes once every part ran, and the part is counted once.
TEST_F(CachedReads, SplitDelWaitsForTheCopiesOfItsLocalKeys) {
  const std::string here = KeyAt(1, "a"), there = KeyAt(2, "b");
  Session s1(&engine(1), 0);
  ASSERT_THAT(Do(s1, {"MSET", here, "1"}), IsOk());
  ASSERT_THAT(Do(s1, {"SET", there, "2"}), IsOk());
  ASSERT_TRUE(WaitForCopy(0, here));
  SinkSession c(&engine(1));
  c.Send({"DEL", here, there});
  const std::vector<Reply> r = c.Replies();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_THAT(r[0], IsInt(2));
  EXPECT_GE(node(1).dkv().stats().invalidations_sent.load(), 1u);  // the part did wait
  Session s0(&engine(0), 0);
  EXPECT_THAT(Do(s0, {"GET", here}), IsNil());
  EXPECT_THAT(Do(s0, {"GET", there}), IsNil());
  // Counted once, when it ran (it was counted when put off, as if it had run, and again).
  const std::string info = Do(s1, {"INFO", "commandstats"}).str;
  EXPECT_NE(info.find("cmdstat_del:calls=1,"), std::string::npos) << info;
}

// C7: FLUSHALL changes every key: no copy of any survives it.
TEST_F(CachedReads, FlushallInvalidatesEveryCopy) {
  std::vector<std::string> keys;
  Session s1(&engine(1), 0);
  for (int i = 0; i < 5; i++) {
    keys.push_back(KeyAt(1, "f" + std::to_string(i) + "_"));
    ASSERT_THAT(Do(s1, {"SET", keys.back(), "x"}), IsOk());
    ASSERT_TRUE(WaitForCopy(0, keys.back()));
  }
  Session s2(&engine(2), 0);
  ASSERT_THAT(Do(s2, {"FLUSHALL"}), IsOk());
  Session s0(&engine(0), 0);
  for (const std::string& k : keys) EXPECT_THAT(Do(s0, {"GET", k}), IsNil());
  // The same from a client of the home with a sink (the fanned-out part waits there).
  ASSERT_THAT(Do(s1, {"SET", keys[0], "y"}), IsOk());
  ASSERT_TRUE(WaitForCopy(0, keys[0]));
  SinkSession c(&engine(1));
  c.Send({"FLUSHDB"});
  EXPECT_THAT(c.Replies()[0], IsOk());
  EXPECT_THAT(Do(s0, {"GET", keys[0]}), IsNil());
}

// C7: a transaction at the home with a queued change waits for the copies of its keys.
TEST_F(CachedReads, ExecWaitsForTheCopiesOfItsQueuedChanges) {
  const std::string k = "{t}" + KeyAt(1, "x");
  const std::string tagged = "{" + KeyAt(1, "t") + "}";
  Session s1(&engine(1), 0);
  ASSERT_THAT(Do(s1, {"SET", tagged + "a", "0"}), IsOk());
  ASSERT_TRUE(WaitForCopy(0, tagged + "a"));
  Session s2(&engine(2), 0);  // through a proxy session
  ASSERT_THAT(Do(s2, {"MULTI"}), IsOk());
  ASSERT_THAT(Do(s2, {"INCR", tagged + "a"}), IsSimple("QUEUED"));
  ASSERT_THAT(Do(s2, {"SET", tagged + "b", "1"}), IsSimple("QUEUED"));
  ASSERT_THAT(Do(s2, {"EXEC"}), IsArrayOfSize(2));
  Session s0(&engine(0), 0);
  EXPECT_THAT(Do(s0, {"GET", tagged + "a"}), IsBulk("1"));
  ASSERT_TRUE(WaitForCopy(0, tagged + "a"));
  SinkSession c(&engine(1));  // at the home itself
  c.Send({"MULTI"});
  c.Send({"INCR", tagged + "a"});
  c.Send({"EXEC"});
  const std::vector<Reply> r = c.Replies();
  ASSERT_EQ(r.size(), 3u);
  EXPECT_THAT(r[2], IsArrayOfSize(1));
  EXPECT_THAT(Do(s0, {"GET", tagged + "a"}), IsBulk("2"));
}

// C7: an EXEC's change waits for the copies of every queued write's keys, not only the last
// one's (the keys of an earlier MSET were dropped: the copy of `a` outlived the change).
TEST_F(CachedReads, AnExecInvalidatesTheCopiesOfEveryQueuedWrite) {
  const std::string tagged = "{" + KeyAt(1, "t") + "}";
  Session s1(&engine(1), 0);
  ASSERT_THAT(Do(s1, {"SET", tagged + "a", "old"}), IsOk());
  ASSERT_TRUE(WaitForCopy(0, tagged + "a"));
  ASSERT_THAT(Do(s1, {"MULTI"}), IsOk());
  ASSERT_THAT(Do(s1, {"MSET", tagged + "a", "new", tagged + "c", "1"}), IsSimple("QUEUED"));
  ASSERT_THAT(Do(s1, {"SET", tagged + "b", "1"}), IsSimple("QUEUED"));
  ASSERT_THAT(Do(s1, {"EXEC"}), IsArrayOfSize(2));
  Session s0(&engine(0), 0);
  EXPECT_THAT(Do(s0, {"GET", tagged + "a"}), IsBulk("new"));
}

// C7 with a holder that is gone: the change waits out the holder's lease (L2) and completes.
TEST_F(CachedReads, ChangeCompletesWhenAHolderIsGone) {
  const std::string k = KeyAt(1);
  Session s1(&engine(1), 0);
  ASSERT_THAT(Do(s1, {"SET", k, "old"}), IsOk());
  ASSERT_TRUE(WaitForCopy(0, k));
  cluster_->Kill(0);
  EXPECT_THAT(Do(s1, {"SET", k, "new"}), IsOk());
  EXPECT_GE(node(1).dkv().stats().lease_waits.load(), 1u);
  Session s2(&engine(2), 0);
  EXPECT_THAT(Do(s2, {"GET", k}), IsBulk("new"));
}

// C7: a client that leaves while its change waits for invalidations leaves its keys free.
TEST_F(CachedReads, AClientLeavingWhileItsChangeWaitsFreesTheKeys) {
  const std::string k = KeyAt(1);
  Session s1(&engine(1), 0);
  ASSERT_THAT(Do(s1, {"SET", k, "old"}), IsOk());
  ASSERT_TRUE(WaitForCopy(0, k));
  cluster_->Kill(0);  // the invalidation now waits out node 0's lease
  {
    SinkSession c(&engine(1));
    c.Send({"SET", k, "never"});
    EXPECT_TRUE(c.Blocked());
    c.End();  // the connection closes before the keys are ready
  }
  // The next change waits for the abandoned one (released once its keys were ready).
  EXPECT_THAT(Do(s1, {"SET", k, "next"}), IsOk());
  EXPECT_THAT(Do(s1, {"GET", k}), IsBulk("next"));
  EXPECT_TRUE(node(1).dkv().ApplyIfFree({k}, [] {}));
}

// Only strings of up to kCacheValueMax bytes are handed out; other reads go to the home.
TEST_F(CachedReads, SketchesAndLargeStringsAreNotCopied) {
  const std::string h = KeyAt(1, "h"), big = KeyAt(1, "big");
  Session s1(&engine(1), 0), s0(&engine(0), 0);
  ASSERT_THAT(Do(s1, {"PFADD", h, "a"}), IsInt(1));
  ASSERT_THAT(Do(s1, {"SET", big, std::string(internal::kCacheValueMax + 1, 'x')}), IsOk());
  for (int i = 0; i < 20; i++) {
    EXPECT_THAT(Do(s0, {"TYPE", h}), IsSimple("hll"));
    EXPECT_THAT(Do(s0, {"STRLEN", big}), IsInt(static_cast<int64_t>(internal::kCacheValueMax + 1)));
  }
  EXPECT_EQ(node(0).dkv().CacheSize(), 0u);
}

// Copies count toward maxmemory and go first when memory is short.
TEST_F(CachedReads, CopiesAreChargedAndDroppedFirstUnderPressure) {
  const std::string k = KeyAt(1);
  Session s1(&engine(1), 0), s0(&engine(0), 0);
  ASSERT_THAT(Do(s1, {"SET", k, std::string(60000, 'x')}), IsOk());
  ASSERT_TRUE(WaitForCopy(0, k));
  const int64_t with_copy = engine(0).UsedMemory();
  EXPECT_GE(node(0).dkv().CacheBytes(), 60000u);
  ASSERT_THAT(Do(s0, {"CONFIG", "SET", "maxmemory", std::to_string(with_copy - 1000)}), IsOk());
  std::this_thread::sleep_for(std::chrono::milliseconds(5));  // past the 1 ms refresh
  EXPECT_LT(engine(0).UsedMemory(/*may_trim_copies=*/true), with_copy - 50000);
  EXPECT_EQ(node(0).dkv().CacheSize(), 0u);
}

// Coherence X4: a client's node drops its own copy when it forwards a change to the key, so the
// home does not invalidate it (no round trip back), and the node's next read sees the change.
TEST_F(CachedReads, AChangeFromAHolderDoesNotInvalidateItsOwnNode) {
  const std::string k = KeyAt(1);
  Session s0(&engine(0), 0);
  ASSERT_THAT(Do(s0, {"SET", k, "0"}), IsOk());
  ASSERT_TRUE(WaitForCopy(0, k));
  const uint64_t sent = node(1).dkv().stats().invalidations_sent.load();
  for (int i = 1; i <= 20; i++) {
    ASSERT_THAT(Do(s0, {"INCR", k}), IsInt(i));
    EXPECT_THAT(Do(s0, {"GET", k}), IsBulk(std::to_string(i)));
    ASSERT_TRUE(WaitForCopy(0, k));
  }
  EXPECT_EQ(node(1).dkv().stats().invalidations_sent.load(), sent);
  // Another holder is still invalidated.
  ASSERT_TRUE(WaitForCopy(2, k));
  ASSERT_THAT(Do(s0, {"SET", k, "x"}), IsOk());
  Session s2(&engine(2), 0);
  EXPECT_THAT(Do(s2, {"GET", k}), IsBulk("x"));
  EXPECT_EQ(node(1).dkv().stats().invalidations_sent.load(), sent + 1);
}

// E2 under C7: copies are trimmed when memory is short, but not from inside a change at the
// home. ApplyIfFree runs the change with its keys' DKV locks held, and a handler that measures
// memory (APPEND growing a string checks maxmemory) went on to trim the copies, locking the
// stripe of each: a copy in the changed key's own stripe hung the thread for ever (and the
// exclusive section with it).
TEST_F(CachedReads, AChangeThatMeasuresMemoryDoesNotDeadlockOnTheCopies) {
  const std::string k = KeyAt(0, "a");
  // A key of node 1 in the same DKV lock stripe as k (dkv.cc: 256 stripes by the key's hash).
  const size_t stripe = store::KeyView(k).hash() % 256;
  std::string c;
  for (int i = 0; c.empty(); i++) {
    std::string candidate = KeyAt(1, "c" + std::to_string(i) + "_");
    if (store::KeyView(candidate).hash() % 256 == stripe) c = candidate;
  }
  Session s0(&engine(0), 0), s1(&engine(1), 0);
  ASSERT_THAT(Do(s1, {"SET", c, std::string(60000, 'x')}), IsOk());
  ASSERT_TRUE(WaitForCopy(0, c));
  ASSERT_THAT(Do(s0, {"SET", k, "x"}), IsOk());
  // Queued before the limit is set (queueing checks it); EXEC does not, so the measure that
  // finds memory short is the one APPEND makes inside the change.
  ASSERT_THAT(Do(s0, {"MULTI"}), IsOk());
  ASSERT_THAT(Do(s0, {"APPEND", k, std::string(200, 'y')}), IsSimple("QUEUED"));
  const int64_t used = engine(0).UsedMemory();
  Session admin(&engine(0), 0);
  ASSERT_THAT(Do(admin, {"CONFIG", "SET", "maxmemory", std::to_string(used - 1000)}), IsOk());
  std::this_thread::sleep_for(std::chrono::milliseconds(3));  // past the 1 ms refresh
  Reply exec;
  ASSERT_TRUE(ReturnsWithin(std::chrono::seconds(20), [&] { exec = Do(s0, {"EXEC"}); }));
  ASSERT_THAT(exec, IsArrayOfSize(1));
  EXPECT_THAT(exec.elements[0], IsInt(201));
  // The copy still goes when memory is short, at the next command that checks.
  std::this_thread::sleep_for(std::chrono::milliseconds(3));
  EXPECT_THAT(Do(s0, {"SET", KeyAt(0, "b"), "1"}), IsOk());
  EXPECT_EQ(node(0).dkv().CacheSize(), 0u);
}

}  // namespace
}  // namespace floe::server
