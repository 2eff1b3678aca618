// The agreed table and the planner (docs/membership.md, rules M2, M3, J3, J4).

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>

#include "cluster/cluster.h"
#include "wire/wire.h"

namespace floe::cluster {
namespace {

using Kind = Change::Kind;

Change Of(Kind k) {
  Change c;
  c.kind = k;
  return c;
}
Change AddMember(TableMember m) {
  Change c = Of(Kind::kAddMember);
  c.member = std::move(m);
  return c;
}
Change ForNode(Kind k, net::NodeId id, bool flag = false) {
  Change c = Of(k);
  c.node = id;
  c.flag = flag;
  return c;
}
Change WithCount(Kind k, uint32_t n) {
  Change c = Of(k);
  c.count = n;
  return c;
}
Change ForSlots(Kind k, std::vector<Change::SlotItem> items) {
  Change c = Of(k);
  c.slots = std::move(items);
  return c;
}
Change WithBackups(uint16_t slot, uint64_t version, std::vector<net::NodeId> backups) {
  Change::SlotItem it;
  it.slot = slot;
  it.version = version;
  it.backups = std::move(backups);
  return ForSlots(Kind::kSetBackups, {it});
}
Change::SlotItem Item(uint16_t slot, uint64_t version, net::NodeId node = 0) {
  Change::SlotItem it;
  it.slot = slot;
  it.version = version;
  it.node = node;
  return it;
}

std::vector<Member> Members(int n) {
  std::string list;
  for (int i = 1; i <= n; i++) {
    if (i > 1) list += ",";
    list += "127.0.0." + std::to_string(i) + ":7100";
  }
  return ParseMembers(list).value();
}

TableMember Joiner(int i) {
  return TableMember{.host = "127.0.1." + std::to_string(i), .port = 7100, .raft_port = 7101};
}

std::map<net::NodeId, size_t> Owned(const Table& t) {
  std::map<net::NodeId, size_t> owned;
  for (int s = 0; s < kSlots; s++) owned[t.slot(static_cast<uint16_t>(s)).owner]++;
  return owned;
}

// Every slot's in-sync copies: the owner and its in-sync backups.
size_t Copies(const SlotState& st) { return 1 + st.backups.size(); }

size_t ActiveMembers(const Table& t) {
  return static_cast<size_t>(
      std::count_if(t.members().begin(), t.members().end(),
                    [](const TableMember& m) { return !m.leaving && !m.suspected; }));
}

// What an owner does once a filling backup has everything: asks for BackupInSync.
void FillAll(Table& t) {
  for (int s = 0; s < kSlots; s++) {
    const SlotState& st = t.slot(static_cast<uint16_t>(s));
    if (st.filling.empty()) continue;
    Change one = Of(Kind::kBackupInSync);
    for (net::NodeId f : st.filling) {
      one.slots = {Item(static_cast<uint16_t>(s), t.slot(static_cast<uint16_t>(s)).version, f)};
      ASSERT_TRUE(t.Apply(one).ok());
    }
  }
}

// Runs the planner to its end the way the leader will: apply its changes, finish every move and
// fill every new backup at once, re-plan. Checks after every change that no slot has fewer
// in-sync copies than before it, unless it has at least as many as it should (J4), and returns
// the number of slots that changed owner.
size_t RunPlanner(Table& t, size_t max_moves = 64) {
  size_t moved = 0;
  auto check = [&](const Table& before, const char* what) {
    const size_t full = std::min<size_t>(t.replicas(), ActiveMembers(t) - 1) + 1;
    for (int s = 0; s < kSlots; s++) {
      const uint16_t slot = static_cast<uint16_t>(s);
      EXPECT_GE(Copies(t.slot(slot)), std::min(Copies(before.slot(slot)), full))
          << "slot " << s << " lost an in-sync copy in " << what;
    }
    EXPECT_TRUE(t.Check().ok()) << t.Check().ToString();
  };
  for (int round = 0; round < 10'000; round++) {
    std::vector<Change> plan = Plan(t, PlanOptions{.max_moves = max_moves});
    if (plan.empty()) return moved;
    for (const Change& c : plan) {
      Table before = t;
      Status st = t.Apply(c);
      EXPECT_TRUE(st.ok()) << st.ToString();
      check(before, "a planned change");
      if (c.kind == Change::Kind::kBeginMove) {
        Change commit = Of(Kind::kCommitMove);
        for (const auto& it : c.slots)
          commit.slots.push_back(Item(it.slot, t.slot(it.slot).version));
        before = t;
        EXPECT_TRUE(t.Apply(commit).ok());
        check(before, "a commit");
        moved += commit.slots.size();
      }
    }
    const Table before = t;
    FillAll(t);
    check(before, "filling");
  }
  ADD_FAILURE() << "the planner did not converge";
  return moved;
}

// Owners always; backups too when they were assigned all at once (not yet moved for balance).
void ExpectBalanced(const Table& t, bool backups_spread = false) {
  std::vector<net::NodeId> active;
  for (const TableMember& m : t.members()) {
    if (!m.leaving && !m.suspected) active.push_back(m.id);
  }
  ASSERT_FALSE(active.empty());
  std::map<net::NodeId, size_t> owned = Owned(t);
  std::map<net::NodeId, size_t> backed;
  const size_t want = std::min<size_t>(t.replicas(), active.size() - 1);
  for (int s = 0; s < kSlots; s++) {
    const SlotState& st = t.slot(static_cast<uint16_t>(s));
    EXPECT_EQ(st.moving_to, 0u);
    EXPECT_TRUE(st.filling.empty());
    ASSERT_EQ(st.backups.size(), want) << "slot " << s;
    for (net::NodeId b : st.backups) backed[b]++;
  }
  size_t lo = kSlots, hi = 0, blo = kSlots * kMaxReplicas, bhi = 0;
  for (net::NodeId id : active) {
    lo = std::min(lo, owned[id]);
    hi = std::max(hi, owned[id]);
    blo = std::min(blo, backed[id]);
    bhi = std::max(bhi, backed[id]);
  }
  EXPECT_LE(hi - lo, 1u) << "owners unbalanced";
  // Backups are balanced when assigned; a member's share may differ by a few slots.
  if (backups_spread) {
    EXPECT_LE(bhi - blo, want * 2 + 2) << "backups unbalanced";
  }
}

TEST(TableTest, InitialMatchesTheBalancedMapWithBackupsSpread) {
  for (int n : {1, 2, 3, 5, 7}) {
    const std::vector<Member> members = Members(n);
    const Table t = Table::Initial(members, 1);
    ASSERT_TRUE(t.Check().ok());
    EXPECT_EQ(t.epoch(), 0u);
    EXPECT_EQ(t.next_id(), static_cast<net::NodeId>(n + 1));
    const SlotMap map = SlotMap::Balanced(members);
    for (int s = 0; s < kSlots; s++) {
      EXPECT_EQ(t.slot(static_cast<uint16_t>(s)).owner, map.Home(static_cast<uint16_t>(s)));
      EXPECT_EQ(t.slot(static_cast<uint16_t>(s)).version, 1u);
    }
    ExpectBalanced(t, /*backups_spread=*/true);
    if (n >= 3) {
      // The slots of one owner are backed up by every other member, not one: when it dies, the
      // promotions spread.
      std::map<net::NodeId, size_t> backers;
      for (int s = 0; s < kSlots; s++) {
        const SlotState& st = t.slot(static_cast<uint16_t>(s));
        if (st.owner == 1) backers[st.backups[0]]++;
      }
      EXPECT_EQ(backers.size(), static_cast<size_t>(n - 1));
    }
  }
}

TEST(TableTest, TheFirstEntryInitializesAnEmptyTableOnce) {
  Table empty;
  EXPECT_TRUE(empty.members().empty());
  Change init = WithCount(Kind::kInitialize, 1);
  for (int i = 1; i <= 3; i++) {
    init.members.push_back(TableMember{.id = static_cast<net::NodeId>(i),
                                       .host = "127.0.0." + std::to_string(i),
                                       .port = 7100,
                                       .raft_port = 7101});
  }
  init.cluster_id = ClusterId::Random();
  ASSERT_TRUE(empty.Apply(init).ok());
  EXPECT_EQ(empty.epoch(), 1u);
  Table expected = Table::Initial(Members(3), 1);
  // The same table as Table::Initial, but for the epoch and the cluster id.
  EXPECT_EQ(empty.members(), expected.members());
  for (uint16_t s = 0; s < kSlots; s++) ASSERT_EQ(empty.slot(s), expected.slot(s)) << s;
  EXPECT_EQ(empty.cluster_id(), init.cluster_id);
  Status again = empty.Apply(init);
  EXPECT_NE(again.message().find("initialized already"), std::string::npos) << again.ToString();
  // Ids must be 1..n; addresses valid and distinct.
  Table other;
  init.members[2].id = 5;
  EXPECT_FALSE(other.Apply(init).ok());
  init.members[2].id = 3;
  init.members[2].host = "127.0.0.1";
  EXPECT_FALSE(other.Apply(init).ok());
  EXPECT_TRUE(other.members().empty());
}

TEST(TableTest, IdsNeverReused) {
  Table t = Table::Initial(Members(3), 1);
  ASSERT_TRUE(t.Apply(AddMember(Joiner(1))).ok());
  EXPECT_EQ(t.members().back().id, 4u);
  ASSERT_TRUE(t.Apply(ForNode(Kind::kSetLeaving, 4, true)).ok());
  RunPlanner(t);  // nothing to move off it; it is removed
  EXPECT_EQ(t.FindMember(4), nullptr);
  ASSERT_TRUE(t.Apply(AddMember(Joiner(1))).ok());
  EXPECT_EQ(t.members().back().id, 5u) << "a removed id came back";
}

TEST(TableTest, SlotChangesCheckVersionsAndApplyToAllOrNone) {
  Table t = Table::Initial(Members(3), 1);
  const Table before = t;
  const SlotState& s0 = t.slot(0);
  ASSERT_EQ(s0.owner, 1u);
  // The second item expects a stale version: nothing changes.
  Change c = ForSlots(Kind::kBeginMove, {Item(0, 1, 3), Item(1, 7, 3)});
  Status st = t.Apply(c);
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("slot 1 is at version 1, the change expects 7"), std::string::npos)
      << st.ToString();
  EXPECT_EQ(t, before);
  c.slots[1].version = 1;
  ASSERT_TRUE(t.Apply(c).ok());
  EXPECT_EQ(t.epoch(), 1u);
  EXPECT_EQ(t.slot(0).moving_to, 3u);
  EXPECT_EQ(t.slot(0).version, 2u);
  // Replayed (as a retried proposal would be): refused, the versions moved on.
  EXPECT_FALSE(t.Apply(c).ok());
  // A destination that is the owner, or no member, is refused.
  EXPECT_FALSE(t.Apply(ForSlots(Kind::kBeginMove, {Item(2, 1, 1)})).ok());
  EXPECT_FALSE(t.Apply(ForSlots(Kind::kBeginMove, {Item(2, 1, 9)})).ok());
  // A slot named twice is refused.
  EXPECT_FALSE(t.Apply(ForSlots(Kind::kAbortMove, {Item(0, 2), Item(0, 2)})).ok());
  ASSERT_TRUE(t.Apply(ForSlots(Kind::kAbortMove, {Item(0, 2)})).ok());
  EXPECT_EQ(t.slot(0).moving_to, 0u);
  EXPECT_EQ(t.slot(0).owner, 1u);
}

TEST(TableTest, CommitMoveKeepsTheSourceAsABackup) {
  Table t = Table::Initial(Members(3), 1);
  const SlotState s0 = t.slot(0);
  ASSERT_EQ(s0.backups.size(), 1u);
  const net::NodeId backup = s0.backups[0];
  // To its backup: the old owner takes the backup's place.
  ASSERT_TRUE(t.Apply(ForSlots(Kind::kBeginMove, {Item(0, 1, backup)})).ok());
  ASSERT_TRUE(t.Apply(ForSlots(Kind::kCommitMove, {Item(0, 2)})).ok());
  EXPECT_EQ(t.slot(0).owner, backup);
  EXPECT_EQ(t.slot(0).backups, std::vector<net::NodeId>{1});
  EXPECT_EQ(t.slot(0).ownership, 3u) << "a new owner starts a new ownership epoch";
  // To a member that is no backup: the source is kept as an extra in-sync backup.
  const net::NodeId other = backup == 2 ? 3 : 2;
  ASSERT_TRUE(t.Apply(ForSlots(Kind::kBeginMove, {Item(0, 3, other)})).ok());
  ASSERT_TRUE(t.Apply(ForSlots(Kind::kCommitMove, {Item(0, 4)})).ok());
  EXPECT_EQ(t.slot(0).owner, other);
  EXPECT_EQ(t.slot(0).backups, (std::vector<net::NodeId>{1, backup}));
}

TEST(TableTest, PromotionNeedsASuspectedOwnerAndAnInSyncBackup) {
  Table t = Table::Initial(Members(3), 1);
  const net::NodeId backup = t.slot(0).backups[0];
  Status st = t.Apply(ForSlots(Kind::kPromote, {Item(0, 1, backup)}));
  EXPECT_NE(st.message().find("is not suspected"), std::string::npos) << st.ToString();
  // Suspicion names the life it is about: a stale report is refused.
  Change suspect = ForNode(Kind::kSuspect, 1, true);
  suspect.member.life = 5;
  EXPECT_FALSE(t.Apply(suspect).ok());
  suspect.member.life = 0;
  ASSERT_TRUE(t.Apply(suspect).ok());
  const net::NodeId other = backup == 2 ? 3 : 2;
  EXPECT_FALSE(t.Apply(ForSlots(Kind::kPromote, {Item(0, 1, other)})).ok()) << "not a backup";
  ASSERT_TRUE(t.Apply(ForSlots(Kind::kPromote, {Item(0, 1, backup)})).ok());
  EXPECT_EQ(t.slot(0).owner, backup);
  EXPECT_TRUE(t.slot(0).backups.empty()) << "the suspected owner's place is not kept";
  EXPECT_EQ(t.slot(0).ownership, 2u);
  // A filling backup is not eligible: it must be declared in sync first.
  ASSERT_TRUE(t.Apply(ForNode(Kind::kSuspect, 1, false)).ok());
  Change fill = ForSlots(Kind::kSetBackups, {Item(1, 1)});
  fill.slots[0].backups = t.slot(1).backups;
  fill.slots[0].filling = {other == t.slot(1).backups[0] ? backup : other};
  ASSERT_EQ(t.slot(1).owner, 1u);
  ASSERT_TRUE(t.Apply(fill).ok());
  ASSERT_TRUE(t.Apply(ForNode(Kind::kSuspect, 1, true)).ok());
  const net::NodeId filling = t.slot(1).filling[0];
  EXPECT_FALSE(t.Apply(ForSlots(Kind::kPromote, {Item(1, 2, filling)})).ok());
  ASSERT_TRUE(t.Apply(ForSlots(Kind::kBackupInSync, {Item(1, 2, filling)})).ok());
  EXPECT_TRUE(t.Apply(ForSlots(Kind::kPromote, {Item(1, 3, filling)})).ok());
}

TEST(TableTest, SetBackupsCannotDeclareABackupInSync) {
  Table t = Table::Initial(Members(3), 1);
  const net::NodeId backup = t.slot(0).backups[0];
  const net::NodeId other = backup == 2 ? 3 : 2;
  Change c = ForSlots(Kind::kSetBackups, {Item(0, 1)});
  c.slots[0].backups = {backup, other};
  Status st = t.Apply(c);
  EXPECT_NE(st.message().find("is not an in-sync backup"), std::string::npos) << st.ToString();
}

TEST(TableTest, ARestartEndsTheOldLifesRoles) {
  Table t = Table::Initial(Members(3), 1);
  // The first start of every member is recorded without moving anything.
  for (net::NodeId id : {1u, 2u, 3u}) {
    Change first = ForNode(Kind::kRestarted, id);
    first.member.life = 100 + id;
    ASSERT_TRUE(t.Apply(first).ok());
  }
  for (int s = 0; s < kSlots; s++) EXPECT_EQ(t.slot(static_cast<uint16_t>(s)).version, 1u);
  // Member 1 restarts (a new life, an empty store): its slots go to their in-sync backups, and it
  // backs up nothing any more.
  Change again = ForNode(Kind::kRestarted, 1);
  again.member.life = 101;
  EXPECT_FALSE(t.Apply(again).ok()) << "a life that is not newer";
  again.member.life = 500;
  const Table before = t;
  ASSERT_TRUE(t.Apply(again).ok());
  for (int s = 0; s < kSlots; s++) {
    const SlotState& was = before.slot(static_cast<uint16_t>(s));
    const SlotState& now = t.slot(static_cast<uint16_t>(s));
    EXPECT_NE(now.owner, 1u);
    EXPECT_FALSE(std::count(now.backups.begin(), now.backups.end(), 1u));
    if (was.owner == 1) {
      EXPECT_EQ(now.owner, was.backups[0]);
      EXPECT_EQ(now.ownership, now.version);
    }
  }
  // The planner gives it roles again, as a filling backup first.
  RunPlanner(t);
  ExpectBalanced(t);
}

TEST(TableTest, MembersAreCheckedAndRemovedOnlyWhenEmpty) {
  Table t = Table::Initial(Members(3), 1);
  EXPECT_FALSE(
      t.Apply(AddMember(TableMember{.host = "127.0.0.2", .port = 7100, .raft_port = 7101})).ok())
      << "an address already in the table";
  EXPECT_FALSE(
      t.Apply(AddMember(TableMember{.host = "localhost", .port = 7100, .raft_port = 7101})).ok())
      << "not canonical";
  EXPECT_FALSE(
      t.Apply(AddMember(TableMember{.host = "127.0.0.9", .port = 7100, .raft_port = 0})).ok());
  Status st = t.Apply(ForNode(Kind::kRemoveMember, 2));
  EXPECT_NE(st.message().find("member 2 still holds slot"), std::string::npos) << st.ToString();
  EXPECT_FALSE(t.Apply(ForNode(Kind::kSuspect, 9, true)).ok()) << "no such member";
  EXPECT_FALSE(t.Apply(WithCount(Kind::kSetReplicas, kMaxReplicas + 1)).ok());
  EXPECT_EQ(t.epoch(), 0u) << "a refused change moved the epoch";
}

TEST(TableTest, EncodeDecodeRoundTripsAndRefusesDamage) {
  Table t = Table::Initial(Members(5), 2);
  ASSERT_TRUE(t.Apply(AddMember(Joiner(7))).ok());
  ASSERT_TRUE(t.Apply(ForSlots(Kind::kBeginMove, {Item(9, 1, 6)})).ok());
  const std::string bytes = t.Encode();
  Result<Table> back = Table::Decode(bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, t);
  EXPECT_EQ(back->Encode(), bytes);
  // Every truncation is refused; so is a trailing byte.
  for (size_t n = 0; n < bytes.size(); n += 1 + n / 64) {
    EXPECT_FALSE(Table::Decode(bytes.substr(0, n)).ok()) << n;
  }
  EXPECT_FALSE(Table::Decode(bytes + "x").ok());
  // Random byte flips never crash, and whatever decodes passes Check.
  std::mt19937_64 rng(7);
  for (int i = 0; i < 300; i++) {
    std::string b = bytes;
    b[rng() % b.size()] = static_cast<char>(rng());
    Result<Table> r = Table::Decode(b);
    if (r.ok()) {
      EXPECT_TRUE(r->Check().ok());
    }
  }
}

// Rule M5: the first entry's cluster id is the table's, kept through a snapshot; a second
// kInitialize (another founder's, with its own id) changes nothing.
TEST(TableTest, InitializeRecordsTheClusterId) {
  Table t;
  EXPECT_TRUE(t.cluster_id().empty());
  Change init = WithCount(Kind::kInitialize, 0);
  init.members = {Joiner(1), Joiner(2)};
  init.members[0].id = 1;
  init.members[1].id = 2;
  // An all-zero id tells no cluster from another: refused, the table stays empty.
  EXPECT_FALSE(t.Apply(init).ok());
  EXPECT_TRUE(t.members().empty());
  init.cluster_id = ClusterId::Random();
  ASSERT_TRUE(t.Apply(init).ok());
  EXPECT_EQ(t.cluster_id(), init.cluster_id);
  Result<Table> back = Table::Decode(t.Encode());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->cluster_id(), init.cluster_id);
  Change other = init;
  other.cluster_id = ClusterId::Random();
  ASSERT_NE(other.cluster_id, init.cluster_id);
  EXPECT_FALSE(t.Apply(other).ok());
  EXPECT_EQ(t.cluster_id(), init.cluster_id);
  // The text form round-trips and refuses anything but 32 hex digits.
  Result<ClusterId> parsed = ClusterId::Parse(init.cluster_id.ToString());
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(*parsed, init.cluster_id);
  EXPECT_FALSE(ClusterId::Parse("").ok());
  EXPECT_FALSE(ClusterId::Parse(std::string(31, 'a')).ok());
  EXPECT_FALSE(ClusterId::Parse(std::string(31, 'a') + "g").ok());
}

