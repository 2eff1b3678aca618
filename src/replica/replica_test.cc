// replica: the stream's codec and the backup's receiver (contracts R1-R7 of replica.h,
// docs/replication.md S5 and S7).

#include "replica/replica.h"

#include <gtest/gtest.h>

#include <random>
#include <set>
#include <thread>

#include "replica/replica_testing.h"
#include "wire/wire.h"

namespace floe::replica {
namespace {

struct Fixture {
  FakeTable table;
  FakeSink sink;
  Receiver receiver{&table, &sink};
};

std::string RandomBytes(std::mt19937_64& rng, size_t max) {
  std::string s(rng() % (max + 1), '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

// R1.
TEST(ReplicaTest, RequestsAndAnswersRoundTrip) {
  std::mt19937_64 rng(20261130);
  for (int round = 0; round < 300; round++) {
    std::vector<std::string> strings;  // owns what the entries view
    strings.reserve(4096);
    Request req{.target = static_cast<uint32_t>(rng()), .life = rng() >> (rng() % 64)};
    std::set<uint16_t> slots;
    const int groups = static_cast<int>(rng() % 5);
    for (int g = 0; g < groups; g++) {
      uint16_t slot = static_cast<uint16_t>(rng() % kSlots);
      if (!slots.insert(slot).second) continue;
      Group group{.slot = slot, .ownership = rng() % 1000, .committed = rng() % 100000};
      uint64_t n = 1 + rng() % 1000;
      if (rng() % 3 == 0) {  // a fill (S12): its changes are numbered above its start
        Fill fill{.id = 1 + rng() % 50, .from = rng() % n};
        if (rng() % 2 == 0) {
          fill.batch = 1 + rng() % 9;
          fill.top = fill.from + rng() % 5;
          fill.last = rng() % 3 == 0;
          for (int e = static_cast<int>(rng() % 4); e > 0; e--) {
            fill.puts.push_back({.kind = EntryKind::kPut,
                                 .key = strings.emplace_back(RandomBytes(rng, 20)),
                                 .type = static_cast<uint16_t>(rng()),
                                 .expire_ms = rng() % 2 ? 0 : rng(),
                                 .bytes = strings.emplace_back(RandomBytes(rng, 100))});
          }
        }
        group.fill = std::move(fill);
      }
      const int changes = static_cast<int>(rng() % 6);
      for (int c = 0; c < changes; c++) {
        Change change{.n = n, .part = 0, .more = false};
        if (!group.changes.empty() && group.changes.back().more) {
          change.n = group.changes.back().n;
          change.part = group.changes.back().part + 1;
        } else if (c == 0 && rng() % 3 == 0) {
          change.part = rng() % 9;  // continues a change begun in an earlier message
        }
        change.more = rng() % 4 == 0;
        const int entries = static_cast<int>(rng() % 4);
        for (int e = 0; e < entries; e++) {
          Entry entry;
          entry.kind = static_cast<EntryKind>(1 + rng() % kLastEntryKind);
          if (entry.kind != EntryKind::kFlush) {
            entry.key = strings.emplace_back(RandomBytes(rng, 20));
          }
          if (entry.kind == EntryKind::kPut) {
            entry.type = static_cast<uint16_t>(rng());
            entry.expire_ms = rng() % 2 ? 0 : rng();
          }
          if (entry.kind == EntryKind::kDelta) {
            entry.type = static_cast<uint16_t>(rng());
            entry.cell_version = rng();
          }
          if (entry.kind == EntryKind::kRecord) {
            entry.origin = static_cast<uint32_t>(rng());
            entry.client = rng();
            entry.seq = rng();
            entry.age_ms = rng() % 100000;
          }
          if (entry.kind == EntryKind::kPut || entry.kind == EntryKind::kDelta ||
              entry.kind == EntryKind::kRecord) {
            entry.bytes = strings.emplace_back(RandomBytes(rng, 100));
          }
          change.entries.push_back(entry);
        }
        group.changes.push_back(change);
        if (!change.more) n += 1 + rng() % 3;
      }
      req.groups.push_back(group);
    }
    const std::string bytes = EncodeRequest(req);
    Result<Request> back = DecodeRequest(bytes, 1 << 20);
    ASSERT_TRUE(back.ok()) << back.status().ToString() << " round " << round;
    EXPECT_EQ(*back, req) << "round " << round;

    Answer answer{.not_my_life = rng() % 5 == 0, .headroom = rng()};
    for (uint16_t slot : slots) {
      SlotAnswer s{.slot = slot,
                   .status = static_cast<SlotStatus>(rng() % (kLastSlotStatus + 1)),
                   .ownership = rng() % 100,
                   .applied = rng() % 1000,
                   .received = rng() % 1000,
                   .fill_id = rng() % 3 == 0 ? rng() % 100 : 0,
                   .filled = rng() % 50};
      for (int k = static_cast<int>(rng() % 3); k > 0; k--) {
        s.need_state.push_back(RandomBytes(rng, 30));
      }
      answer.slots.push_back(s);
    }
    Result<Answer> answer_back = DecodeAnswer(EncodeAnswer(answer));
    ASSERT_TRUE(answer_back.ok()) << answer_back.status().ToString();
    EXPECT_EQ(*answer_back, answer);
  }
}

// R1: counts larger than the bytes left could hold, or than the limits, and every malformed
// element, are refused before anything is sized by them.
TEST(ReplicaTest, HugeCountsAreRefusedWithoutAllocating) {
  auto header = [](std::string* out) {
    wire::Writer w(out);
    w.PutFixed32(2);
    w.PutVarint64(7);
  };
  auto refused = [](const std::string& bytes) {
    Result<Request> r = DecodeRequest(bytes, 1 << 20);
    return !r.ok() && r.status().code() == StatusCode::kCorruption;
  };
  {  // A slot count of 2^62.
    std::string b;
    header(&b);
    wire::Writer(&b).PutVarint64(1ull << 62);
    EXPECT_TRUE(refused(b));
  }
  // A group with a huge change count, then one with a huge entry count.
  for (int which = 0; which < 2; which++) {
    std::string b;
    header(&b);
    wire::Writer w(&b);
    w.PutVarint64(1);
    w.PutFixed16(5);
    w.PutVarint64(1);  // o(s)
    w.PutVarint64(0);  // start
    w.PutVarint64(0);  // committed
    w.PutU8(0);        // no fill
    if (which == 0) {
      w.PutVarint64(1ull << 60);
    } else {
      w.PutVarint64(1);
      w.PutVarint64(1);
      w.PutVarint64(0);
      w.PutU8(0);
      w.PutVarint64(1ull << 60);
    }
    w.PutRaw(std::string(64, '\0'));
    EXPECT_TRUE(refused(b)) << which;
  }
  {  // More changes than one message may carry, each well formed.
    Request req = Message(5, 1, 0, {});
    for (uint64_t n = 1; n <= kMaxChanges + 1; n++) req.groups[0].changes.push_back({.n = n});
    EXPECT_TRUE(refused(EncodeRequest(req)));
    req.groups[0].changes.pop_back();
    EXPECT_TRUE(DecodeRequest(EncodeRequest(req), 1 << 20).ok());
  }
  {  // More entries than one message may carry, over two slots.
    Request req = Message(5, 1, 0, {{.n = 1}});
    req.groups.push_back({.slot = 6, .ownership = 1, .changes = {{.n = 1}}});
    req.groups[0].changes[0].entries.assign(kMaxEntries / 2, Entry{.kind = EntryKind::kRemove});
    req.groups[1].changes[0].entries.assign(kMaxEntries / 2 + 1, Entry{.kind = EntryKind::kRemove});
    EXPECT_TRUE(refused(EncodeRequest(req)));
    req.groups[1].changes[0].entries.pop_back();
    EXPECT_TRUE(DecodeRequest(EncodeRequest(req), 1 << 20).ok());
  }
  const std::string big_key(kMaxKeyBytes + 1, 'k');
  const std::string big_value(2 << 20, 'v');
  std::vector<std::pair<const char*, Request>> bad = {
      {"slot past 16,383", Message(16384, 1, 0, {One(1, "a", "b")})},
      {"a change numbered 0", Message(1, 1, 0, {One(0, "a", "b")})},
      {"out of order", Message(1, 1, 0, {One(2, "a", "b"), One(2, "a", "c")})},
      {"a part not followed by its next part",
       Message(1, 1, 0, {{.n = 1, .part = 0, .more = true}, {.n = 1, .part = 2}})},
      {"a part followed by another change",
       Message(1, 1, 0, {{.n = 1, .part = 0, .more = true}, {.n = 2}})},
      {"a later change not at part 0", Message(1, 1, 0, {{.n = 1}, {.n = 2, .part = 1}})},
      {"a key over 64 KiB", Message(1, 1, 0, {One(1, big_key, "b")})},
      {"a payload over the limit", Message(1, 1, 0, {One(1, "a", big_value)})},
      {"a flush naming a key",
       Message(1, 1, 0, {{.n = 1, .entries = {{.kind = EntryKind::kFlush, .key = "k"}}}})},
  };
  // S12's fills: a number, a batch for its puts, puts only, changes above its start.
  auto with_fill = [](Fill fill, std::vector<Change> changes = {}) {
    Request r = Message(1, 1, 0, std::move(changes));
    r.groups[0].fill = std::move(fill);
    return r;
  };
  bad.emplace_back("a fill numbered 0", with_fill({.id = 0, .from = 3}));
  bad.emplace_back("fill puts without a batch", with_fill({.id = 1, .puts = {Put("a", "b")}}));
  bad.emplace_back("a last fill batch numbered 0", with_fill({.id = 1, .last = true}));
  bad.emplace_back("a top without a batch", with_fill({.id = 1, .top = 3}));
  bad.emplace_back("a batch read before its start",
                   with_fill({.id = 1, .from = 4, .batch = 1, .top = 3}));
  bad.emplace_back("a fill entry not a put",
                   with_fill({.id = 1, .batch = 1, .puts = {{.kind = EntryKind::kRemove}}}));
  bad.emplace_back("a change at the fill's start",
                   with_fill({.id = 1, .from = 3}, {One(3, "a", "b")}));
  {
    Request r = with_fill({.id = 1, .from = 3});
    r.groups[0].start = 4;
    bad.emplace_back("a fill from before its owner's start", r);
  }
  EXPECT_TRUE(
      DecodeRequest(
          EncodeRequest(with_fill(
              {.id = 1, .from = 3, .batch = 2, .top = 3, .last = true, .puts = {Put("a", "b")}},
              {One(4, "a", "c")})),
          1 << 20)
          .ok());
  Request twice = Message(1, 1, 0, {});
  twice.groups.push_back(twice.groups[0]);
  bad.emplace_back("a slot named twice", twice);
  for (const auto& [what, req] : bad) EXPECT_TRUE(refused(EncodeRequest(req))) << what;
  {  // Unknown kinds and flags, and trailing bytes.
    std::string b = EncodeRequest(Message(1, 1, 0, {One(1, "a", "b")}));
    std::string kind = b;
    kind[kind.find('a') - 2] = 9;  // the entry's kind byte, before the key's length
    EXPECT_TRUE(refused(kind));
    std::string flags = b;
    flags[flags.find('a') - 4] = 2;  // the change's flags
    EXPECT_TRUE(refused(flags));
    EXPECT_TRUE(refused(b + "x"));
    EXPECT_TRUE(DecodeRequest(b, 1 << 20).ok());
  }
  {  // Answers: a huge slot count, a huge key count, an unknown status.
    std::string b;
    wire::Writer w(&b);
    w.PutU8(0);
    w.PutVarint64(0);
    w.PutVarint64(1ull << 62);
    EXPECT_FALSE(DecodeAnswer(b).ok());
    std::string keys;
    wire::Writer k(&keys);
    k.PutU8(0);
    k.PutVarint64(0);
    k.PutVarint64(1);
    k.PutFixed16(3);
    k.PutU8(0);
    k.PutVarint64(1);
    k.PutVarint64(1);
    k.PutVarint64(1);
    k.PutVarint64(1ull << 40);
    EXPECT_FALSE(DecodeAnswer(keys).ok());
    EXPECT_FALSE(DecodeAnswer(std::string(1, '\x02')).ok());
  }
}

// R2: changes installed once each, in n order, up to the committed n only.
TEST(ReplicaTest, OutOfOrderChangesWaitAndCommittedIsInstalled) {
  Fixture f;
  Answer a = f.receiver.Receive(Message(9, 1, 0, {One(3, "c", "3")}));
  ASSERT_EQ(a.slots.size(), 1u);
  EXPECT_EQ(a.slots[0].status, SlotStatus::kTaken);
  EXPECT_EQ(a.slots[0].received, 0u);  // a gap before 3
  EXPECT_EQ(f.receiver.Stats(9).early, 1u);

  a = f.receiver.Receive(Message(9, 1, 1, {One(1, "a", "1"), One(2, "b", "2")}));
  EXPECT_EQ(a.slots[0].received, 3u);
  EXPECT_EQ(a.slots[0].applied, 1u);
  EXPECT_EQ(f.sink.installed, std::vector<std::string>{"9#1:1/a=1;"});

  // Sent again (the answer was lost): acknowledged again, installed once.
  a = f.receiver.Receive(Message(9, 1, 3, {One(1, "a", "1"), One(2, "b", "2")}));
  EXPECT_EQ(a.slots[0].received, 3u);
  EXPECT_EQ(a.slots[0].applied, 3u);
  EXPECT_EQ(f.sink.installed, (std::vector<std::string>{"9#1:1/a=1;", "9#2:1/b=2;", "9#3:1/c=3;"}));
  EXPECT_EQ(f.receiver.charged(), 0u);
  EXPECT_EQ(f.sink.reserved, 0u);

  // A committed n past what was received (a filling backup): installed as it comes.
  a = f.receiver.Receive(Message(9, 1, 6, {One(5, "e", "5")}));
  EXPECT_EQ(a.slots[0].applied, 3u);
  a = f.receiver.Receive(Message(9, 1, 6, {One(4, "d", "4")}));
  EXPECT_EQ(a.slots[0].applied, 5u);
  EXPECT_EQ(f.sink.installed.back(), "9#5:1/e=5;");
}

// S1: a delta whose cell is at another version names the key in the next answer.
TEST(ReplicaTest, ADeltaThatDoesNotApplyAsksForState) {
  Fixture f;
  f.sink.cell_version = 4;
  Change c{.n = 1,
           .entries = {{.kind = EntryKind::kDelta, .key = "hll", .cell_version = 3, .bytes = "d"},
                       {.kind = EntryKind::kDelta, .key = "ok", .cell_version = 4, .bytes = "d"}}};
  Answer a = f.receiver.Receive(Message(2, 1, 1, {c}));
  EXPECT_EQ(a.slots[0].need_state, std::vector<std::string>{"hll"});
  a = f.receiver.Receive(Message(2, 1, 1, {}));
  EXPECT_TRUE(a.slots[0].need_state.empty());  // said once
}

// R4 (rules V2, V3).
TEST(ReplicaTest, StaleOwnershipIsRefused) {
  Fixture f;
  f.table.ownership_[4] = 5;
  Answer a = f.receiver.Receive(Message(4, 4, 1, {One(1, "a", "old owner")}));
  EXPECT_EQ(a.slots[0].status, SlotStatus::kFenced);
  EXPECT_EQ(a.slots[0].ownership, 5u);
  a = f.receiver.Receive(Message(4, 6, 1, {One(1, "a", "table not caught up")}));
  EXPECT_EQ(a.slots[0].status, SlotStatus::kBehind);
  f.table.not_backed_.insert(4);
  a = f.receiver.Receive(Message(4, 5, 1, {One(1, "a", "not a backup here")}));
  EXPECT_EQ(a.slots[0].status, SlotStatus::kBehind);
  EXPECT_TRUE(f.sink.installed.empty());
  EXPECT_EQ(f.receiver.Stats(4).received, 0u);
  f.table.not_backed_.clear();
  a = f.receiver.Receive(Message(4, 5, 1, {One(1, "a", "now")}));
  EXPECT_EQ(a.slots[0].status, SlotStatus::kTaken);
  EXPECT_EQ(f.sink.installed, std::vector<std::string>{"4#1:1/a=now;"});
}

// R3 (rule O7).
TEST(ReplicaTest, AnotherLifeIsNotAcknowledged) {
  Fixture f;
  Request r = Message(3, 1, 1, {One(1, "a", "b")});
  r.life = 6;  // the life before a restart
  EXPECT_TRUE(f.receiver.Receive(r).not_my_life);
  r.life = 7;
  r.target = 3;  // another member
  EXPECT_TRUE(f.receiver.Receive(r).not_my_life);
  r.target = 2;
  f.table.listed_life_ = 6;  // the table still lists the old life
  Answer a = f.receiver.Receive(r);
  EXPECT_TRUE(a.not_my_life);
  EXPECT_TRUE(a.slots.empty());
  EXPECT_TRUE(f.sink.installed.empty());
  EXPECT_EQ(f.receiver.Stats(3).received, 0u);
  f.table.listed_life_ = 7;
  EXPECT_FALSE(f.receiver.Receive(r).not_my_life);
  EXPECT_EQ(f.sink.installed.size(), 1u);
}

// R5.
TEST(ReplicaTest, APartedChangeIsInstalledWhole) {
  Fixture f;
  auto part = [](uint64_t p, bool more, std::string_view v) {
    return Change{.n = 1, .part = p, .more = more, .entries = {Put("k", v)}};
  };
  Answer a = f.receiver.Receive(Message(8, 1, 1, {part(0, true, "p0")}));
  EXPECT_EQ(a.slots[0].received, 0u);
  EXPECT_EQ(f.receiver.Stats(8).pending, 1u);
  // Part 2 before part 1: not taken (sent again).
  f.receiver.Receive(Message(8, 1, 1, {part(2, false, "p2")}));
  EXPECT_TRUE(f.sink.installed.empty());
  // Part 0 again (a resend), then 1 and 2.
  f.receiver.Receive(Message(8, 1, 1, {part(0, true, "p0"), part(1, true, "p1")}));
  EXPECT_TRUE(f.sink.installed.empty());
  a = f.receiver.Receive(Message(8, 1, 1, {part(2, false, "p2"), One(2, "x", "after")}));
  EXPECT_EQ(a.slots[0].received, 2u);
  EXPECT_EQ(a.slots[0].applied, 1u);
  EXPECT_EQ(f.sink.installed, std::vector<std::string>{"8#1:1/k=p0;1/k=p1;1/k=p2;"});
}

// R6: early changes kept up to the bound, then dropped; the owner's resend fills in.
TEST(ReplicaTest, EarlyChangesAreBounded) {
  Fixture f;
  const std::string value(1 << 20, 'v');  // 1 MiB each
  std::vector<Change> early;
  for (uint64_t n = 2; n <= 40; n++) early.push_back(One(n, "k", value));
  Answer a = f.receiver.Receive(Message(1, 1, 0, early));
  EXPECT_EQ(a.slots[0].status, SlotStatus::kTaken);
  const Receiver::SlotStats s = f.receiver.Stats(1);
  EXPECT_GT(s.early, 0u);
  EXPECT_LT(s.early, 39u);
  EXPECT_LE(f.receiver.charged(), kMaxEarlyBytes);
  // The gap filled, everything sent again: all installed once, in order.
  std::vector<Change> all = {One(1, "k", value)};
  all.insert(all.end(), early.begin(), early.end());
  a = f.receiver.Receive(Message(1, 1, 40, all));
  EXPECT_EQ(a.slots[0].applied, 40u);
  ASSERT_EQ(f.sink.installed.size(), 40u);
  for (size_t i = 0; i < 40; i++) {
    EXPECT_EQ(f.sink.installed[i].substr(0, f.sink.installed[i].find(':')),
              "1#" + std::to_string(i + 1));
  }
  EXPECT_EQ(f.receiver.charged(), 0u);
}

// R6: a change that cannot be charged is not received; sent again later it is.
TEST(ReplicaTest, AChangeThatCannotBeChargedIsNotReceived) {
  Fixture f;
  f.sink.budget = 4096;
  const std::string big(8192, 'v');
  Answer a = f.receiver.Receive(Message(6, 1, 2, {One(1, "a", "small"), One(2, "b", big)}));
  EXPECT_EQ(a.slots[0].status, SlotStatus::kFull);
  EXPECT_EQ(a.slots[0].received, 1u);
  EXPECT_EQ(a.slots[0].applied, 1u);
  EXPECT_LT(a.headroom, 8192u);
  f.sink.budget = 1 << 20;
  a = f.receiver.Receive(Message(6, 1, 2, {One(2, "b", big)}));
  EXPECT_EQ(a.slots[0].status, SlotStatus::kTaken);
  EXPECT_EQ(a.slots[0].applied, 2u);
  EXPECT_EQ(f.sink.reserved, 0u);
}

// R7 (rule O6): a new owner's changes replace what the old one had not committed here.
TEST(ReplicaTest, ANewOwnerDropsWhatWasPending) {
  Fixture f;
  f.receiver.Receive(Message(7, 1, 1, {One(1, "a", "1"), One(2, "a", "2 old"), One(4, "a", "4")}));
  EXPECT_EQ(f.receiver.Stats(7).pending, 1u);
  EXPECT_EQ(f.receiver.Stats(7).early, 1u);
  f.table.ownership_[7] = 3;
  Request wrong_start = Message(7, 3, 2, {One(2, "a", "2 new")});
  Answer a = f.receiver.Receive(wrong_start);  // begins at 0, below what was installed
  EXPECT_EQ(a.slots[0].status, SlotStatus::kConflict);
  Request next = Message(7, 3, 2, {One(2, "a", "2 new")});
  next.groups[0].start = 1;  // after the one change installed
  a = f.receiver.Receive(next);
  EXPECT_EQ(a.slots[0].status, SlotStatus::kTaken);
  EXPECT_EQ(a.slots[0].ownership, 3u);
  EXPECT_EQ(f.sink.installed, (std::vector<std::string>{"7#1:1/a=1;", "7#2:1/a=2 new;"}));
  EXPECT_EQ(f.receiver.Stats(7).early, 0u);
  EXPECT_EQ(f.receiver.charged(), 0u);
  // The destructor releases what is still pending.
  {
    FakeTable table;
    FakeSink sink;
    {
      Receiver r(&table, &sink);
      r.Receive(Message(1, 1, 0, {One(1, "a", "pending"), One(3, "a", "early")}));
      EXPECT_GT(sink.reserved, 0u);
    }
    EXPECT_EQ(sink.reserved, 0u);
  }
}

// Receive from several threads at once, each its own slots (run under TSan by the tsan label).
TEST(ReplicaTest, ThreadsReceiveSlotsAtOnce) {
  Fixture f;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; t++) {
    threads.emplace_back([&f, t] {
      for (uint64_t n = 1; n <= 200; n++) {
        f.receiver.Receive(Message(static_cast<uint16_t>(100 + t), 1, n, {One(n, "k", "v")}));
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; t++)
    EXPECT_EQ(f.receiver.Stats(static_cast<uint16_t>(100 + t)).applied, 200u);
  EXPECT_EQ(f.sink.installed.size(), 800u);
}

// ---- S12: fills (R17-R19) ----

// A batch's top is its fill's start unless a test names it.
Request FillMessage(uint16_t slot, uint64_t committed, Fill fill,
                    std::vector<Change> changes = {}) {
  if (fill.batch != 0 && fill.top == 0) fill.top = fill.from;
  Request r = Message(slot, 1, committed, std::move(changes));
  r.groups[0].fill = std::move(fill);
  return r;
}

using Kv = std::map<std::string, std::string>;

// R17 (F2, F4): whatever the copy held, a fill restarts it as the owner's store after its start
// and installs its batches in order; the answer says how far.
TEST(ReplicaTest, AFillEndsEqualToTheOwner) {
  Fixture f;
  f.receiver.Receive(
      Message(40, 1, 2, {One(1, "stale", "x"), One(2, "gone", "y"), One(4, "e", "z")}));
  ASSERT_EQ(f.sink.kv[40], (Kv{{"stale", "x"}, {"gone", "y"}}));
  Answer a = f.receiver.Receive(
      FillMessage(40, 6, {.id = 1, .from = 6, .batch = 1, .puts = {Put("a", "1"), Put("b", "2")}}));
  ASSERT_EQ(a.slots[0].status, SlotStatus::kTaken);
  EXPECT_EQ(a.slots[0].fill_id, 1u);
  EXPECT_EQ(a.slots[0].filled, 1u);
  EXPECT_EQ(a.slots[0].received, 6u);
  EXPECT_EQ(f.receiver.Stats(40).early, 0u);  // the old stream's early change went
  EXPECT_TRUE(f.receiver.Stats(40).filling);
  a = f.receiver.Receive(
      FillMessage(40, 7, {.id = 1, .from = 6, .batch = 2, .last = true, .puts = {Put("c", "3")}},
                  {One(7, "d", "4")}));
  EXPECT_EQ(a.slots[0].filled, 2u);
  EXPECT_EQ(a.slots[0].applied, 7u);
  EXPECT_FALSE(f.receiver.Stats(40).filling);
  EXPECT_EQ(f.sink.kv[40], (Kv{{"a", "1"}, {"b", "2"}, {"c", "3"}, {"d", "4"}}));
  EXPECT_EQ(f.receiver.charged(), 0u);  // the noted keys were released with the last batch
  // A resent batch is not installed twice; later changes go on as a plain stream.
  const size_t installs = f.sink.installed.size();
  f.receiver.Receive(FillMessage(
      40, 7, {.id = 1, .from = 6, .batch = 2, .last = true, .puts = {Put("c", "old")}}));
  a = f.receiver.Receive(Message(40, 1, 8, {One(8, "c", "5")}));
  EXPECT_EQ(f.sink.installed.size(), installs + 1);
  EXPECT_EQ(f.sink.kv[40]["c"], "5");
}

// R17 (F3): a fill put of a key a live change installed since the fill began is older than it
// and is dropped; one installed before the live change is overwritten by it.
TEST(ReplicaTest, AFillNeverOverwritesALiveChange) {
  Fixture f;
  f.receiver.Receive(FillMessage(41, 3, {.id = 5, .from = 3}));  // the start: no batch yet
  f.receiver.Receive(FillMessage(41, 5, {.id = 5, .from = 3},
                                 {One(4, "k", "live"),
                                  {.n = 5, .entries = {{.kind = EntryKind::kRemove, .key = "r"}}},
                                  One(6, "p", "pending")}));
  Answer a = f.receiver.Receive(
      FillMessage(41, 5,
                  {.id = 5,
                   .from = 3,
                   .batch = 1,
                   .last = true,
                   .puts = {Put("k", "old"), Put("r", "old"), Put("p", "old"), Put("q", "1")}}));
  EXPECT_EQ(a.slots[0].filled, 1u);
  EXPECT_EQ(f.sink.kv[41], (Kv{{"k", "live"}, {"p", "old"}, {"q", "1"}}));
  f.receiver.Receive(Message(41, 1, 6, {}));  // change 6 commits: installed over the fill's
  EXPECT_EQ(f.sink.kv[41], (Kv{{"k", "live"}, {"p", "pending"}, {"q", "1"}}));
}

// R17 (F3): a live flush makes every fill put still to come older than the copy.
TEST(ReplicaTest, ALiveFlushDropsOlderFillPuts) {
  Fixture f;
  f.receiver.Receive(FillMessage(42, 1, {.id = 1, .from = 1, .batch = 1, .puts = {Put("a", "1")}}));
  f.receiver.Receive(FillMessage(
      42, 3, {.id = 1, .from = 1},
      {{.n = 2, .entries = {{.kind = EntryKind::kFlush}}}, One(3, "b", "after the flush")}));
  f.receiver.Receive(FillMessage(
      42, 3,
      {.id = 1, .from = 1, .batch = 2, .last = true, .puts = {Put("c", "before the flush")}}));
  EXPECT_EQ(f.sink.kv[42], (Kv{{"b", "after the flush"}}));
  EXPECT_FALSE(f.receiver.Stats(42).filling);
}

// R18: a late message of an older fill restarts nothing; a batch after a missing one waits.
TEST(ReplicaTest, AnOlderFillNeverRestartsACopy) {
  Fixture f;
  f.receiver.Receive(FillMessage(43, 4, {.id = 2, .from = 4, .batch = 1, .puts = {Put("a", "1")}}));
  const size_t installs = f.sink.installed.size();
  Answer a = f.receiver.Receive(
      FillMessage(43, 3, {.id = 1, .from = 3, .batch = 1, .puts = {Put("old", "x")}}));
  EXPECT_EQ(a.slots[0].fill_id, 2u);
  EXPECT_EQ(a.slots[0].filled, 1u);
  a = f.receiver.Receive(
      FillMessage(43, 4, {.id = 2, .from = 4, .batch = 3, .puts = {Put("c", "3")}}));
  EXPECT_EQ(a.slots[0].filled, 1u);
  EXPECT_EQ(f.sink.installed.size(), installs);
  EXPECT_EQ(f.sink.kv[43], (Kv{{"a", "1"}}));
  // A newer fill under the same ownership does restart it.
  f.receiver.Receive(FillMessage(43, 9, {.id = 3, .from = 9, .batch = 1, .puts = {Put("z", "9")}}));
  EXPECT_EQ(f.sink.kv[43], (Kv{{"z", "9"}}));
}

// R19: a copy whose fill has not ended is not promotable; once it has, it is.
TEST(ReplicaTest, ACopyBeingFilledIsNotPromotable) {
  Fixture f;
  f.receiver.Receive(FillMessage(44, 2, {.id = 1, .from = 2, .batch = 1, .puts = {Put("a", "1")}}));
  EXPECT_EQ(f.receiver.Promote(44, 2).code(), StatusCode::kFailedPrecondition);
  f.receiver.Receive(FillMessage(44, 2, {.id = 1, .from = 2, .batch = 2, .last = true}));
  EXPECT_TRUE(f.receiver.Promote(44, 2).ok());
  EXPECT_EQ(f.sink.kv[44], (Kv{{"a", "1"}}));
}

// R16 with a fill: a batch that cannot be installed loses the copy until the next fill.
TEST(ReplicaTest, AFillBatchThatCannotBeInstalledLosesTheCopy) {
  Fixture f;
  f.receiver.Receive(FillMessage(45, 1, {.id = 1, .from = 1}));
  f.sink.fail_installs = 1;
  Answer a = f.receiver.Receive(
      FillMessage(45, 1, {.id = 1, .from = 1, .batch = 1, .puts = {Put("a", "1")}}));
  EXPECT_EQ(a.slots[0].status, SlotStatus::kLost);
  EXPECT_EQ(a.slots[0].filled, 0u);
  a = f.receiver.Receive(
      FillMessage(45, 1, {.id = 2, .from = 1, .batch = 1, .last = true, .puts = {Put("a", "1")}}));
  EXPECT_EQ(a.slots[0].status, SlotStatus::kTaken);
  EXPECT_EQ(a.slots[0].filled, 1u);
  EXPECT_EQ(f.sink.kv[45], (Kv{{"a", "1"}}));
}

// R21: a new owner's message finds a copy whose fill had not ended lost (it would otherwise be
// believed whole), and releases what the fill had noted.
TEST(ReplicaTest, ANewOwnerMidFillFindsTheCopyLost) {
  Fixture f;
  f.receiver.Receive(FillMessage(46, 2, {.id = 1, .from = 2, .batch = 1, .puts = {Put("a", "1")}},
                                 {One(3, "live", "x")}));
  f.receiver.Receive(Message(46, 1, 3, {}));  // change 3 installs: its key is noted
  ASSERT_GT(f.receiver.charged(), 0u);
  f.table.ownership_[46] = 2;
  Request next = Message(46, 2, 3, {});
  next.groups[0].start = 3;
  Answer a = f.receiver.Receive(next);
  EXPECT_EQ(a.slots[0].status, SlotStatus::kLost);
  EXPECT_EQ(a.slots[0].ownership, 2u);
  EXPECT_FALSE(f.receiver.Stats(46).filling);
  EXPECT_EQ(f.receiver.charged(), 0u);
  EXPECT_EQ(f.receiver.Promote(46, 3).code(), StatusCode::kFailedPrecondition);
}

// R21: the new owner's own fill (its ids count from 1 again) starts the copy over, and its
// batches are counted afresh.
TEST(ReplicaTest, AnotherOwnersFillStartsTheCopyAgain) {
  Fixture f;
  f.receiver.Receive(FillMessage(47, 2, {.id = 1, .from = 2, .batch = 1, .puts = {Put("a", "1")}}));
  f.table.ownership_[47] = 2;
  Request probe = Message(47, 2, 2, {});
  probe.groups[0].start = 2;
  EXPECT_EQ(f.receiver.Receive(probe).slots[0].status, SlotStatus::kLost);
  Request fill = FillMessage(47, 2, {.id = 1, .from = 2, .batch = 1, .puts = {Put("b", "2")}});
  fill.groups[0].ownership = 2;
  fill.groups[0].start = 2;
  Answer a = f.receiver.Receive(fill);
  EXPECT_EQ(a.slots[0].status, SlotStatus::kTaken);
  EXPECT_EQ(a.slots[0].filled, 1u);
  EXPECT_EQ(f.sink.kv[47], (Kv{{"b", "2"}}));
}

// F9, R21: a batch may hold changes its owner had not committed (its top); until the owner says
// they are, the copy is not promotable past its committed n, and a new owner that began below
// them finds it lost, never in conflict (which would stop the slot).
TEST(ReplicaTest, AFillOfUncommittedStateIsNeverKeptByANewOwner) {
  Fixture f;
  Answer a = f.receiver.Receive(FillMessage(
      48, 1, {.id = 1, .from = 2, .batch = 1, .top = 3, .last = true, .puts = {Put("k", "3")}}));
  EXPECT_EQ(a.slots[0].filled, 1u);
  EXPECT_EQ(f.receiver.Promote(48, 2).code(), StatusCode::kFailedPrecondition);
  // Told that everything up to 3 committed, the copy is whole: a new owner keeps it.
  {
    Fixture g;
    g.receiver.Receive(FillMessage(
        48, 1, {.id = 1, .from = 2, .batch = 1, .top = 3, .last = true, .puts = {Put("k", "3")}},
        {One(3, "k", "3")}));
    g.receiver.Receive(Message(48, 1, 3, {}));
    g.table.ownership_[48] = 2;
    Request next = Message(48, 2, 4, {One(4, "j", "4")});
    next.groups[0].start = 3;
    EXPECT_EQ(g.receiver.Receive(next).slots[0].status, SlotStatus::kTaken);
    EXPECT_EQ(g.sink.kv[48], (Kv{{"k", "3"}, {"j", "4"}}));
  }
  // Not told: the new owner, who began after 1, finds it lost.
  f.table.ownership_[48] = 2;
  Request next = Message(48, 2, 1, {});
  next.groups[0].start = 1;
  a = f.receiver.Receive(next);
  EXPECT_EQ(a.slots[0].status, SlotStatus::kLost);
}

// F4: a batch is taken only when the live changes before it in the message were (a change that
// cannot be charged leaves the batch for the resend).
TEST(ReplicaTest, ABatchWaitsForTheLiveChangesBeforeIt) {
  Fixture f;
  f.receiver.Receive(FillMessage(49, 1, {.id = 1, .from = 1}));
  f.sink.budget = f.sink.reserved + 16;  // no room for a pending change
  Answer a = f.receiver.Receive(FillMessage(
      49, 1, {.id = 1, .from = 1, .batch = 1, .puts = {Put("a", "1")}}, {One(2, "a", "2")}));
  EXPECT_EQ(a.slots[0].status, SlotStatus::kFull);
  EXPECT_EQ(a.slots[0].filled, 0u);
  f.sink.budget = 1 << 20;
  a = f.receiver.Receive(FillMessage(
      49, 2, {.id = 1, .from = 1, .batch = 1, .puts = {Put("a", "1")}}, {One(2, "a", "2")}));
  EXPECT_EQ(a.slots[0].filled, 1u);
  EXPECT_EQ(f.sink.kv[49], (Kv{{"a", "2"}}));
}

}  // namespace
}  // namespace floe::replica
