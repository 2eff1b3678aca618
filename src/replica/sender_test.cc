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
         double loss = 0, std::vector<std::string>* earlier = nullptr) {
  int sent = 0;
  for (uint32_t id : sender.Ready()) {
    std::optional<std::string> bytes = sender.NextMessage(id);
    if (!bytes) continue;
    sent++;
    Result<Request> req = DecodeRequest(*bytes, 1ull << 30);
    EXPECT_TRUE(req.ok()) << req.status().ToString();
    std::uniform_real_distribution<double> u(0, 1);
    if (!req.ok() || (rng != nullptr && u(*rng) < loss)) {
      sender.OnFailed(id, sender.in_flight(id));
      continue;
    }
    const Answer answer = backups.at(id)->receiver.Receive(*req);
    if (rng != nullptr && earlier != nullptr) {
      // A late duplicate of an earlier message of this sender (the network, or an RPC resend)
      // reaches the backup now and then; its answer goes nowhere.
      if (earlier->size() < 64) earlier->push_back(*bytes);
      if (u(*rng) < loss / 2) {
        Result<Request> old = DecodeRequest((*earlier)[(*rng)() % earlier->size()], 1ull << 30);
        if (old.ok() && old->target == id) backups.at(id)->receiver.Receive(*old);
      }
    }
    if (rng != nullptr && u(*rng) < loss) {
      sender.OnFailed(id, req->id);
      continue;
    }
    Result<Answer> decoded = DecodeAnswer(EncodeAnswer(answer));
    EXPECT_TRUE(decoded.ok());
    // A paused backup is sent to again after the caller's wait: here at once.
    if (sender.OnAnswer(id, *decoded)) sender.Resume(id);
  }
  return sent;
}