TEST(TableTest, ChangesRoundTrip) {
  const std::vector<Change> changes = {
      AddMember(Joiner(3)),
      ForNode(Kind::kSetLeaving, 3, true),
      WithBackups(16383, 1ull << 40, {1, 2, 3}),
      ForSlots(Kind::kCommitMove, {Item(7, 3)}),
      ForSlots(Kind::kBackupInSync, {Item(8, 4, 2)}),
      ForNode(Kind::kRestarted, 4),
      [] {
        Change c = WithCount(Kind::kInitialize, 2);
        c.members = {Joiner(1), Joiner(2)};
        c.cluster_id = {.hi = 0x0123456789abcdefull, .lo = 42};
        return c;
      }(),
      ForSlots(Kind::kPromote, {Item(4, 2, 2)}),
      WithCount(Kind::kSetReplicas, 2),
      ForNode(Kind::kPausePlanner, 0, true),
  };
  for (const Change& c : changes) {
    const std::string bytes = EncodeChange(c);
    Result<Change> back = DecodeChange(bytes);
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(*back, c);
    for (size_t n = 0; n < bytes.size(); n++) EXPECT_FALSE(DecodeChange(bytes.substr(0, n)).ok());
  }
  // A member takes seven bytes at the least (an empty host, every number 0): its change decodes.
  // The bound once assumed eight, so a decoded change could fail to decode once re-encoded.
  {
    Change c = Of(Kind::kInitialize);
    c.members = {TableMember{}};
    Result<Change> back = DecodeChange(EncodeChange(c));
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(*back, c);
  }
  // A lying item count is refused before it sizes anything.
  std::string big = EncodeChange(Of(Kind::kAbortMove));
  big.back() = '\x7f';  // the item count: 127 items, no bytes for them
  EXPECT_FALSE(DecodeChange(big).ok());
}

