// replica: the owner's side of the stream, against real receivers (contracts R8-R11 of
// replica.h, docs/replication.md S4, S5, S8).

#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>

#include "replica/replica.h"
#include "replica/replica_testing.h"

namespace floe::replica {
namespace {

struct Backup {
  explicit Backup(uint32_t id) { table.self_ = id; }
  FakeTable table;
  FakeSink sink;
  Receiver receiver{&table, &sink};
};

// Delivers every ready message, losing a request or an answer with probability `loss`.
// Returns the number of messages sent.
int Pump(Sender& sender, std::map<uint32_t, Backup*>& backups, std::mt19937_64* rng = nullptr,
         double loss = 0) {
  int sent = 0;
  for (uint32_t id : sender.Ready()) {
    std::optional<std::string> bytes = sender.NextMessage(id);
    if (!bytes) continue;
    sent++;
    Result<Request> req = DecodeRequest(*bytes, 1ull << 30);
    EXPECT_TRUE(req.ok()) << req.status().ToString();
    std::uniform_real_distribution<double> u(0, 1);
    if (!req.ok() || (rng != nullptr && u(*rng) < loss)) {
      sender.OnFailed(id);
      continue;
    }
    const Answer answer = backups.at(id)->receiver.Receive(*req);
    if (rng != nullptr && u(*rng) < loss) {
      sender.OnFailed(id);
      continue;
    }
    Result<Answer> decoded = DecodeAnswer(EncodeAnswer(answer));
    EXPECT_TRUE(decoded.ok());
    sender.OnAnswer(id, *decoded);
  }
  return sent;
}

void Write(Sender& sender, uint16_t slot, std::string_view key, std::string_view value) {
  Result<uint64_t> n = sender.Open(slot);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  const Entry e{.kind = EntryKind::kPut, .key = key, .type = 1, .bytes = value};
  sender.Close(slot, *n, std::span<const Entry>(&e, 1));
}

// R8: changes closed in any order, on several threads, with messages and answers lost, reach
// both backups once each, in n order, and all commit.
TEST(SenderTest, ChangesOfOneSlotLeaveInNumberOrder) {
  Sender sender;
  Backup a(2), b(3);
  std::map<uint32_t, Backup*> backups = {{2, &a}, {3, &b}};
  {
    // A change leaves only once it and every earlier one closed.
    sender.Configure(41, 1, {{2, 7}}, {});
    Result<uint64_t> first = sender.Open(41);
    Result<uint64_t> second = sender.Open(41);
    ASSERT_TRUE(first.ok() && second.ok());
    Write(sender, 41, "third", "3");
    EXPECT_FALSE(sender.NextMessage(2));
    const Entry e1{.kind = EntryKind::kPut, .key = "first", .bytes = "1"};
    sender.Close(41, *first, std::span<const Entry>(&e1, 1));
    std::optional<std::string> m = sender.NextMessage(2);
    ASSERT_TRUE(m);
    Result<Request> req = DecodeRequest(*m, 1 << 20);
    ASSERT_TRUE(req.ok());
    ASSERT_EQ(req->groups.size(), 1u);
    ASSERT_EQ(req->groups[0].changes.size(), 1u);  // not the third: the second is still open
    EXPECT_EQ(req->groups[0].changes[0].n, 1u);
    sender.OnAnswer(2, a.receiver.Receive(*req));
    const Entry e2{.kind = EntryKind::kPut, .key = "second", .bytes = "2"};
    sender.Close(41, *second, std::span<const Entry>(&e2, 1));
    for (int round = 0; round < 5; round++) Pump(sender, backups);
    EXPECT_EQ(a.sink.installed,
              (std::vector<std::string>{"41#1:1/first=1;", "41#2:1/second=2;", "41#3:1/third=3;"}));
    a.sink.installed.clear();
    sender.Drop(41);
  }
  sender.Configure(40, 1, {{2, 7}, {3, 7}}, {});
  constexpr int kThreads = 3;
  constexpr int kPerThread = 300;
  std::atomic<int> writers{kThreads};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      std::vector<uint64_t> open;
      for (int i = 0; i < kPerThread; i++) {
        Result<uint64_t> n = sender.Open(40);
        if (!n.ok()) {
          ADD_FAILURE() << n.status().ToString();
          break;
        }
        open.push_back(*n);
        // Close a random one of those opened: changes close out of order.
        if (open.size() > 3 || i + 1 == kPerThread) {
          while (!open.empty()) {
            const size_t k = rng() % open.size();
            const std::string v = std::to_string(open[k]);
            const Entry e{.kind = EntryKind::kPut, .key = "k", .bytes = v};
            sender.Close(40, open[k], std::span<const Entry>(&e, 1));
            open.erase(open.begin() + static_cast<ptrdiff_t>(k));
          }
        }
      }
      writers--;
    });
  }
  std::mt19937_64 rng(99);
  while (writers.load() > 0) Pump(sender, backups, &rng, 0.2);
  for (auto& th : threads) th.join();
  for (int round = 0; round < 200 && sender.committed(40) < kThreads * kPerThread; round++) {
    Pump(sender, backups, &rng, 0.2);
  }
  for (int round = 0; round < 10; round++) Pump(sender, backups);  // committed n reaches both
  ASSERT_EQ(sender.committed(40), uint64_t{kThreads * kPerThread});
  for (Backup* backup : {&a, &b}) {
    ASSERT_EQ(backup->sink.installed.size(), size_t{kThreads * kPerThread});
    for (size_t i = 0; i < backup->sink.installed.size(); i++) {
      // Each change's value is its own n, so installs in n order read 1, 2, 3, ...
      EXPECT_EQ(backup->sink.installed[i],
                "40#" + std::to_string(i + 1) + ":1/k=" + std::to_string(i + 1) + ";");
    }
  }
  EXPECT_EQ(sender.queued_bytes(), 0u);
}

