// replica: a slot's backups change. A promotion (docs/replication.md S15, wiring step 6, W10 and
// W12): the heir installs everything it received, and owns the slot with only what it knew
// committed counted as committed: nothing past that commits until every other in-sync backup
// confirmed it. A backup that confirms nothing is seen by its owner (B7, W15).

#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <string>

#include "replica/replica.h"
#include "replica/replica_testing.h"

namespace floe::replica {
namespace {

struct Member {
  explicit Member(uint32_t id) { table.self_ = id; }
  FakeTable table;
  FakeSink sink;
  Receiver receiver{&table, &sink};
};

void Write(Sender& sender, uint16_t slot, std::string_view key, std::string_view value) {
  Result<Sender::Ticket> n = sender.Open(slot);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  const Entry e{.kind = EntryKind::kPut, .key = key, .type = 1, .bytes = value};
  sender.Close(slot, *n, std::span<const Entry>(&e, 1));
}

// Sends `sender`'s next message to `to` and hands back its answer; false if there was none.
bool Deliver(Sender& sender, Member& to) {
  std::optional<std::string> bytes = sender.NextMessage(to.table.self_);
  if (!bytes) return false;
  Result<Request> req = DecodeRequest(*bytes, 1 << 20);
  EXPECT_TRUE(req.ok()) << req.status().ToString();
  if (!req.ok()) return false;
  if (sender.OnAnswer(to.table.self_, to.receiver.Receive(*req))) sender.Resume(to.table.self_);
  return true;
}

void DeliverAll(Sender& sender, Member& to) {
  for (int i = 0; i < 10 && Deliver(sender, to); i++) {
  }
}

// The old owner (ownership 1) streams slot `slot` to heir (2) and other (3): `x` reaches both
// and commits; `y` reaches the heir only, or both when `other_has_y`. Then the table gives the
// slot to the heir under ownership 2.
void OldOwnerDies(uint16_t slot, Member& heir, Member& other, bool other_has_y) {
  Sender old;
  ASSERT_TRUE(old.Own(slot, 1, 0, {{2, 7}, {3, 7}}, {}).ok());
  DeliverAll(old, heir);
  DeliverAll(old, other);
  Write(old, slot, "x", "1");
  DeliverAll(old, heir);
  DeliverAll(old, other);
  DeliverAll(old, heir);  // told x committed: installed
  ASSERT_EQ(old.committed(slot), 1u);
  Write(old, slot, "y", "2");
  ASSERT_TRUE(Deliver(old, heir));
  if (other_has_y) {
    ASSERT_TRUE(Deliver(old, other));
  }
  // Acknowledged or not, y is received by every backup that could be promoted: the heir.
  EXPECT_EQ(heir.receiver.Stats(slot).received, 2u);
  EXPECT_EQ(heir.receiver.Stats(slot).applied, 1u);
  heir.table.ownership_[slot] = 2;
  other.table.ownership_[slot] = 2;
}

// W12: with another in-sync backup that has every change the heir received, the heir's
// changes past what it knew committed commit once that backup confirms them; a new write then
// commits as usual and reaches it.
TEST(PromotionTest, AnOwnerFromAPromotionCommitsWhenItsBackupsConfirm) {
  Member heir(2), other(3);
  OldOwnerDies(5, heir, other, /*other_has_y=*/true);
  const Receiver::SlotStats before = heir.receiver.Stats(5);
  ASSERT_TRUE(heir.receiver.Promote(5, before.received).ok());
  EXPECT_EQ(heir.sink.kv[5], (std::map<std::string, std::string>{{"x", "1"}, {"y", "2"}}));
  Sender owner;
  ASSERT_TRUE(owner.Own(5, 2, before.received, {{3, 7}}, {}, before.applied).ok());
  EXPECT_EQ(owner.started(5), 2u);
  EXPECT_EQ(owner.committed(5), 1u);  // y is here, not yet known to be at the other backup
  bool committed = false;
  owner.WhenCommitted(5, 2, [&committed](Status s) { committed = s.ok(); });
  EXPECT_FALSE(committed);
  DeliverAll(owner, other);
  EXPECT_TRUE(committed);
  EXPECT_EQ(owner.committed(5), 2u);
  EXPECT_EQ(other.sink.kv[5], (std::map<std::string, std::string>{{"x", "1"}, {"y", "2"}}));
  Write(owner, 5, "z", "3");
  DeliverAll(owner, other);
  EXPECT_EQ(owner.committed(5), 3u);
  EXPECT_EQ(other.sink.kv[5].at("z"), "3");
  EXPECT_TRUE(owner.NeedsFill().empty());
}

// W12, R19: a backup that lacks a change the heir received needs a fill, and nothing commits
// past what the heir knew committed until then; with no other backup the heir's changes commit
// at once.
TEST(PromotionTest, ABackupThatLacksWhatTheHeirReceivedHoldsCommitsBack) {
  Member heir(2), other(3);
  OldOwnerDies(6, heir, other, /*other_has_y=*/false);
  const Receiver::SlotStats before = heir.receiver.Stats(6);
  ASSERT_TRUE(heir.receiver.Promote(6, before.received).ok());
  Sender owner;
  ASSERT_TRUE(owner.Own(6, 2, before.received, {{3, 7}}, {}, before.applied).ok());
  DeliverAll(owner, other);
  EXPECT_EQ(owner.committed(6), 1u);
  ASSERT_EQ(owner.NeedsFill().size(), 1u);
  Write(owner, 6, "z", "3");
  DeliverAll(owner, other);
  EXPECT_EQ(owner.committed(6), 1u);
  // The other backup dropped y, which the old owner never committed: it keeps x only.
  EXPECT_EQ(other.sink.kv[6], (std::map<std::string, std::string>{{"x", "1"}}));

  Member lone(2), unused(3);
  OldOwnerDies(7, lone, unused, /*other_has_y=*/false);
  const Receiver::SlotStats was = lone.receiver.Stats(7);
  ASSERT_TRUE(lone.receiver.Promote(7, was.received).ok());
  Sender alone;
  ASSERT_TRUE(alone.Own(7, 2, was.received, {}, {}, was.applied).ok());
  EXPECT_EQ(alone.committed(7), 2u);
  // A committed floor above n is no more than n.
  ASSERT_TRUE(alone.Own(8, 2, 4, {}, {}, 9).ok());
  EXPECT_EQ(alone.committed(8), 4u);
}

// F7 and W10's premise: a filling backup whose fill is done may be listed in sync (and so made
// an heir) before the owner applies that table; from the moment its fill is done, no change
// commits at the owner before it has it.
TEST(PromotionTest, AFilledBackupCountsBeforeItIsMadeInSync) {
  Sender sender;
  Member filled(2);
  ASSERT_TRUE(sender.Own(9, 1, 0, {}, {{2, 7}}).ok());
  Write(sender, 9, "k", "1");
  EXPECT_EQ(sender.committed(9), 1u);  // a filling backup holds nothing back (R9)
  Result<Sender::FillTicket> ticket = sender.BeginFill(9, 2);
  ASSERT_TRUE(ticket.ok()) << ticket.status().ToString();
  ASSERT_TRUE(sender
                  .AddFill(9, 2, *ticket,
                           std::vector<Entry>{
                               {.kind = EntryKind::kPut, .key = "k", .type = 1, .bytes = "1"}},
                           true)
                  .ok());
  DeliverAll(sender, filled);
  ASSERT_EQ(sender.Fills().size(), 1u);
  ASSERT_TRUE(sender.Fills()[0].done);
  Write(sender, 9, "k", "2");
  EXPECT_EQ(sender.committed(9), 1u);  // waits for the filled backup
  DeliverAll(sender, filled);
  EXPECT_EQ(sender.committed(9), 2u);
  EXPECT_EQ(filled.receiver.Stats(9).received, 2u);
}

// W15: a backup is waited for while a change of its slot is closed past what it received, and
// its progress stands still until it answers; one that has everything is not waited for.
TEST(PromotionTest, ABackupThatConfirmsNothingIsSeenWaitedFor) {
  Sender sender;
  Member up(2), down(3);
  ASSERT_TRUE(sender.Own(4, 1, 0, {{2, 7}, {3, 7}}, {}).ok());
  auto lag = [&sender](uint32_t id) {
    for (const Sender::Lag& l : sender.Lags()) {
      if (l.id == id) return l;
    }
    ADD_FAILURE() << "no lag of " << id;
    return Sender::Lag{};
  };
  EXPECT_TRUE(lag(2).waiting) << "where it is is not known yet";
  DeliverAll(sender, up);
  DeliverAll(sender, down);
  EXPECT_FALSE(lag(2).waiting);
  EXPECT_FALSE(lag(3).waiting);
  EXPECT_EQ(lag(3).life, 7u);
  const uint64_t up_before = lag(2).progress, down_before = lag(3).progress;
  Write(sender, 4, "k", "1");
  EXPECT_TRUE(lag(2).waiting);
  EXPECT_TRUE(lag(3).waiting);
  DeliverAll(sender, up);
  EXPECT_FALSE(lag(2).waiting);
  EXPECT_GT(lag(2).progress, up_before);
  // The other backup's message is lost, again and again: it stays waited for, without progress.
  for (int i = 0; i < 3; i++) {
    ASSERT_TRUE(sender.NextMessage(3).has_value());
    sender.OnFailed(3, sender.in_flight(3));
  }
  EXPECT_TRUE(lag(3).waiting);
  EXPECT_EQ(lag(3).progress, down_before);
  EXPECT_EQ(sender.committed(4), 0u);
  DeliverAll(sender, down);
  EXPECT_FALSE(lag(3).waiting);
  EXPECT_GT(lag(3).progress, down_before);
  EXPECT_EQ(sender.committed(4), 1u);
}

}  // namespace
}  // namespace floe::replica