TEST(PlannerTest, BalancedTableNeedsNothing) {
  for (int n : {1, 3, 6}) {
    const Table t = Table::Initial(Members(n), 1);
    EXPECT_TRUE(Plan(t, {}).empty()) << n;
  }
}

TEST(PlannerTest, JoinMovesOnlyTheNewMembersShare) {
  Table t = Table::Initial(Members(3), 1);
  ASSERT_TRUE(t.Apply(AddMember(Joiner(1))).ok());
  // At most max_moves at once.
  std::vector<Change> first = Plan(t, PlanOptions{.max_moves = 4});
  ASSERT_FALSE(first.empty());
  for (const Change& c : first) {
    if (c.kind == Change::Kind::kBeginMove) {
      EXPECT_LE(c.slots.size(), 4u);
    }
  }
  const size_t moved = RunPlanner(t);
  ExpectBalanced(t);
  // Minimal: exactly the slots the new member now owns moved (16384 / 4), none between the
  // old members.
  EXPECT_EQ(moved, static_cast<size_t>(kSlots / 4));
  EXPECT_EQ(Owned(t)[4], static_cast<size_t>(kSlots / 4));
}

TEST(PlannerTest, LeaveMovesEverythingOffThenRemoves) {
  Table t = Table::Initial(Members(4), 1);
  ASSERT_TRUE(t.Apply(ForNode(Kind::kSetLeaving, 2, true)).ok());
  RunPlanner(t);
  EXPECT_EQ(t.FindMember(2), nullptr);
  EXPECT_EQ(t.members().size(), 3u);
  ExpectBalanced(t);
}