void Write(Sender& sender, uint16_t slot, std::string_view key, std::string_view value) {
  Result<Sender::Ticket> n = sender.Open(slot);
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
    ASSERT_TRUE(sender.Own(41, 1, 0, {{2, 7}}, {}).ok());
    Pump(sender, backups);  // asked where it is
    Result<Sender::Ticket> first = sender.Open(41);
    Result<Sender::Ticket> second = sender.Open(41);
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
  ASSERT_TRUE(sender.Own(40, 1, 0, {{2, 7}, {3, 7}}, {}).ok());
  constexpr int kThreads = 3;
  constexpr int kPerThread = 300;
  std::atomic<int> writers{kThreads};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      std::vector<Sender::Ticket> open;
      for (int i = 0; i < kPerThread; i++) {
        Result<Sender::Ticket> n = sender.Open(40);
        if (!n.ok()) {
          ADD_FAILURE() << n.status().ToString();
          break;
        }
        open.push_back(*n);
        // Close a random one of those opened: changes close out of order.
        if (open.size() > 3 || i + 1 == kPerThread) {
          while (!open.empty()) {
            const size_t k = rng() % open.size();
            const std::string v = std::to_string(open[k].n);
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
  std::map<uint32_t, Backup*> backups = {{2, &a}, {3, &b}};
  ASSERT_TRUE(sender.Own(5, 1, 0, {{2, 7}, {3, 7}}, {}).ok());
  Pump(sender, backups);
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
  Pump(sender, backups);
  EXPECT_EQ(a.sink.installed.size(), 1u);
  EXPECT_EQ(b.sink.installed.size(), 1u);
  // A waiter for what has committed runs at once.
  sender.WhenCommitted(5, 1, [&done](Status) { done++; });
  EXPECT_EQ(done, 2);
  // No backups: a change commits as it closes.
  ASSERT_TRUE(sender.Own(6, 1, 0, {}, {}).ok());
  Write(sender, 6, "y", "1");
  EXPECT_EQ(sender.committed(6), 1u);
}

// R9: a filling backup is sent every change but holds no commit back.
TEST(SenderTest, AFillingBackupHoldsNothingBack) {
  Sender sender;
  Backup a(2), f(4);
  std::map<uint32_t, Backup*> backups = {{2, &a}, {4, &f}};
  ASSERT_TRUE(sender.Own(9, 1, 0, {{2, 7}}, {{4, 7}}).ok());
  Pump(sender, backups);
  Write(sender, 9, "x", "1");
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
  std::map<uint32_t, Backup*> backups = {{2, &a}};
  ASSERT_TRUE(sender.Own(1, 1, 0, {{2, 7}}, {}).ok());
  ASSERT_TRUE(sender.Own(2, 1, 0, {{2, 7}}, {}).ok());
  Pump(sender, backups);
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
  ASSERT_TRUE(sender.Own(3, 1, 0, {{2, 7}}, {}).ok());
  const std::string five(5 << 20, 'p');
  Result<Sender::Ticket> n = sender.Open(3);
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
  Backup b(3);
  a.table.ownership_[7] = 2;  // a newer owner was agreed (b has not heard yet)
  ASSERT_TRUE(sender.Own(7, 1, 0, {{2, 7}, {3, 7}}, {}).ok());
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
  // Nothing more is sent for the fenced slot, to any backup.
  EXPECT_TRUE(sender.Ready().empty());
  EXPECT_FALSE(sender.NextMessage(3));
  // Dropping a slot fails its waiters the same way.
  ASSERT_TRUE(sender.Own(8, 1, 0, {{2, 7}}, {}).ok());
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

// R12: a new owner numbers on from the n it was given; a wrong start is refused as a conflict
// and its waiters fail.
TEST(SenderTest, ANewOwnerGoesOnFromItsStart) {
  Backup a(2);
  std::map<uint32_t, Backup*> backups = {{2, &a}};
  {
    Sender old_owner;
    ASSERT_TRUE(old_owner.Own(11, 1, 0, {{2, 7}}, {}).ok());
    for (int i = 1; i <= 3; i++) Write(old_owner, 11, "k", std::to_string(i));
    for (int round = 0; round < 6; round++) Pump(old_owner, backups);
    ASSERT_EQ(a.receiver.Stats(11).applied, 3u);
  }
  a.table.ownership_[11] = 2;
  {
    // Started below what the backup installed, with fewer changes than it holds, and with
    // more (whose numbers would pass for the old owner's).
    for (int writes : {1, 5}) {
      Sender wrong;
      ASSERT_TRUE(wrong.Own(11, 2, 1, {{2, 7}}, {}).ok());
      for (int i = 0; i < writes; i++) Write(wrong, 11, "k", "lost");
      Status result;
      wrong.WhenCommitted(11, 2, [&result](Status s) { result = s; });
      for (int round = 0; round < 6; round++) Pump(wrong, backups);
      EXPECT_EQ(result.code(), StatusCode::kAborted) << writes;
      EXPECT_EQ(wrong.committed(11), 1u) << writes;
    }
    EXPECT_EQ(a.sink.installed.back(), "11#3:1/k=3;");
  }
  Sender next;
  ASSERT_TRUE(next.Own(11, 2, 3, {{2, 7}}, {}).ok());
  Write(next, 11, "k", "4");
  for (int round = 0; round < 6; round++) Pump(next, backups);
  EXPECT_EQ(next.committed(11), 4u);
  EXPECT_EQ(a.sink.installed.back(), "11#4:1/k=4;");
}

// R13: a backup added later is asked where it is; it gets what it lacks while that is queued,
// and is reported (not sent to) once it is not.
TEST(SenderTest, ABackupIsAskedWhereItIs) {
  Sender sender;
  Backup a(2), late(5), later(6);
  std::map<uint32_t, Backup*> backups = {{2, &a}, {5, &late}, {6, &later}};
  ASSERT_TRUE(sender.Own(12, 1, 0, {{2, 7}}, {}).ok());
  Write(sender, 12, "k", "1");
  // Added while change 1 is still queued (a has not received it): it gets it.
  ASSERT_TRUE(sender.Configure(12, 1, {{2, 7}}, {{5, 7}}).ok());
  for (int round = 0; round < 6; round++) Pump(sender, backups);
  EXPECT_EQ(late.sink.installed, std::vector<std::string>{"12#1:1/k=1;"});
  EXPECT_TRUE(sender.NeedsFill().empty());
  // Added after every backup had change 1 and it left the queue: reported, not sent to.
  ASSERT_TRUE(sender.Configure(12, 1, {{2, 7}}, {{5, 7}, {6, 7}}).ok());
  for (int round = 0; round < 6; round++) Pump(sender, backups);
  EXPECT_EQ(sender.NeedsFill(), (std::vector<std::pair<uint16_t, uint32_t>>{{12, 6}}));
  Write(sender, 12, "k", "2");
  for (int round = 0; round < 6; round++) Pump(sender, backups);
  EXPECT_TRUE(later.sink.installed.empty());
  EXPECT_EQ(later.receiver.Stats(12).early, 0u);
  EXPECT_EQ(sender.committed(12), 2u);  // a filling backup holds nothing back
}

// R13: an answer claiming more than was sent commits nothing unsent; an answer to another
// message is ignored.
TEST(SenderTest, AnAnswerCommitsNothingUnsent) {
  Sender sender;
  Backup a(2);
  std::map<uint32_t, Backup*> backups = {{2, &a}};
  ASSERT_TRUE(sender.Own(13, 1, 0, {{2, 7}}, {}).ok());
  Pump(sender, backups);
  Write(sender, 13, "k", "1");
  std::optional<std::string> m = sender.NextMessage(2);
  ASSERT_TRUE(m);
  Write(sender, 13, "k", "2");  // closed, not in the message
  Result<Request> req = DecodeRequest(*m, 1 << 20);
  ASSERT_TRUE(req.ok());
  Answer lie = a.receiver.Receive(*req);
  Answer stale = lie;
  stale.id = req->id + 7;
  stale.slots[0].received = 2;
  sender.OnAnswer(2, stale);  // not the message in flight: ignored
  EXPECT_EQ(sender.committed(13), 0u);
  lie.slots[0].received = 1000;
  sender.OnAnswer(2, lie);
  EXPECT_EQ(sender.committed(13), 1u);  // change 2 was never sent
}

// R14: a full backup's answer keeps what it received, and pauses it until Resume.
TEST(SenderTest, AFullBackupKeepsWhatItReceived) {
  Sender sender;
  Backup a(2);
  ASSERT_TRUE(sender.Own(14, 1, 0, {{2, 7}}, {}).ok());
  std::map<uint32_t, Backup*> backups = {{2, &a}};
  Pump(sender, backups);
  a.sink.budget = 3 * ChargeOf(One(1, "k", std::string(1000, 'v')));
  for (int i = 0; i < 5; i++) Write(sender, 14, "k", std::string(1000, 'v'));
  std::optional<std::string> m = sender.NextMessage(2);
  ASSERT_TRUE(m);
  Answer answer = a.receiver.Receive(*DecodeRequest(*m, 1 << 20));
  ASSERT_EQ(answer.slots[0].status, SlotStatus::kFull);
  EXPECT_TRUE(sender.OnAnswer(2, answer));  // paused
  EXPECT_EQ(sender.committed(14), 3u);      // what it received counts
  EXPECT_TRUE(sender.Ready().empty());
  for (int round = 0; round < 10; round++) {
    sender.Resume(2);
    Pump(sender, backups);
  }
  EXPECT_EQ(sender.committed(14), 5u);
  EXPECT_EQ(a.sink.installed.size(), 5u);
}

// R10: many small changes go in messages the backup's decoder takes (kMaxChanges).
TEST(SenderTest, ManySmallChangesStayWithinTheCounts) {
  Sender sender;
  Backup a(2);
  std::map<uint32_t, Backup*> backups = {{2, &a}};
  ASSERT_TRUE(sender.Own(15, 1, 0, {{2, 7}}, {}).ok());
  Pump(sender, backups);
  const uint64_t total = kMaxChanges + 1000;
  for (uint64_t i = 0; i < total; i++) {
    Result<Sender::Ticket> n = sender.Open(15);
    ASSERT_TRUE(n.ok());
    sender.Close(15, *n, {});
  }
  for (int round = 0; round < 10 && sender.committed(15) < total; round++) Pump(sender, backups);
  EXPECT_EQ(sender.committed(15), total);
}

// R10: slots are taken round robin, so a busy slot does not starve another.
TEST(SenderTest, ABusySlotDoesNotStarveAnother) {
  Sender sender;
  Backup a(2);
  std::map<uint32_t, Backup*> backups = {{2, &a}};
  for (uint16_t slot : {uint16_t{1}, uint16_t{9000}}) {
    ASSERT_TRUE(sender.Own(slot, 1, 0, {{2, 7}}, {}).ok());
  }
  Pump(sender, backups);
  const std::string mib(1 << 20, 'v');
  for (int i = 0; i < 40; i++) Write(sender, 1, "k", mib);
  Write(sender, 9000, "k", "x");
  Pump(sender, backups);
  Pump(sender, backups);
  EXPECT_GE(sender.committed(9000), 1u);
  EXPECT_LT(sender.committed(1), 40u);
}

// R15 (S15, O6): what every backup received under the old owner survives a promotion: the
// promoted backup installs it, another backup keeps it for the new owner's start.
TEST(SenderTest, APromotionKeepsWhatEveryBackupReceived) {
  Backup a(2), b(3);
  std::map<uint32_t, Backup*> backups = {{2, &a}, {3, &b}};
  Sender old_owner;
  ASSERT_TRUE(old_owner.Own(20, 1, 0, {{2, 7}, {3, 7}}, {}).ok());
  Pump(old_owner, backups);  // asked where they are
  for (int i = 1; i <= 3; i++) Write(old_owner, 20, "k", std::to_string(i));
  Pump(old_owner, backups);  // both received 1..3; committed, but neither was told yet
  ASSERT_EQ(old_owner.committed(20), 3u);
  ASSERT_TRUE(a.sink.installed.empty());
  ASSERT_EQ(b.receiver.Stats(20).pending, 3u);
  // The old owner dies; a is promoted after n = 3, which every in-sync backup received.
  EXPECT_EQ(Receiver(&a.table, &a.sink).Promote(20, 3).code(),
            StatusCode::kFailedPrecondition);  // a receiver that has nothing refuses
  ASSERT_TRUE(a.receiver.Promote(20, 3).ok());
  EXPECT_EQ(a.sink.installed,
            (std::vector<std::string>{"20#1:1/k=1;", "20#2:1/k=2;", "20#3:1/k=3;"}));
  EXPECT_EQ(a.receiver.charged(), 0u);
  b.table.ownership_[20] = 2;
  Sender promoted;
  ASSERT_TRUE(promoted.Own(20, 2, 3, {{3, 7}}, {}).ok());
  Write(promoted, 20, "k", "4");
  for (int round = 0; round < 6; round++) Pump(promoted, backups);
  EXPECT_EQ(promoted.committed(20), 4u);
  EXPECT_EQ(b.sink.installed,
            (std::vector<std::string>{"20#1:1/k=1;", "20#2:1/k=2;", "20#3:1/k=3;", "20#4:1/k=4;"}));
}

// R16: a change that could not be installed makes the copy lost, reported by NeedsFill.
TEST(SenderTest, ALostInstallIsReported) {
  Sender sender;
  Backup a(2);
  std::map<uint32_t, Backup*> backups = {{2, &a}};
  ASSERT_TRUE(sender.Own(21, 1, 0, {{2, 7}}, {}).ok());
  Pump(sender, backups);
  a.sink.fail_installs = 1;
  for (int i = 1; i <= 3; i++) Write(sender, 21, "k", std::to_string(i));
  for (int round = 0; round < 6; round++) Pump(sender, backups);
  EXPECT_EQ(sender.NeedsFill(), (std::vector<std::pair<uint16_t, uint32_t>>{{21, 2}}));
  EXPECT_TRUE(a.sink.installed.empty());
  EXPECT_EQ(a.sink.reserved, 0u);  // what was pending is released
}

// M9: a change closed empty (its handler never ran) commits like any other; one closed lost
// (its entries could not be built) is in no backup, so every backup of the slot needs a fill,
// and so does one added later whose position is below it, while one above it does not.
TEST(SenderTest, AChangeClosedLostNeedsAFillOfEveryBackupBelowIt) {
  Sender sender;
  Backup a(2), late(5);
  std::map<uint32_t, Backup*> backups = {{2, &a}, {5, &late}};
  ASSERT_TRUE(sender.Own(23, 1, 0, {{2, 7}}, {}).ok());
  Write(sender, 23, "k", "1");
  Result<Sender::Ticket> empty = sender.Open(23);
  ASSERT_TRUE(empty.ok());
  sender.CloseEmpty(23, *empty, /*lost=*/false);
  for (int round = 0; round < 6; round++) Pump(sender, backups);
  EXPECT_EQ(sender.committed(23), 2u);
  EXPECT_TRUE(sender.NeedsFill().empty());

  Result<Sender::Ticket> lost = sender.Open(23);
  ASSERT_TRUE(lost.ok());
  Write(sender, 23, "k", "4");  // closes before the lost one: held behind it
  sender.CloseEmpty(23, *lost, /*lost=*/true);
  sender.CloseEmpty(23, *lost, /*lost=*/true);  // a second close is ignored
  for (int round = 0; round < 6; round++) Pump(sender, backups);
  EXPECT_EQ(sender.NeedsFill(), (std::vector<std::pair<uint16_t, uint32_t>>{{23, 2}}));
  EXPECT_EQ(sender.committed(23), 2u);  // nothing after the lost change commits to it
  EXPECT_EQ(a.sink.installed, (std::vector<std::string>{"23#1:1/k=1;", "23#2:"}));
  // A backup added now starts below the lost change: it needs a fill, and is sent nothing.
  ASSERT_TRUE(sender.Configure(23, 1, {{2, 7}}, {{5, 7}}).ok());
  for (int round = 0; round < 6; round++) Pump(sender, backups);
  EXPECT_EQ(sender.NeedsFill(), (std::vector<std::pair<uint16_t, uint32_t>>{{23, 2}, {23, 5}}));
  EXPECT_TRUE(late.sink.installed.empty());
  // A new ownership (a fill's or a promotion's start past the lost change) starts clean.
  ASSERT_TRUE(sender.Own(23, 2, 4, {{2, 7}}, {}).ok());
  Write(sender, 23, "k", "5");
  for (int round = 0; round < 6; round++) Pump(sender, backups);
  EXPECT_TRUE(sender.NeedsFill().empty());
}

// M9: a backup taken off the slot before a change was closed lost, and added again after, may
// answer right below the queue's front (it had everything before the lost change): it still
// lacks the lost change, so it needs a fill and is sent nothing more.
TEST(SenderTest, ABackupAddedAgainBelowALostChangeNeedsAFill) {
  Sender sender;
  Backup a(2), b(5);
  std::map<uint32_t, Backup*> backups = {{2, &a}, {5, &b}};
  ASSERT_TRUE(sender.Own(24, 1, 0, {{2, 7}}, {{5, 7}}).ok());
  Write(sender, 24, "k", "1");
  for (int round = 0; round < 6; round++) Pump(sender, backups);
  ASSERT_EQ(b.sink.installed, std::vector<std::string>{"24#1:1/k=1;"});
  ASSERT_TRUE(sender.Configure(24, 1, {{2, 7}}, {}).ok());
  Result<Sender::Ticket> lost = sender.Open(24);
  ASSERT_TRUE(lost.ok());
  sender.CloseEmpty(24, *lost, /*lost=*/true);
  ASSERT_TRUE(sender.Configure(24, 1, {{2, 7}}, {{5, 7}}).ok());
  for (int round = 0; round < 6; round++) Pump(sender, backups);
  EXPECT_EQ(sender.NeedsFill(), (std::vector<std::pair<uint16_t, uint32_t>>{{24, 2}, {24, 5}}));
  Write(sender, 24, "k", "3");
  for (int round = 0; round < 6; round++) Pump(sender, backups);
  EXPECT_EQ(b.sink.installed, std::vector<std::string>{"24#1:1/k=1;"});
  EXPECT_EQ(b.receiver.Stats(24).received, 1u);
}

// N2: a number is never reused under one ownership: Own must go above every ownership the
// slot had here, and a Close from before a Drop never fills the new owner's change.
TEST(SenderTest, ANumberIsNeverReusedUnderOneOwnership) {
  Sender sender;
  Backup a(2);
  std::map<uint32_t, Backup*> backups = {{2, &a}};
  ASSERT_TRUE(sender.Own(22, 1, 0, {{2, 7}}, {}).ok());
  EXPECT_TRUE(sender.serving(22));
  EXPECT_EQ(sender.Own(22, 1, 0, {{2, 7}}, {}).code(), StatusCode::kFailedPrecondition);
  Result<Sender::Ticket> before = sender.Open(22);
  ASSERT_TRUE(before.ok());
  sender.Drop(22);
  EXPECT_FALSE(sender.serving(22));
  a.table.ownership_[22] = 2;
  ASSERT_TRUE(sender.Own(22, 2, 0, {{2, 7}}, {}).ok());
  Result<Sender::Ticket> after = sender.Open(22);
  ASSERT_TRUE(after.ok());
  ASSERT_EQ(after->n, before->n);  // the same number under another ownership
  const Entry stale{.kind = EntryKind::kPut, .key = "k", .bytes = "stale"};
  const Entry fresh{.kind = EntryKind::kPut, .key = "k", .bytes = "fresh"};
  sender.Close(22, *before, std::span<const Entry>(&stale, 1));
  sender.Close(22, *after, std::span<const Entry>(&fresh, 1));
  for (int round = 0; round < 6; round++) Pump(sender, backups);
  EXPECT_EQ(a.sink.installed, std::vector<std::string>{"22#1:1/k=fresh;"});
}

// L1: a failure reported for an earlier message does not touch the one in flight.
TEST(SenderTest, ALateFailureIsIgnored) {
  Sender sender;
  Backup a(2);
  ASSERT_TRUE(sender.Own(23, 1, 0, {{2, 7}}, {}).ok());
  std::optional<std::string> first = sender.NextMessage(2);  // asked where it is
  ASSERT_TRUE(first);
  Result<Request> r1 = DecodeRequest(*first, 1 << 20);
  ASSERT_TRUE(r1.ok());
  sender.OnAnswer(2, a.receiver.Receive(*r1));
  Write(sender, 23, "k", "1");
  std::optional<std::string> second = sender.NextMessage(2);
  ASSERT_TRUE(second);
  Result<Request> r2 = DecodeRequest(*second, 1 << 20);
  ASSERT_TRUE(r2.ok());
  sender.OnFailed(2, r1->id);
  EXPECT_EQ(sender.in_flight(2), r2->id);
  sender.OnAnswer(2, a.receiver.Receive(*r2));
  EXPECT_EQ(sender.committed(23), 1u);
}

// ---- S12: fills (R17, R19, R20) ----

// An owner's store as the tests keep it: what each write left, per key.
using Kv = std::map<std::string, std::string>;

// The scan of a fill (the caller's part, F6): the slot's keys in order, each read when its
// batch is made, `per_batch` at a time from `after`. Returns the last key read ("" at the end).
std::string AddBatch(Sender& sender, uint16_t slot, uint32_t id, Sender::FillTicket ticket,
                     const Kv& owner, const std::string& after, size_t per_batch, bool* last) {
  std::vector<std::string> keys, values;
  auto it = after.empty() ? owner.begin() : owner.upper_bound(after);
  for (; it != owner.end() && keys.size() < per_batch; ++it) {
    keys.push_back(it->first);
    values.push_back(it->second);
  }
  *last = it == owner.end();
  std::vector<Entry> puts;
  for (size_t i = 0; i < keys.size(); i++) puts.push_back(Put(keys[i], values[i]));
  EXPECT_TRUE(sender.AddFill(slot, id, ticket, puts, *last).ok());
  return keys.empty() ? after : keys.back();
}

// R17, R20: a backup that lacks changes no longer queued is filled while the owner writes,
// removes and flushes, through a network that loses and repeats messages: its copy ends equal
// to the owner's store, and its fill is done only once the last batch is installed.
TEST(SenderTest, AFilledBackupEqualsTheOwnerThroughALossyNetwork) {
  for (uint64_t seed = 1; seed <= 20; seed++) {
    std::mt19937_64 rng(seed);
    Sender sender;
    Backup a(2), late(5);
    std::map<uint32_t, Backup*> backups = {{2, &a}, {5, &late}};
    const uint16_t slot = 50;
    ASSERT_TRUE(sender.Own(slot, 1, 0, {{2, 7}}, {}).ok());
    Kv owner;
    auto write = [&](bool allow_flush) {
      const std::string key = "k" + std::to_string(rng() % 40);
      const uint64_t what = rng() % 10;
      Result<Sender::Ticket> t = sender.Open(slot);
      ASSERT_TRUE(t.ok());
      if (allow_flush && what == 0 && rng() % 4 == 0) {
        owner.clear();
        const Entry e{.kind = EntryKind::kFlush};
        sender.Close(slot, *t, std::span<const Entry>(&e, 1));
      } else if (what < 3) {
        owner.erase(key);
        const Entry e{.kind = EntryKind::kRemove, .key = key};
        sender.Close(slot, *t, std::span<const Entry>(&e, 1));
      } else {
        const std::string value = std::to_string(rng());
        owner[key] = value;
        const Entry e = Put(key, value);
        sender.Close(slot, *t, std::span<const Entry>(&e, 1));
      }
    };
    for (int i = 0; i < 60; i++) write(false);
    for (int round = 0; round < 20; round++) Pump(sender, backups);
    ASSERT_EQ(sender.committed(slot), 60u);
    // A filling backup added now is asked where it is, and lacks what is no longer queued.
    ASSERT_TRUE(sender.Configure(slot, 1, {{2, 7}}, {{5, 7}}).ok());
    for (int round = 0; round < 4; round++) Pump(sender, backups);
    ASSERT_EQ(sender.NeedsFill(), (std::vector<std::pair<uint16_t, uint32_t>>{{slot, 5}}));
    Result<Sender::FillTicket> ticket = sender.BeginFill(slot, 5);
    ASSERT_TRUE(ticket.ok()) << ticket.status().ToString();
    EXPECT_EQ(ticket->from, 60u);
    ASSERT_GE(sender.closed(slot), ticket->from);  // the scan may read the store now
    EXPECT_TRUE(sender.NeedsFill().empty());
    std::string after;
    bool last = false;
    std::vector<std::string> earlier;  // this sender's messages, replayed late now and then
    while (!last) {
      after = AddBatch(sender, slot, 5, *ticket, owner, after, 1 + rng() % 6, &last);
      for (int i = static_cast<int>(rng() % 4); i > 0; i--) write(true);
      Pump(sender, backups, &rng, 0.2, &earlier);
      ASSERT_EQ(sender.Fills().size(), 1u);
    }
    for (int round = 0; round < 200 && !sender.Fills()[0].done; round++) {
      Pump(sender, backups, &rng, 0.2, &earlier);
    }
    std::vector<Sender::FillState> fills = sender.Fills();
    ASSERT_EQ(fills.size(), 1u);
    EXPECT_TRUE(fills[0].done) << "seed " << seed;
    EXPECT_EQ(fills[0].waiting, 0u);
    for (int round = 0; round < 40; round++) Pump(sender, backups);
    EXPECT_EQ(late.sink.kv[slot], owner) << "seed " << seed;
    EXPECT_EQ(a.sink.kv[slot], owner) << "seed " << seed;
    EXPECT_EQ(sender.Fills()[0].received, sender.closed(slot));
    // Made in sync (BackupInSync), the fill has served; its batches' bytes are given back.
    ASSERT_TRUE(sender.Configure(slot, 1, {{2, 7}, {5, 7}}, {}).ok());
    EXPECT_TRUE(sender.Fills().empty());
    write(false);
    for (int round = 0; round < 4; round++) Pump(sender, backups);
    EXPECT_EQ(late.sink.kv[slot], owner);
    EXPECT_EQ(sender.queued_bytes(), 0u);
  }
}

// R19: an in-sync backup that needs a fill holds every commit back until its last batch is
// installed; a filling one holds none.
TEST(SenderTest, AnInSyncBackupBeingFilledHoldsCommitsBack) {
  Sender sender;
  Backup a(2);
  std::map<uint32_t, Backup*> backups = {{2, &a}};
  ASSERT_TRUE(sender.Own(51, 1, 0, {{2, 7}}, {}).ok());
  Write(sender, 51, "k", "1");
  for (int round = 0; round < 4; round++) Pump(sender, backups);
  Result<Sender::Ticket> lost = sender.Open(51);
  ASSERT_TRUE(lost.ok());
  sender.CloseEmpty(51, *lost, /*lost=*/true);  // its write is in the store, in no backup
  for (int round = 0; round < 4; round++) Pump(sender, backups);
  ASSERT_EQ(sender.committed(51), 1u);
  Result<Sender::FillTicket> ticket = sender.BeginFill(51, 2);
  ASSERT_TRUE(ticket.ok());
  EXPECT_EQ(ticket->from, 2u);
  Write(sender, 51, "j", "3");
  // F1: a change after the fill's start goes before any batch, with the fill named, so the
  // backup restarts its copy first and takes it in order.
  for (int round = 0; round < 4; round++) Pump(sender, backups);
  EXPECT_TRUE(sender.NeedsFill().empty());
  EXPECT_EQ(a.receiver.Stats(51).received, 3u);
  ASSERT_TRUE(sender.AddFill(51, 2, *ticket, std::vector<Entry>{Put("k", "2")}, false).ok());
  for (int round = 0; round < 4; round++) Pump(sender, backups);
  EXPECT_EQ(sender.committed(51), 1u);  // changes 2 and 3 wait for the fill's end
  ASSERT_TRUE(sender.AddFill(51, 2, *ticket, {}, true).ok());
  for (int round = 0; round < 4; round++) Pump(sender, backups);
  EXPECT_EQ(sender.committed(51), 3u);
  EXPECT_TRUE(sender.Fills().empty());  // an in-sync backup's fill ends once done
  EXPECT_EQ(a.sink.kv[51], (Kv{{"k", "2"}, {"j", "3"}}));
}

// R19: an in-sync backup whose fill ended unfinished restarted its copy: it holds every
// commit back until a fill completes (its received n is not the fill's start).
TEST(SenderTest, AnUnfinishedFillCommitsNothing) {
  Sender sender;
  Backup a(2);
  std::map<uint32_t, Backup*> backups = {{2, &a}};
  ASSERT_TRUE(sender.Own(54, 1, 0, {{2, 7}}, {}).ok());
  Write(sender, 54, "k", "1");
  for (int round = 0; round < 4; round++) Pump(sender, backups);
  Result<Sender::Ticket> lost = sender.Open(54);
  ASSERT_TRUE(lost.ok());
  sender.CloseEmpty(54, *lost, /*lost=*/true);
  Result<Sender::FillTicket> ticket = sender.BeginFill(54, 2);
  ASSERT_TRUE(ticket.ok());
  a.sink.fail_installs = 1;  // the fill's start
  ASSERT_TRUE(sender.AddFill(54, 2, *ticket, std::vector<Entry>{Put("k", "2")}, true).ok());
  Write(sender, 54, "j", "3");
  for (int round = 0; round < 4; round++) Pump(sender, backups);
  EXPECT_EQ(sender.NeedsFill(), (std::vector<std::pair<uint16_t, uint32_t>>{{54, 2}}));
  EXPECT_EQ(sender.committed(54), 1u);
}

// R20: a fill whose batch could not be installed ends unfinished: the backup needs a fill
// again, the old ticket adds nothing, and a new fill completes.
TEST(SenderTest, AFillThatLosesAnInstallStartsAgain) {
  Sender sender;
  Backup a(2), b(5);
  std::map<uint32_t, Backup*> backups = {{2, &a}, {5, &b}};
  ASSERT_TRUE(sender.Own(52, 1, 0, {{2, 7}}, {{5, 7}}).ok());
  Write(sender, 52, "k", "1");
  Result<Sender::FillTicket> first = sender.BeginFill(52, 5);
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(sender.AddFill(52, 5, *first, std::vector<Entry>{Put("k", "1")}, true).ok());
  b.sink.fail_installs = 1;  // the fill's start (a flush of the slot's copy)
  for (int round = 0; round < 4; round++) Pump(sender, backups);
  EXPECT_EQ(sender.NeedsFill(), (std::vector<std::pair<uint16_t, uint32_t>>{{52, 5}}));
  EXPECT_EQ(sender.FillsWanted(), sender.NeedsFill());
  EXPECT_TRUE(sender.Fills().empty());
  EXPECT_EQ(sender.AddFill(52, 5, *first, {}, true).status().code(),
            StatusCode::kFailedPrecondition);
  Result<Sender::FillTicket> second = sender.BeginFill(52, 5);
  ASSERT_TRUE(second.ok());
  EXPECT_GT(second->id, first->id);
  ASSERT_TRUE(sender.AddFill(52, 5, *second, std::vector<Entry>{Put("k", "1")}, true).ok());
  for (int round = 0; round < 4; round++) Pump(sender, backups);
  ASSERT_EQ(sender.Fills().size(), 1u);
  EXPECT_TRUE(sender.Fills()[0].done);
  EXPECT_EQ(b.sink.kv[52], (Kv{{"k", "1"}}));
}

// R20, F1: a fill is done only once its last batch was installed, not when it was sent; a
// fill cannot begin while a message is in flight to the backup.
TEST(SenderTest, AFillIsDoneOnlyOnceInstalled) {
  Sender sender;
  Backup b(5);
  std::map<uint32_t, Backup*> backups = {{5, &b}};
  ASSERT_TRUE(sender.Own(53, 1, 0, {}, {{5, 7}}).ok());
  ASSERT_TRUE(sender.NextMessage(5).has_value());  // asked where it is
  EXPECT_EQ(sender.BeginFill(53, 5).status().code(), StatusCode::kUnavailable);
  sender.OnFailed(5, sender.in_flight(5));
  // A filling backup wants a fill until one begins (F7: only a fill's end makes it in sync).
  EXPECT_EQ(sender.FillsWanted(), (std::vector<std::pair<uint16_t, uint32_t>>{{53, 5}}));
  Result<Sender::FillTicket> ticket = sender.BeginFill(53, 5);
  ASSERT_TRUE(ticket.ok());
  EXPECT_TRUE(sender.FillsWanted().empty());
  ASSERT_TRUE(sender.AddFill(53, 5, *ticket, std::vector<Entry>{Put("a", "1")}, true).ok());
  ASSERT_TRUE(sender.NextMessage(5).has_value());
  sender.OnFailed(5, sender.in_flight(5));  // lost
  EXPECT_FALSE(sender.Fills()[0].done);
  EXPECT_EQ(sender.Fills()[0].waiting, 1u);
  Pump(sender, backups);
  EXPECT_TRUE(sender.Fills()[0].done);
  EXPECT_EQ(sender.Fills()[0].waiting, 0u);
  EXPECT_EQ(b.sink.kv[53], (Kv{{"a", "1"}}));
  EXPECT_EQ(sender.AddFill(53, 5, *ticket, {}, true).status().code(),
            StatusCode::kFailedPrecondition);
  // Another life of the backup ends the fill: nothing of it is kept.
  ASSERT_TRUE(sender.Configure(53, 1, {}, {{5, 8}}).ok());
  EXPECT_TRUE(sender.Fills().empty());
  EXPECT_EQ(sender.queued_bytes(), 0u);
}

// Delivers messages of `sender` to `b` alone, answering each, `rounds` times.
void Deliver(Sender& sender, uint32_t id, Backup& b, int rounds = 4) {
  for (int i = 0; i < rounds; i++) {
    std::optional<std::string> bytes = sender.NextMessage(id);
    if (!bytes) {
      sender.Resume(id);
      continue;
    }
    Result<Request> req = DecodeRequest(*bytes, 1ull << 30);
    ASSERT_TRUE(req.ok());
    if (sender.OnAnswer(id, b.receiver.Receive(*req))) sender.Resume(id);
  }
}

// R21 (review of the fills, finding 1): a new owner's fill, numbered from 1 again, starts the
// copy over instead of being counted from the old owner's batches.
TEST(SenderTest, AnotherOwnersFillIsNeverCountedFromTheOldOnes) {
  Backup b(5);
  Sender s1;
  ASSERT_TRUE(s1.Own(70, 1, 0, {}, {{5, 7}}).ok());
  Write(s1, 70, "a", "1");
  Write(s1, 70, "b", "2");
  Result<Sender::FillTicket> f1 = s1.BeginFill(70, 5);
  ASSERT_TRUE(f1.ok());
  ASSERT_TRUE(s1.AddFill(70, 5, *f1, std::vector<Entry>{Put("a", "1")}, false).ok());
  Deliver(s1, 5, b);
  ASSERT_EQ(b.receiver.Stats(70).filled, 1u);  // the first owner stops mid-fill
  b.table.ownership_[70] = 2;
  Sender s2;  // owns the slot under ownership 2, its store {a: 1, b: 2}, after n = 2
  ASSERT_TRUE(s2.Own(70, 2, 2, {}, {{5, 7}}).ok());
  Deliver(s2, 5, b);  // asked where it is: lost
  Result<Sender::FillTicket> f2 = s2.BeginFill(70, 5);
  ASSERT_TRUE(f2.ok());
  EXPECT_EQ(f2->id, f1->id);
  ASSERT_TRUE(s2.AddFill(70, 5, *f2, std::vector<Entry>{Put("b", "2")}, false).ok());
  ASSERT_TRUE(s2.AddFill(70, 5, *f2, std::vector<Entry>{Put("a", "1")}, true).ok());
  Deliver(s2, 5, b, 8);
  ASSERT_EQ(s2.Fills().size(), 1u);
  EXPECT_TRUE(s2.Fills()[0].done);
  EXPECT_EQ(b.sink.kv[70], (Kv{{"a", "1"}, {"b", "2"}}));
}

// F9 (review, finding 2): a fill holds a change its owner had not committed; the next owner,
// promoted below it, finds the copy lost (it asks for a fill) and keeps serving, never stopped
// by a conflict.
TEST(SenderTest, AFillPastCommittedIsLostToTheNextOwner) {
  Backup a(2), b(5);
  Sender s1;
  ASSERT_TRUE(s1.Own(81, 1, 0, {{2, 7}}, {{5, 7}}).ok());
  Write(s1, 81, "k", "1");
  Deliver(s1, 2, a);
  Deliver(s1, 5, b);
  ASSERT_EQ(s1.committed(81), 1u);
  Write(s1, 81, "k", "2");  // never reaches a
  Result<Sender::FillTicket> f = s1.BeginFill(81, 5);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE(s1.AddFill(81, 5, *f, std::vector<Entry>{Put("k", "2")}, true).ok());
  Deliver(s1, 5, b);
  EXPECT_EQ(s1.committed(81), 1u);
  b.table.ownership_[81] = 2;
  Sender s2;  // a, promoted after n = 1
  ASSERT_TRUE(s2.Own(81, 2, 1, {}, {{5, 7}}).ok());
  Deliver(s2, 5, b);
  EXPECT_TRUE(s2.serving(81));
  EXPECT_EQ(s2.NeedsFill(), (std::vector<std::pair<uint16_t, uint32_t>>{{81, 5}}));
}

// F9 (review, finding 3): a filled backup made in sync while its fill's state was not yet
// committed is not kept by a new owner that never had that state: it is filled again, and its
// copy ends equal to the new owner's store.
TEST(SenderTest, AnUncommittedFillIsFilledAgainByTheNextOwner) {
  Backup a(2), b(5);
  Sender s1;
  ASSERT_TRUE(s1.Own(82, 1, 0, {{2, 7}}, {{5, 7}}).ok());
  Write(s1, 82, "k", "1");
  Deliver(s1, 2, a);
  Deliver(s1, 5, b);
  Result<Sender::FillTicket> f = s1.BeginFill(82, 5);
  ASSERT_TRUE(f.ok());
  Write(s1, 82, "k", "2");  // sent to b live, never reaches a
  ASSERT_TRUE(s1.AddFill(82, 5, *f, std::vector<Entry>{Put("k", "2")}, true).ok());
  Deliver(s1, 5, b);
  ASSERT_TRUE(s1.Fills()[0].done);
  ASSERT_TRUE(s1.Configure(82, 1, {{2, 7}, {5, 7}}, {}).ok());  // BackupInSync
  EXPECT_EQ(s1.committed(82), 1u);
  b.table.ownership_[82] = 2;
  Sender s2;  // a, promoted after n = 1 with b in sync; its store: k = 1
  ASSERT_TRUE(s2.Own(82, 2, 1, {{5, 7}}, {}).ok());
  Write(s2, 82, "j", "1");
  Deliver(s2, 5, b, 6);
  EXPECT_EQ(s2.committed(82), 1u);  // b holds commits back until filled (R19)
  EXPECT_EQ(s2.NeedsFill(), (std::vector<std::pair<uint16_t, uint32_t>>{{82, 5}}));
  Result<Sender::FillTicket> again = s2.BeginFill(82, 5);
  ASSERT_TRUE(again.ok());
  ASSERT_TRUE(
      s2.AddFill(82, 5, *again, std::vector<Entry>{Put("k", "1"), Put("j", "1")}, true).ok());
  Deliver(s2, 5, b, 6);
  EXPECT_EQ(s2.committed(82), 2u);
  EXPECT_EQ(b.sink.kv[82], (Kv{{"k", "1"}, {"j", "1"}}));
}

// R21 (review, finding 4): a new ownership in the middle of a fill finds the in-sync copy lost:
// it holds commits back and is filled again, and nothing it noted stays charged.
TEST(SenderTest, ANewOwnershipMidFillFindsTheCopyLost) {
  Backup b(5);
  Sender s;
  ASSERT_TRUE(s.Own(83, 1, 0, {{5, 7}}, {}).ok());
  Write(s, 83, "a", "1");
  Deliver(s, 5, b);
  Result<Sender::Ticket> lost = s.Open(83);  // its write "x" is in the store, in no backup
  ASSERT_TRUE(lost.ok());
  s.CloseEmpty(83, *lost, true);
  Result<Sender::FillTicket> f = s.BeginFill(83, 5);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE(s.AddFill(83, 5, *f, std::vector<Entry>{Put("a", "1")}, false).ok());
  Deliver(s, 5, b);
  b.table.ownership_[83] = 2;
  ASSERT_TRUE(s.Own(83, 2, 2, {{5, 7}}, {}).ok());
  for (int i = 0; i < 50; i++) Write(s, 83, "k" + std::to_string(i), "v");
  Deliver(s, 5, b, 6);
  EXPECT_EQ(s.committed(83), 2u);
  EXPECT_EQ(s.NeedsFill(), (std::vector<std::pair<uint16_t, uint32_t>>{{83, 5}}));
  EXPECT_FALSE(b.receiver.Stats(83).filling);
  EXPECT_EQ(b.receiver.charged(), 0u);
}

// F4 (review, finding M2): a batch is at most kBatchBytes unless it is one put, and a slot
// whose live changes fill every message still sends its batch in the next one.
TEST(SenderTest, ABatchIsBoundedAndABusySlotStillSendsIt) {
  Sender sender;
  Backup b(5);
  ASSERT_TRUE(sender.Own(84, 1, 0, {}, {{5, 7}}).ok());
  Deliver(sender, 5, b, 1);  // asked where it is
  Result<Sender::FillTicket> f = sender.BeginFill(84, 5);
  ASSERT_TRUE(f.ok());
  const std::string mib(1 << 20, 'v');
  std::vector<Entry> nine;
  for (int i = 0; i < 9; i++) nine.push_back(Put("big", mib));
  EXPECT_EQ(sender.AddFill(84, 5, *f, nine, false).status().code(), StatusCode::kInvalidArgument);
  for (int i = 0; i < 20; i++) Write(sender, 84, "live" + std::to_string(i), mib);
  ASSERT_TRUE(sender.AddFill(84, 5, *f, std::vector<Entry>{Put("a", mib)}, true).ok());
  std::optional<std::string> m = sender.NextMessage(5);
  ASSERT_TRUE(m.has_value());
  Result<Request> req = DecodeRequest(*m, 1ull << 30);
  ASSERT_TRUE(req.ok());
  ASSERT_TRUE(req->groups[0].fill.has_value());
  EXPECT_EQ(req->groups[0].fill->batch, 1u);
  EXPECT_FALSE(req->groups[0].changes.empty());
  EXPECT_LE(m->size(), kBatchBytes + (2 << 20));
}

}  // namespace
}  // namespace floe::replica