// R9: a change commits once every in-sync backup received it; its callback runs then.
TEST(SenderTest, RepliesWaitForEveryBackup) {
  Sender sender;
  Backup a(2), b(3);
  sender.Configure(5, 1, {{2, 7}, {3, 7}}, {});
  Write(sender, 5, "x", "1");
  EXPECT_EQ(sender.started(5), 1u);
  EXPECT_EQ(sender.committed(5), 0u);
  int done = 0;
  sender.WhenCommitted(5, 1, [&done](Status s) {
    EXPECT_TRUE(s.ok());
    done++;
  });
  std::optional<std::string> to_a = sender.NextMessage(2);
  ASSERT_TRUE(to_a);
  sender.OnAnswer(2, a.receiver.Receive(*DecodeRequest(*to_a, 1 << 20)));
  EXPECT_EQ(done, 0);  // b has not received it
  EXPECT_EQ(sender.committed(5), 0u);
  std::optional<std::string> to_b = sender.NextMessage(3);
  ASSERT_TRUE(to_b);
  sender.OnAnswer(3, b.receiver.Receive(*DecodeRequest(*to_b, 1 << 20)));
  EXPECT_EQ(done, 1);
  EXPECT_EQ(sender.committed(5), 1u);
  // Neither backup installed it yet: they learn the committed n from the next message.
  EXPECT_TRUE(a.sink.installed.empty());
  std::map<uint32_t, Backup*> backups = {{2, &a}, {3, &b}};
  Pump(sender, backups);
  EXPECT_EQ(a.sink.installed.size(), 1u);
  EXPECT_EQ(b.sink.installed.size(), 1u);
  // A waiter for what has committed runs at once.
  sender.WhenCommitted(5, 1, [&done](Status) { done++; });
  EXPECT_EQ(done, 2);
  // No backups: a change commits as it closes.
  sender.Configure(6, 1, {}, {});
  Write(sender, 6, "y", "1");
  EXPECT_EQ(sender.committed(6), 1u);
}

// R9: a filling backup is sent every change but holds no commit back.
TEST(SenderTest, AFillingBackupHoldsNothingBack) {
  Sender sender;
  Backup a(2), f(4);
  sender.Configure(9, 1, {{2, 7}}, {{4, 7}});
  Write(sender, 9, "x", "1");
  std::map<uint32_t, Backup*> only_a = {{2, &a}};
  std::optional<std::string> to_a = sender.NextMessage(2);
  ASSERT_TRUE(to_a);
  sender.OnAnswer(2, a.receiver.Receive(*DecodeRequest(*to_a, 1 << 20)));
  EXPECT_EQ(sender.committed(9), 1u);
  std::optional<std::string> to_f = sender.NextMessage(4);
  ASSERT_TRUE(to_f);  // the filling backup is sent the change too
  Result<Request> req = DecodeRequest(*to_f, 1 << 20);
  ASSERT_TRUE(req.ok());
  ASSERT_EQ(req->groups.size(), 1u);
  EXPECT_EQ(req->groups[0].changes.size(), 1u);
  EXPECT_GT(sender.queued_bytes(), 0u);  // kept until the filling backup has it
  sender.OnAnswer(4, f.receiver.Receive(*req));
  EXPECT_EQ(sender.queued_bytes(), 0u);
}