TEST(PlannerTest, ReplicasChangeAndGrowShrink) {
  Table t = Table::Initial(Members(3), 0);
  ExpectBalanced(t);
  ASSERT_TRUE(t.Apply(WithCount(Kind::kSetReplicas, 2)).ok());
  RunPlanner(t);
  ExpectBalanced(t, /*backups_spread=*/true);
  // Grow to five, shrink to two, as docs/cluster.md will show.
  for (int i = 1; i <= 2; i++) {
    ASSERT_TRUE(t.Apply(AddMember(Joiner(i))).ok());
  }
  RunPlanner(t);
  ExpectBalanced(t);
  for (net::NodeId id : {1u, 4u, 5u}) {
    ASSERT_TRUE(t.Apply(ForNode(Kind::kSetLeaving, id, true)).ok());
  }
  RunPlanner(t);
  EXPECT_EQ(t.members().size(), 2u);
  ExpectBalanced(t);  // two members: one backup each (replicas 2, capped at members - 1)
}

TEST(PlannerTest, PausedPlansNothing) {
  Table t = Table::Initial(Members(3), 1);
  ASSERT_TRUE(t.Apply(AddMember(Joiner(1))).ok());
  ASSERT_TRUE(t.Apply(ForNode(Kind::kPausePlanner, 0, true)).ok());
  EXPECT_TRUE(Plan(t, {}).empty());
}

