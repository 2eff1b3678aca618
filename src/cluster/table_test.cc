// The agreed table and the planner (docs/membership.md, rules M2, M3, J3, J4).

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>

#include "cluster/cluster.h"
#include "cluster/table_testing.h"
#include "wire/wire.h"

namespace floe::cluster {
namespace {

using namespace table_testing;  // NOLINT(build/namespaces): its helpers

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
  Change init = ThreeMemberInit(1);
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

// B7 (docs/replication.md W16): while a slot's owner is suspected, its live in-sync backups are
// its heirs; a SetBackups that removes one is refused, one that keeps them is not.
TEST(TableTest, ASuspectedOwnerCannotRemoveItsHeir) {
  Table t = Table::Initial(Members(3), 1);
  const net::NodeId owner = t.slot(0).owner;
  const net::NodeId heir = t.slot(0).backups[0];
  Change drop = WithBackups(0, 1, {});
  ASSERT_TRUE(t.Apply(ForNode(Kind::kSuspect, owner, true)).ok());
  Status st = t.Apply(drop);
  EXPECT_NE(st.message().find("may be its heir"), std::string::npos) << st.ToString();
  ASSERT_TRUE(t.Apply(WithBackups(0, 1, {heir})).ok()) << "keeping the heir is allowed";
  // An heir that is itself suspected is no heir: it may go.
  ASSERT_TRUE(t.Apply(ForNode(Kind::kSuspect, heir, true)).ok());
  EXPECT_TRUE(t.Apply(WithBackups(0, 2, {})).ok());
  // An owner that is not suspected removes a backup (the leader's other checks are W16's).
  Table u = Table::Initial(Members(3), 1);
  EXPECT_TRUE(u.Apply(drop).ok());
  // The planner leaves a suspected owner's slots alone: with two live heirs and one wanted
  // (3 members, one suspected), dropping one would be refused (review of B7, finding 2).
  Table v = Table::Initial(Members(3), 2);
  ASSERT_TRUE(v.Apply(ForNode(Kind::kSuspect, 1, true)).ok());
  for (const Change& c : Plan(v, {.max_moves = 0})) {
    for (const Change::SlotItem& it : c.slots) EXPECT_NE(v.slot(it.slot).owner, 1u);
    EXPECT_TRUE(v.Apply(c).ok());
  }
}

// Records the first life of members 1-3 (100 + id).
void RecordFirstLives(Table& t) {
  for (net::NodeId id : {1u, 2u, 3u}) {
    Change first = ForNode(Kind::kRestarted, id);
    first.member.life = 100 + id;
    ASSERT_TRUE(t.Apply(first).ok());
  }
}

TEST(TableTest, ARestartEndsTheOldLifesRoles) {
  Table t = Table::Initial(Members(3), 1);
  // The first start of every member is recorded without moving anything.
  RecordFirstLives(t);
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

// Rules O4-O5 (docs/membership.md): a member whose ownership lease lapsed is failed over: its
// slots go to their live in-sync backups, it leaves every backup list, and its suspect epoch is
// the change's (a lease is granted again only to a member that applied at least that table).
TEST(TableTest, AFailOverPromotesTheOwnersSlotsAndEndsItsBackupRoles) {
  Table t = Table::Initial(Members(3), 1);
  RecordFirstLives(t);
  Change fail = ForNode(Kind::kFailOver, 1);
  fail.member.life = 7;
  EXPECT_FALSE(t.Apply(fail).ok()) << "another life";
  fail.member.life = 101;
  const Table before = t;
  ASSERT_TRUE(t.Apply(fail).ok());
  EXPECT_TRUE(t.FindMember(1)->suspected);
  EXPECT_EQ(t.FindMember(1)->suspect_epoch, t.epoch());
  EXPECT_EQ(t.FindMember(1)->life, 101u) << "the same life: it may come back";
  EXPECT_FALSE(t.Apply(fail).ok()) << "suspected already";
  int promoted = 0;
  for (int s = 0; s < kSlots; s++) {
    const SlotState& was = before.slot(static_cast<uint16_t>(s));
    const SlotState& now = t.slot(static_cast<uint16_t>(s));
    EXPECT_NE(now.owner, 1u);
    EXPECT_FALSE(std::count(now.backups.begin(), now.backups.end(), 1u));
    EXPECT_FALSE(std::count(now.filling.begin(), now.filling.end(), 1u));
    if (was.owner == 1) {
      promoted++;
      EXPECT_EQ(now.owner, was.backups[0]);
      EXPECT_EQ(now.ownership, now.version);
    }
  }
  EXPECT_GT(promoted, 0);
  // A second failover finds the other members' heirs; a slot whose only backup was the
  // suspected member stays with its owner, under the same ownership.
  Change again = ForNode(Kind::kFailOver, 2);
  again.member.life = 102;
  const Table mid = t;
  ASSERT_TRUE(t.Apply(again).ok());
  for (int s = 0; s < kSlots; s++) {
    const SlotState& was = mid.slot(static_cast<uint16_t>(s));
    const SlotState& now = t.slot(static_cast<uint16_t>(s));
    if (was.owner == 2 && was.backups.empty()) {
      EXPECT_EQ(now.owner, 2u);
      EXPECT_EQ(now.ownership, was.ownership);
    }
  }
  // Cleared by kSuspect, which also records its epoch.
  Change back = ForNode(Kind::kSuspect, 1, false);
  back.member.life = 101;
  ASSERT_TRUE(t.Apply(back).ok());
  EXPECT_FALSE(t.FindMember(1)->suspected);
  EXPECT_EQ(t.FindMember(1)->suspect_epoch, t.epoch());
  Result<Table> decoded = Table::Decode(t.Encode());
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(*decoded, t);
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
      ForNode(Kind::kFailOver, 2),
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

// W17: a member the leader has not heard from lately is never picked as a new filling backup,
// and the leader's view drops no backup it lists.
TEST(PlannerTest, ADownMemberIsNotPickedAsAFillingBackup) {
  Table t = Table::Initial(Members(4), 1);
  // Slot 0 loses its backup (as W16 removes one that is down).
  const net::NodeId gone = t.slot(0).backups[0];
  ASSERT_TRUE(t.Apply(WithBackups(0, 1, {})).ok());
  std::vector<Change> plan = Plan(t, {.max_moves = 0, .unheard = {gone}});
  ASSERT_EQ(plan.size(), 1u);
  bool repaired = false;
  for (const Change::SlotItem& it : plan[0].slots) {
    if (it.slot == 0) {
      repaired = true;
      ASSERT_EQ(it.filling.size(), 1u);
      EXPECT_NE(it.filling[0], gone);
    }
    EXPECT_EQ(std::count(it.filling.begin(), it.filling.end(), gone), 0) << "slot " << it.slot;
    EXPECT_EQ(it.backups, t.slot(it.slot).backups) << "an unheard backup stays listed";
  }
  EXPECT_TRUE(repaired);
  // Every member unheard but the owner: nothing to pick, nothing dropped.
  std::vector<net::NodeId> others;
  for (net::NodeId id = 1; id <= 4; id++) {
    if (id != t.slot(0).owner) others.push_back(id);
  }
  plan = Plan(t, {.max_moves = 0, .unheard = others});
  for (const Change& c : plan) {
    for (const Change::SlotItem& it : c.slots) EXPECT_TRUE(it.filling.empty());
  }
}

TEST(PlannerTest, PausedPlansNothing) {
  Table t = Table::Initial(Members(3), 1);
  ASSERT_TRUE(t.Apply(AddMember(Joiner(1))).ok());
  ASSERT_TRUE(t.Apply(ForNode(Kind::kPausePlanner, 0, true)).ok());
  EXPECT_TRUE(Plan(t, {}).empty());
}

}  // namespace
}  // namespace floe::cluster