// R10: one message in flight per backup; what closes meanwhile is batched into the next, each
// message at most kBatchBytes.
TEST(SenderTest, OneMessageInFlightPerBackup) {
  Sender sender;
  Backup a(2);
  sender.Configure(1, 1, {{2, 7}}, {});
  sender.Configure(2, 1, {{2, 7}}, {});
  Write(sender, 1, "a", "1");
  std::optional<std::string> first = sender.NextMessage(2);
  ASSERT_TRUE(first);
  EXPECT_FALSE(sender.NextMessage(2));  // in flight
  EXPECT_TRUE(sender.Ready().empty());
  const std::string mib(1 << 20, 'v');
  for (int i = 0; i < 12; i++) Write(sender, static_cast<uint16_t>(1 + i % 2), "k", mib);
  EXPECT_FALSE(sender.NextMessage(2));
  sender.OnAnswer(2, a.receiver.Receive(*DecodeRequest(*first, 1 << 20)));
  std::optional<std::string> second = sender.NextMessage(2);
  ASSERT_TRUE(second);
  EXPECT_LE(second->size(), kBatchBytes + (1 << 20) + 4096);
  Result<Request> req = DecodeRequest(*second, 1 << 30);
  ASSERT_TRUE(req.ok());
  size_t changes = 0;
  for (const Group& g : req->groups) changes += g.changes.size();
  EXPECT_GT(changes, 1u);   // batched
  EXPECT_LT(changes, 12u);  // bounded
  sender.OnAnswer(2, a.receiver.Receive(*req));
  std::map<uint32_t, Backup*> backups = {{2, &a}};
  for (int round = 0; round < 20 && Pump(sender, backups) > 0; round++) {
  }
  EXPECT_EQ(sender.committed(1), 7u);
  EXPECT_EQ(sender.committed(2), 6u);
  EXPECT_EQ(a.sink.installed.size(), 13u);
}

// R10: a change larger than kPartBytes travels in parts and is installed whole.
TEST(SenderTest, ALargeChangeTravelsInParts) {
  Sender sender;
  Backup a(2);
  sender.Configure(3, 1, {{2, 7}}, {});
  const std::string five(5 << 20, 'p');
  Result<uint64_t> n = sender.Open(3);
  ASSERT_TRUE(n.ok());
  std::vector<Entry> entries;
  for (const char* key : {"a", "b", "c"}) {
    entries.push_back({.kind = EntryKind::kPut, .key = key, .bytes = five});
  }
  sender.Close(3, *n, entries);
  Write(sender, 3, "after", "x");
  std::map<uint32_t, Backup*> backups = {{2, &a}};
  std::mt19937_64 rng(5);
  int messages = 0;
  for (int round = 0; round < 100 && sender.committed(3) < 2; round++) {
    messages += Pump(sender, backups, &rng, 0.3);
  }
  for (int round = 0; round < 20 && Pump(sender, backups) > 0; round++) messages++;
  EXPECT_GE(messages, 3);
  ASSERT_EQ(a.sink.installed.size(), 2u);
  const std::string whole = "3#1:1/a=" + five + ";1/b=" + five + ";1/c=" + five + ";";
  EXPECT_TRUE(a.sink.installed[0] == whole);
  EXPECT_EQ(a.sink.installed[1], "3#2:1/after=x;");
}

// R11 (rule S13): a backup with a newer owner fences the slot; its waiters fail, nothing more
// is numbered.
TEST(SenderTest, AFencedSlotFailsItsWaiters) {
  Sender sender;
  Backup a(2);
  a.table.ownership_[7] = 2;  // a newer owner was agreed
  sender.Configure(7, 1, {{2, 7}}, {});
  Write(sender, 7, "x", "1");
  Status result;
  bool ran = false;
  sender.WhenCommitted(7, 1, [&](Status s) {
    result = s;
    ran = true;
  });
  std::optional<std::string> m = sender.NextMessage(2);
  ASSERT_TRUE(m);
  sender.OnAnswer(2, a.receiver.Receive(*DecodeRequest(*m, 1 << 20)));
  ASSERT_TRUE(ran);
  EXPECT_EQ(result.code(), StatusCode::kAborted);
  EXPECT_FALSE(sender.Open(7).ok());
  EXPECT_EQ(sender.committed(7), 0u);
  EXPECT_TRUE(a.sink.installed.empty());
  // Dropping a slot fails its waiters the same way.
  sender.Configure(8, 1, {{2, 7}}, {});
  Write(sender, 8, "y", "1");
  ran = false;
  sender.WhenCommitted(8, 1, [&](Status s) {
    result = s;
    ran = true;
  });
  sender.Drop(8);
  EXPECT_TRUE(ran);
  EXPECT_EQ(result.code(), StatusCode::kAborted);
  EXPECT_FALSE(sender.Open(8).ok());
}

}  // namespace
}  // namespace floe::replica