// ---- Joining (docs/membership.md, rule J1) ----

// A running three-member cluster's table, as its log's first entry builds it.
Table Running() {
  Table t;
  Change init = WithCount(Kind::kInitialize, 0);
  for (int i = 1; i <= 3; i++) {
    init.members.push_back(TableMember{.id = static_cast<net::NodeId>(i),
                                       .host = "127.0.0." + std::to_string(i),
                                       .port = 7100,
                                       .raft_port = 7101});
  }
  init.cluster_id = ClusterId::Random();
  EXPECT_TRUE(t.Apply(init).ok());
  return t;
}

JoinRequest Request(std::string_view secret = "s3cret") {
  JoinRequest r;
  r.complete = true;
  r.cluster_name = "floe";
  r.host = "127.0.0.4";
  r.port = 7100;
  r.raft_port = 7101;
  r.client_port = 6379;
  r.token = 0x1234567890abcdefULL;
  SignJoinRequest(&r, secret);
  return r;
}

JoinPolicy Ours() { return JoinPolicy{.cluster_name = "floe", .secret = "s3cret"}; }

std::string Refusal(const Table& t, const JoinRequest& r, const JoinPolicy& p = Ours()) {
  Result<JoinDecision> d = DecideJoin(t, r, p);
  if (d.ok()) return "accepted";
  EXPECT_EQ(d.status().code(), StatusCode::kFailedPrecondition) << d.status().ToString();
  return std::string(d.status().message());
}

TEST(JoinTest, TheLeaderNamesEachMismatch) {
  const Table t = Running();
  Result<JoinDecision> ok = DecideJoin(t, Request(), Ours());
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  ASSERT_TRUE(ok->propose.has_value());
  EXPECT_EQ(ok->joined, 0u);
  EXPECT_EQ(ok->propose->kind, Kind::kAddMember);
  EXPECT_EQ(ok->propose->member.host, "127.0.0.4");
  EXPECT_EQ(ok->propose->member.client_port, 6379);

  JoinRequest r = Request();
  r.cluster_name = "other";
  SignJoinRequest(&r, "s3cret");
  EXPECT_EQ(Refusal(t, r), "cluster-name 'other', ours 'floe'");
  r = Request();
  r.slots = 8192;
  SignJoinRequest(&r, "s3cret");
  EXPECT_EQ(Refusal(t, r), "8192 slots, ours 16384");
  r = Request();
  r.protocol_version = 1;
  EXPECT_EQ(Refusal(t, r), "protocol version 1, ours 2");
  r = Request();
  r.cluster_id = ClusterId::Random();
  SignJoinRequest(&r, "s3cret");
  EXPECT_NE(Refusal(t, r).find("cluster id " + r.cluster_id.ToString() + ", ours " +
                               t.cluster_id().ToString()),
            std::string::npos);
  // Its own cluster's id is no mismatch.
  r.cluster_id = t.cluster_id();
  SignJoinRequest(&r, "s3cret");
  EXPECT_EQ(Refusal(t, r), "accepted");
  // The secret: another one, none at all, and a proof of another request.
  EXPECT_EQ(Refusal(t, Request("wrong")), "cluster secret differs (--cluster-secret)");
  EXPECT_EQ(Refusal(t, Request("")), "cluster secret differs (--cluster-secret)");
  EXPECT_EQ(Refusal(t, Request(), JoinPolicy{.cluster_name = "floe"}),
            "cluster secret differs (--cluster-secret)");
  EXPECT_EQ(Refusal(t, Request(""), JoinPolicy{.cluster_name = "floe"}), "accepted");
  r = Request();
  r.client_port = 6380;  // changed after signing
  EXPECT_EQ(Refusal(t, r), "cluster secret differs (--cluster-secret)");
  // The member that forwards it sets `forwarded`, which the proof does not cover.
  r = Request();
  r.forwarded = true;
  EXPECT_EQ(Refusal(t, r), "accepted");
  // An address a member holds, and ports that overlap a member's on its host.
  r = Request();
  r.host = "127.0.0.2";
  SignJoinRequest(&r, "s3cret");
  EXPECT_EQ(Refusal(t, r), "127.0.0.2:7100 is already member 2");
  r.port = 7099;
  r.raft_port = 7100;
  SignJoinRequest(&r, "s3cret");
  EXPECT_NE(Refusal(t, r).find("overlap member 2"), std::string::npos);
  r.port = 7102;
  r.raft_port = 7103;
  SignJoinRequest(&r, "s3cret");
  EXPECT_EQ(Refusal(t, r), "accepted");
  // A table not initialized yet: try again later, not a refusal.
  Result<JoinDecision> early = DecideJoin(Table(), Request(), Ours());
  EXPECT_EQ(early.status().code(), StatusCode::kUnavailable);
}

TEST(JoinTest, ARetriedJoinIsAnsweredWithTheSameId) {
  Table t = Running();
  const JoinRequest r = Request();
  Result<JoinDecision> first = DecideJoin(t, r, Ours());
  ASSERT_TRUE(first.ok() && first->propose);
  // The proposal committed twice (an outcome the leader could not know, then the retry's): the
  // second is refused by the table and changes nothing.
  ASSERT_TRUE(t.Apply(*first->propose).ok());
  const Table once = t;
  EXPECT_FALSE(t.Apply(*first->propose).ok());
  EXPECT_EQ(t, once);
  ASSERT_EQ(t.members().size(), 4u);
  const net::NodeId id = t.members().back().id;
  EXPECT_EQ(id, 4u);
  // The retry (same token, even through another member or a new leader) is answered as joined.
  JoinRequest retry = r;
  retry.forwarded = true;
  Result<JoinDecision> again = DecideJoin(t, retry, Ours());
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->joined, id);
  EXPECT_FALSE(again->propose.has_value());
  // Another run at that address (another token) is not this join.
  JoinRequest other = r;
  other.token++;
  SignJoinRequest(&other, "s3cret");
  EXPECT_EQ(Refusal(t, other), "127.0.0.4:7100 is already member 4");
  // The answer lists every member, the joiner included, and round-trips.
  const JoinAnswer a = MakeJoinAnswer(t, id);
  Result<JoinAnswer> back = DecodeJoinAnswer(EncodeJoinAnswer(a));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->id, id);
  EXPECT_EQ(back->cluster_id, t.cluster_id());
  ASSERT_EQ(back->members.size(), 4u);
  EXPECT_EQ(back->members[3].host, "127.0.0.4");
  EXPECT_EQ(back->members[3].client_port, 6379);
}

// The join token has its own field (rule J1), not the member's life (rule O7): the joined
// member starts with no life, its first start records one whatever the token, a retry is still
// found by the token after that, and the token survives the table's and the change's encoding
// (a member without one is written as before the field existed).
TEST(JoinTest, TheJoinTokenIsNotTheMembersLife) {
  Table t = Running();
  JoinRequest r = Request();
  r.token = ~uint64_t{0} - 5;  // above any incarnation (a start time in microseconds)
  SignJoinRequest(&r, "s3cret");
  Result<JoinDecision> first = DecideJoin(t, r, Ours());
  ASSERT_TRUE(first.ok() && first->propose);
  Result<Change> change = DecodeChange(EncodeChange(*first->propose));
  ASSERT_TRUE(change.ok()) << change.status().ToString();
  EXPECT_EQ(change->member.join_token, r.token);
  ASSERT_TRUE(t.Apply(*change).ok());
  const TableMember joined = t.members().back();
  EXPECT_EQ(joined.join_token, r.token);
  EXPECT_EQ(joined.life, 0u);
  Change started = ForNode(Kind::kRestarted, joined.id);
  started.member.life = 1'700'000'000'000'000;
  ASSERT_TRUE(t.Apply(started).ok()) << "the member's first start";
  EXPECT_EQ(t.members().back().life, started.member.life);
  Result<JoinDecision> again = DecideJoin(t, r, Ours());
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->joined, joined.id);
  Result<Table> back = Table::Decode(t.Encode());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, t);
  // The founders carry no token: their bytes are the format-2 member, flags at most 3.
  const Table founders = Running();
  Result<Table> plain = Table::Decode(founders.Encode());
  ASSERT_TRUE(plain.ok());
  for (const TableMember& m : plain->members()) EXPECT_EQ(m.join_token, 0u);
}

// Rule M6 holds in the table itself, not only in the leader's decision: an AddMember whose
// cluster or Raft port is another member's on the same host is refused by Table::Apply.
TEST(JoinTest, TheTableRefusesAMemberWhosePortsOverlap) {
  Table t = Running();  // 127.0.0.1-3, each on 7100 (Raft 7101)
  auto add = [](uint16_t port, uint16_t raft_port) {
    Change c;
    c.kind = Kind::kAddMember;
    c.member = TableMember{.host = "127.0.0.1", .port = port, .raft_port = raft_port};
    return c;
  };
  const Table before = t;
  EXPECT_FALSE(t.Apply(add(7101, 7102)).ok()) << "its cluster port is member 1's Raft port";
  EXPECT_FALSE(t.Apply(add(7099, 7100)).ok()) << "its Raft port is member 1's cluster port";
  EXPECT_FALSE(t.Apply(add(7102, 7101)).ok()) << "the same Raft port";
  EXPECT_EQ(t, before);
  EXPECT_TRUE(t.Apply(add(7102, 7103)).ok());
  Change other_host = add(7101, 7102);
  other_host.member.host = "127.0.0.9";
  EXPECT_TRUE(t.Apply(other_host).ok());
}

// A cluster without a secret takes no joiner off loopback (its messages could not be
// authenticated), as it takes no founder there; with a secret it may.
TEST(JoinTest, AClusterWithoutASecretRefusesAJoinerOffLoopback) {
  const Table t = Running();
  const JoinPolicy open{.cluster_name = "floe", .secret = ""};
  JoinRequest r = Request("");
  EXPECT_EQ(Refusal(t, r, open), "accepted");
  r.host = "10.0.0.4";
  EXPECT_NE(Refusal(t, r, open).find("10.0.0.4:7100 is not on a loopback"), std::string::npos);
  r = Request("s3cret");
  r.host = "10.0.0.4";
  SignJoinRequest(&r, "s3cret");
  EXPECT_EQ(Refusal(t, r), "accepted");
}

// What a member takes from a stranger (rpc::Options::stranger_check): a joiner's own JOIN,
// proven, sent within 10 minutes of the member's clock; the time is under the proof, so a
// captured request cannot be made fresh again, and replays for minutes at most.
TEST(JoinTest, AStrangersJoinIsProvenAndFresh) {
  const uint64_t now = 1'800'000'000;
  JoinRequest r = Request();
  r.time = now;
  SignJoinRequest(&r, "s3cret");
  const std::string bytes = EncodeJoinRequest(r);
  EXPECT_TRUE(StrangersJoinIsProven(bytes, "s3cret", now));
  EXPECT_TRUE(StrangersJoinIsProven(bytes, "s3cret", now + kJoinFreshSeconds));
  EXPECT_TRUE(StrangersJoinIsProven(bytes, "s3cret", now - kJoinFreshSeconds));
  EXPECT_FALSE(StrangersJoinIsProven(bytes, "s3cret", now + kJoinFreshSeconds + 1)) << "replayed";
  EXPECT_FALSE(StrangersJoinIsProven(bytes, "s3cret", now - kJoinFreshSeconds - 1));
  EXPECT_FALSE(StrangersJoinIsProven(bytes, "another", now));
  JoinRequest refreshed = r;
  refreshed.time = now + 3600;  // the captured request with a new time, its proof kept
  EXPECT_FALSE(StrangersJoinIsProven(EncodeJoinRequest(refreshed), "s3cret", now + 3600));
  JoinRequest forwarded = r;
  forwarded.forwarded = true;
  EXPECT_FALSE(StrangersJoinIsProven(EncodeJoinRequest(forwarded), "s3cret", now));
  EXPECT_FALSE(StrangersJoinIsProven("not a join", "s3cret", now));
}

// A refusal carries the leader's MAC of its reason under the secret, bound to the request, so
// the joiner exits only on the leader's refusals (rule J1); without a secret it is the reason.
TEST(JoinTest, ARefusalProvesTheSecretForItsRequest) {
  const JoinRequest r = Request("s3cret");
  const std::string signed_refusal = SignJoinRefusal("cluster-name 'a', ours 'b'", r, "s3cret");
  EXPECT_NE(signed_refusal, "cluster-name 'a', ours 'b'");
  std::optional<std::string> reason = OpenJoinRefusal(signed_refusal, r, "s3cret");
  ASSERT_TRUE(reason.has_value());
  EXPECT_EQ(*reason, "cluster-name 'a', ours 'b'");
  EXPECT_FALSE(OpenJoinRefusal(signed_refusal, r, "another"));
  JoinRequest other = r;
  other.token++;
  EXPECT_FALSE(OpenJoinRefusal(signed_refusal, other, "s3cret")) << "another request";
  std::string altered = signed_refusal;
  altered[0] = 'C';
  EXPECT_FALSE(OpenJoinRefusal(altered, r, "s3cret")) << "another reason";
  EXPECT_FALSE(OpenJoinRefusal("cluster-name 'a', ours 'b'", r, "s3cret")) << "unsigned";
  EXPECT_FALSE(OpenJoinRefusal("", r, "s3cret"));
  EXPECT_EQ(SignJoinRefusal("why", r, ""), "why");
  EXPECT_EQ(OpenJoinRefusal("why", r, ""), "why");
}

// The proof, the answer's MAC and a refusal's MAC each begin with their own domain, none a
// prefix of another (docs/wire.md, "Joining"): no MAC of one kind is one of another, whatever
// the bytes after the domain are (not only because a version varint differs from a letter).
TEST(JoinTest, TheMacDomainsAreDistinctAndNoneIsAPrefixOfAnother) {
  const std::vector<std::string_view> domains = {kJoinProofDomain, kJoinAnswerDomain,
                                                 kJoinRefusalDomain};
  for (size_t i = 0; i < domains.size(); i++) {
    EXPECT_FALSE(domains[i].empty());
    for (size_t j = 0; j < domains.size(); j++) {
      if (i != j) {
        EXPECT_FALSE(domains[j].starts_with(domains[i]))
            << "'" << domains[i] << "' begins '" << domains[j] << "'";
      }
    }
  }
}

TEST(JoinTest, TheJoinersIdIsNeverAssigned) {
  // A table whose next id is the last below the reserved ones (kAnyNodeId, kJoinerId) (ids grow
  // with every join): its snapshot with `next id` rewritten (docs/wire.md: format | epoch | next id
  // | ...).
  const std::string bytes = Running().Encode();
  wire::Reader r(bytes);
  uint64_t format = 0, epoch = 0, next = 0;
  ASSERT_TRUE(r.GetVarint64(&format).ok() && r.GetVarint64(&epoch).ok() &&
              r.GetVarint64(&next).ok());
  std::string_view rest;
  ASSERT_TRUE(r.GetRaw(r.remaining(), &rest).ok());
  std::string patched;
  wire::Writer w(&patched);
  w.PutVarint64(format);
  w.PutVarint64(epoch);
  w.PutVarint64(kFirstReservedId - 1);
  patched.append(rest);
  Result<Table> t = Table::Decode(patched);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  ASSERT_TRUE(t->Apply(AddMember(Joiner(1))).ok());
  EXPECT_EQ(t->members().back().id, kFirstReservedId - 1);
  Status st = t->Apply(AddMember(Joiner(2)));
  EXPECT_NE(st.message().find("no member id is left"), std::string::npos) << st.ToString();
  EXPECT_EQ(Refusal(*t, Request()), "no member id is left to assign");
}

TEST(JoinTest, RequestAndAnswerRoundTripAndRefuseDamage) {
  JoinRequest r = Request();
  r.cluster_id = ClusterId::Random();
  r.forwarded = true;
  Result<JoinRequest> back = DecodeJoinRequest(EncodeJoinRequest(r));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(back->complete);
  EXPECT_EQ(back->cluster_id, r.cluster_id);
  EXPECT_EQ(back->token, r.token);
  EXPECT_TRUE(back->forwarded);
  EXPECT_EQ(back->proof_hi, r.proof_hi);
  EXPECT_EQ(back->proof_lo, r.proof_lo);
  EXPECT_EQ(EncodeJoinRequest(*back), EncodeJoinRequest(r));
  // Another version: only the version is read, so the leader can name it.
  JoinRequest v3 = r;
  v3.protocol_version = 3;
  Result<JoinRequest> other = DecodeJoinRequest(EncodeJoinRequest(v3));
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(other->complete);
  EXPECT_EQ(other->protocol_version, 3u);
  // Damage: every truncation, a trailing byte, and fields out of range.
  const std::string bytes = EncodeJoinRequest(r);
  for (size_t n = 0; n < bytes.size(); n++) {
    EXPECT_FALSE(DecodeJoinRequest(bytes.substr(0, n)).ok()) << n;
  }
  EXPECT_FALSE(DecodeJoinRequest(bytes + "x").ok());
  auto refused = [](JoinRequest bad) { return !DecodeJoinRequest(EncodeJoinRequest(bad)).ok(); };
  JoinRequest bad = r;
  bad.token = 0;
  EXPECT_TRUE(refused(bad));
  bad = r;
  bad.raft_port = 7105;
  EXPECT_TRUE(refused(bad));
  bad = r;
  bad.host = "127.000.0.4";
  EXPECT_TRUE(refused(bad));
  bad = r;
  bad.host = "localhost";
  EXPECT_TRUE(refused(bad));
  bad = r;
  bad.cluster_name = "bad name";
  EXPECT_TRUE(refused(bad));
  bad = r;
  bad.port = 0;
  bad.raft_port = 1;
  EXPECT_TRUE(refused(bad));
  EXPECT_FALSE(DecodeJoinRequest(std::string(200 * 1024, '\x01')).ok());

  // The answer: ids in order, the joiner among them, a cluster id.
  const Table t = Running();
  const std::string answer = EncodeJoinAnswer(MakeJoinAnswer(t, 2));
  ASSERT_TRUE(DecodeJoinAnswer(answer).ok());
  for (size_t n = 0; n < answer.size(); n++) {
    EXPECT_FALSE(DecodeJoinAnswer(answer.substr(0, n)).ok()) << n;
  }
  EXPECT_FALSE(DecodeJoinAnswer(answer + "x").ok());
  EXPECT_FALSE(DecodeJoinAnswer(EncodeJoinAnswer(MakeJoinAnswer(t, 9))).ok()) << "not listed";
  JoinAnswer a = MakeJoinAnswer(t, 2);
  std::swap(a.members[0], a.members[1]);
  EXPECT_FALSE(DecodeJoinAnswer(EncodeJoinAnswer(a)).ok()) << "out of order";
  a = MakeJoinAnswer(t, 2);
  a.members[1].host = a.members[0].host;
  EXPECT_FALSE(DecodeJoinAnswer(EncodeJoinAnswer(a)).ok()) << "an address twice";
  a = MakeJoinAnswer(t, 2);
  a.cluster_id = ClusterId{};
  EXPECT_FALSE(DecodeJoinAnswer(EncodeJoinAnswer(a)).ok()) << "no cluster id";
  a = MakeJoinAnswer(t, 2);
  a.id = kFirstReservedId;
  a.members[1].id = kFirstReservedId;
  EXPECT_FALSE(DecodeJoinAnswer(EncodeJoinAnswer(a)).ok()) << "a reserved id";
}

// The leader's answer carries a MAC under the secret, bound to the request's token and proof
// (rule J1): it survives the wire, and any other id, member, cluster id, request or secret
// fails it, so only the cluster's secret makes an answer a joiner takes.
TEST(JoinTest, TheAnswerProvesTheSecretForItsRequest) {
  const Table t = Running();
  const JoinRequest r = Request("s3cret");
  JoinAnswer a = MakeJoinAnswer(t, 2);
  EXPECT_FALSE(JoinAnswerMatches(a, r, "s3cret")) << "unsigned";
  SignJoinAnswer(&a, r, "s3cret");
  Result<JoinAnswer> back = DecodeJoinAnswer(EncodeJoinAnswer(a));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(JoinAnswerMatches(*back, r, "s3cret"));
  EXPECT_FALSE(JoinAnswerMatches(*back, r, "another"));
  JoinRequest other = r;
  other.token++;
  EXPECT_FALSE(JoinAnswerMatches(*back, other, "s3cret")) << "another token";
  other = r;
  other.proof_lo ^= 1;
  EXPECT_FALSE(JoinAnswerMatches(*back, other, "s3cret")) << "another proof";
  JoinAnswer changed = *back;
  changed.id = 1;
  EXPECT_FALSE(JoinAnswerMatches(changed, r, "s3cret")) << "another id";
  changed = *back;
  changed.members[0].port++;
  EXPECT_FALSE(JoinAnswerMatches(changed, r, "s3cret")) << "another member";
  changed = *back;
  changed.cluster_id = ClusterId::Random();
  EXPECT_FALSE(JoinAnswerMatches(changed, r, "s3cret")) << "another cluster";
  changed = *back;
  changed.mac_hi ^= 1;
  EXPECT_FALSE(JoinAnswerMatches(changed, r, "s3cret"));
  // Without a secret there is nothing to prove: the MAC is 0.
  JoinAnswer open = MakeJoinAnswer(t, 2);
  SignJoinAnswer(&open, r, "");
  EXPECT_EQ(open.mac_hi | open.mac_lo, 0u);
  EXPECT_TRUE(JoinAnswerMatches(open, r, ""));
}

}  // namespace
}  // namespace floe::cluster
