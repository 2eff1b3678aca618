// replica — the per-slot replication stream (docs/replication.md, rules S1-S16).
//
// An owner sends each of its slots' changes, numbered in order, to the slot's backups in
// REPLICATE messages (RPC 320; byte layout in docs/wire.md, "The replication stream"). This
// module holds what both ends share and need no server for:
//
//   Request / Answer, Encode* / Decode*   the message codec (S5). Decoders take untrusted bytes:
//                                         every count is checked against the bytes left before
//                                         it sizes anything; entries are views into the bytes.
//   Sender                                the owner's side (S4, S5, S8): numbers each change before
//                                         its handler writes, queues it for every backup, builds
//                                         batched messages (one in flight per backup), and
//                                         commits a change once every in-sync backup received it.
//   Receiver                              the backup's side (S7): a slot's changes received in
//                                         `n` order, kept pending, installed up to the owner's
//                                         committed `n`; fenced by ownership, refused for
//                                         another life, bounded and charged to memory.
//
// Thread rules: the codec is thread-compatible. Sender and Receiver are thread-safe: any method
// from any thread. Receiver calls its Sink under its own lock, so a Sink must not call back into
// it; Sender runs commit callbacks with no lock held.
//
// Contracts (each with its test in replica_test.cc):
//   R1. Decode(Encode(x)) == x for every request and answer within the limits, and a decoder
//       refuses anything else with Corruption, allocating no more than the input's size plus
//       kMaxChanges changes and kMaxEntries entries (HugeCountsAreRefusedWithoutAllocating,
//       RequestsAndAnswersRoundTrip; fuzz/replica_fuzz).
//   R2. A slot's changes are installed once each, in `n` order, and only up to the committed `n`
//       the owner named (OutOfOrderChangesWaitAndCommittedIsInstalled).
//   R3. Nothing is taken for a target id or life that is not the receiver's, or that its table
//       does not list (AnotherLifeIsNotAcknowledged).
//   R4. A slot whose ownership is older than the table's is fenced; newer, or not backed up
//       here, is "behind"; neither takes anything (StaleOwnershipIsRefused).
//   R5. A change sent in parts is installed whole, once its last part came
//       (APartedChangeIsInstalledWhole).
//   R6. Early changes are kept up to a bound and dropped past it (EarlyChangesAreBounded); every
//       change kept is charged before it is copied, and one that cannot be is not received
//       (AChangeThatCannotBeChargedIsNotReceived).
//   R7. A slot whose ownership rises drops its pending and early changes and keeps what it
//       installed (ANewOwnerDropsWhatWasPending).
//   R8. Every opened change reaches every backup in n order, whatever order changes close in
//       (ChangesOfOneSlotLeaveInNumberOrder).
//   R9. A change commits, and its callbacks run, only once every in-sync backup received it and
//       every earlier change committed; a filling backup is sent it but holds nothing back
//       (RepliesWaitForEveryBackup, AFillingBackupHoldsNothingBack).
//   R10. A backup has at most one message in flight, of at most kBatchBytes unless one change is
//       larger, kMaxChanges changes and kMaxEntries entries, slots taken round robin; a change
//       larger than kPartBytes goes in parts (OneMessageInFlightPerBackup,
//       ALargeChangeTravelsInParts, ManySmallChangesStayWithinTheCounts).
//   R11. A fenced slot stops: its waiting callbacks get Aborted, and it numbers no more changes
//       until owned again (AFencedSlotFailsItsWaiters).
//   R12. A new owner's numbering goes on from the n it was given; a backup refuses a new
//       owner's change at or below what it had installed (ANewOwnerGoesOnFromItsStart).
//   R13. A backup's true position is asked before anything is sent to it, and is believed only
//       within what was sent; one the queue no longer covers is reported, not sent to
//       (ABackupIsAskedWhereItIs, AnAnswerCommitsNothingUnsent).
//   R14. A full answer keeps what was received; behind, full and not my life pause the backup
//       (AFullBackupKeepsWhatItReceived).
//   R15. At a new ownership a backup keeps what it received up to the new owner's start and
//       drops the rest; a promoted backup installs up to its start
//       (APromotionKeepsWhatEveryBackupReceived).
//   R16. A change that could not be installed makes the copy lost (NeedsFill), never silently
//       incomplete (ALostInstallIsReported).
//   R17. A fill (S12, F1-F8) leaves the backup's copy equal to the owner's store, whatever live
//       changes, flushes and removes interleave with its batches, and a lost or resent message
//       installs nothing twice nor out of order (AFillEndsEqualToTheOwner,
//       AFillNeverOverwritesALiveChange, ALiveFlushDropsOlderFillPuts; sender_test
//       AFilledBackupEqualsTheOwnerThroughALossyNetwork).
//   R18. A fill's start resets the copy once: an older fill's message never restarts it, and
//       a batch is installed only right after the one before (AnOlderFillNeverRestartsACopy).
//   R19. A copy being filled is not promotable, and an in-sync backup being filled holds
//       commits back until its last batch is installed (ACopyBeingFilledIsNotPromotable,
//       AnInSyncBackupBeingFilledHoldsCommitsBack).
//   R20. A fill ends, and is reported done, only once its last batch was installed; a lost
//       install, a lost change or another life ends it unfinished (AFillIsDoneOnlyOnceInstalled,
//       AFillThatLosesAnInstallStartsAgain).
//   R21. A fill belongs to one ownership: a new owner's message finds a copy whose fill had not
//       ended, or that holds fill state not yet known committed, lost: never in sync nor in
//       conflict (ANewOwnerMidFillFindsTheCopyLost, AnotherOwnersFillStartsTheCopyAgain,
//       AFillOfUncommittedStateIsNeverKeptByANewOwner).

#ifndef FLOE_REPLICA_REPLICA_H_
#define FLOE_REPLICA_REPLICA_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/base.h"

namespace floe::replica {

inline constexpr uint16_t kReplicateMethod = 320;
inline constexpr uint32_t kSlots = 16384;
// The store's largest key (store::kMaxKeyBytes).
inline constexpr uint64_t kMaxKeyBytes = 64 * 1024;
// Early changes (a gap before them) a Receiver keeps, over all slots (S7).
inline constexpr uint64_t kMaxEarlyBytes = 16ull << 20;
// The largest key and bytes of one entry every member decodes, whatever its own
// proto-max-bulk-len (the RPC layer's message bound is 1 GiB): a capture site refuses a larger
// value in a replicated slot before writing it (Sender::Fits).
inline constexpr uint64_t kMaxEntryBytes = 768ull << 20;
// Keys named as needing their state in one answer, over all its slots.
inline constexpr uint32_t kMaxNeedState = 1024;
// Changes (parts included) and entries in one message, over all its slots: a decoded Change or
// Entry is ~50 times its smallest encoding, so these, not the message's bytes, bound what a
// decode allocates (~30 MB). An owner sends larger batches as several messages.
inline constexpr uint64_t kMaxChanges = 1u << 18;
inline constexpr uint64_t kMaxEntries = 1u << 18;

enum class EntryKind : uint8_t {
  kPut = 1,     // key, type, expire_ms, bytes = payload
  kRemove = 2,  // key
  kFlush = 3,   // the slot's keys all go; key empty
  kDelta = 4,   // key, type, cell_version, bytes = the delta
  kRecord = 5,  // key, origin, client, seq, age_ms, bytes = the reply (rule S14)
};
inline constexpr uint8_t kLastEntryKind = 5;

// One key's state after a change. Views: into the decoded message, or into a Receiver's copy.
struct Entry {
  EntryKind kind = EntryKind::kPut;
  std::string_view key;
  uint16_t type = 0;          // kPut, kDelta
  uint64_t expire_ms = 0;     // kPut: absolute Unix ms; 0: none
  uint64_t cell_version = 0;  // kDelta
  uint32_t origin = 0;        // kRecord
  uint64_t client = 0;        // kRecord
  uint64_t seq = 0;           // kRecord
  uint64_t age_ms = 0;        // kRecord
  std::string_view bytes;
  friend bool operator==(const Entry&, const Entry&) = default;
};

// A change, or one part of it (`more`: parts follow, with the same n and the next `part`).
struct Change {
  uint64_t n = 0;  // 1, 2, ...: the slot's sequence, continued across owners (S15)
  uint64_t part = 0;
  bool more = false;
  std::vector<Entry> entries;
  friend bool operator==(const Change&, const Change&) = default;
};

// A fill (S12, rules F1-F8): the backup's copy of the slot restarts as the owner's store after
// change `from`, the slot's keys coming in numbered batches of puts while later changes arrive
// live. Every message to a backup being filled carries it, batch or not.
struct Fill {
  uint64_t id = 0;     // the owner's fill number: above every earlier one under one ownership
  uint64_t from = 0;   // n0: every change up to it is in the owner's store the scan reads
  uint64_t batch = 0;  // 1, 2, ...: the batch this message carries; 0: none
  // The owner's last opened n when the batch was handed to it (>= from; 0 without a batch):
  // its puts hold no change past it, and maybe changes not yet committed (F9).
  uint64_t top = 0;
  bool last = false;        // the scan ended with this batch
  std::vector<Entry> puts;  // kPut entries only; none when batch is 0
  friend bool operator==(const Fill&, const Fill&) = default;
};

struct Group {
  uint16_t slot = 0;
  uint64_t ownership = 0;  // o(s) at the owner
  uint64_t start = 0;      // the n this owner began after (Sender::Own)
  uint64_t committed = 0;  // every change up to it reached every in-sync backup (S8)
  std::optional<Fill> fill;
  std::vector<Change> changes;  // numbered above fill->from when a fill is named
  friend bool operator==(const Group&, const Group&) = default;
};

struct Request {
  uint64_t id = 0;      // the sender's message number, echoed in the answer
  uint32_t target = 0;  // the backup's member id
  uint64_t life = 0;    // the backup's life as the owner's table lists it
  std::vector<Group> groups;
  friend bool operator==(const Request&, const Request&) = default;
};

enum class SlotStatus : uint8_t {
  kTaken = 0,     // received what it could; see applied / received
  kFenced = 1,    // the owner's o(s) is older than this backup's table (V3)
  kBehind = 2,    // newer o(s), or not a backup here as its table says: send again (V2)
  kFull = 3,      // no memory for more changes: what was received counts; send the rest later
  kConflict = 4,  // a new owner's change numbered at or below what this backup installed
  kLost = 5,      // a committed change could not be installed here: this copy needs a fill
};
inline constexpr uint8_t kLastSlotStatus = 5;

struct SlotAnswer {
  uint16_t slot = 0;
  SlotStatus status = SlotStatus::kTaken;
  uint64_t ownership = 0;               // the backup's o(s)
  uint64_t applied = 0;                 // installed up to
  uint64_t received = 0;                // received without a gap up to
  uint64_t next_part = 0;               // of change received + 1, when some of its parts came
  std::vector<std::string> need_state;  // cells whose delta did not apply (S1)
  uint64_t fill_id = 0;                 // the fill this copy is being, or was, made by (F5)
  uint64_t filled = 0;                  // that fill's batches installed here
  friend bool operator==(const SlotAnswer&, const SlotAnswer&) = default;
};

struct Answer {
  uint64_t id = 0;  // the request's
  bool not_my_life = false;
  uint64_t headroom = 0;  // bytes the backup can still take (S6)
  std::vector<SlotAnswer> slots;
  friend bool operator==(const Answer&, const Answer&) = default;
};

std::string EncodeRequest(const Request& request);
// Views into `bytes`, which must outlive the result. `max_bytes` bounds a payload, delta or
// reply (the node's proto-max-bulk-len). Corruption for anything docs/wire.md refuses.
Result<Request> DecodeRequest(std::string_view bytes, uint64_t max_bytes);
std::string EncodeAnswer(const Answer& answer);
Result<Answer> DecodeAnswer(std::string_view bytes);

// The bytes a change kept by a Receiver is charged: its keys and bytes and a fixed overhead
// per entry and per change.
uint64_t ChargeOf(const Change& change);

// What the backup's applied table says, asked under the Receiver's lock.
class TableView {
 public:
  virtual ~TableView() = default;
  virtual uint32_t self() const = 0;
  virtual uint64_t life() const = 0;  // this process's life
  // The applied table lists this member with `life`.
  virtual bool ListsLife(uint64_t life) const = 0;
  virtual uint64_t Ownership(uint16_t slot) const = 0;  // o(s)
  // This member is one of the slot's backups, in sync or filling.
  virtual bool Backs(uint16_t slot) const = 0;
};

// Where a backup's changes go (the replica store, rule S6), and its memory.
class Sink {
 public:
  virtual ~Sink() = default;
  // One whole change of `slot`, atomically; called once per change, in `n` order. A delta that
  // does not apply (another cell version) names its key in `need_state`. False when the change
  // could not be installed (memory): the slot's copy is then incomplete (kLost) until a fill.
  // A fill (S12) uses it too: its start is a slot flush with `n` = the fill's from, and each
  // batch's puts come with `n` = 0.
  virtual bool Install(uint16_t slot, uint64_t n, std::span<const Entry> entries,
                       std::vector<std::string>* need_state) = 0;
  // Reserves `bytes` against the node's memory; false (nothing reserved) when over.
  virtual bool Reserve(uint64_t bytes) = 0;
  virtual void Release(uint64_t bytes) = 0;
  virtual uint64_t Headroom() const = 0;
};

// The owner's side. Changes are numbered and queued per slot; a backup's message holds the
// changes of its slots it has not yet received, in n order.
inline constexpr uint64_t kBatchBytes = 8ull << 20;
inline constexpr uint64_t kPartBytes = 8ull << 20;

struct Target {
  uint32_t id = 0;
  uint64_t life = 0;
  friend bool operator==(const Target&, const Target&) = default;
};

class Sender {
 public:
  Sender();
  ~Sender();  // fails every waiting callback (Aborted)
  Sender(const Sender&) = delete;
  Sender& operator=(const Sender&) = delete;

  // This member begins to own `slot` under `ownership` with these backups, every change up to
  // `n` applied here and committed: 0 for a new cluster's slot, the highest n every in-sync
  // backup confirmed for a promotion (S15), the n a move froze at (G). Numbering goes on from
  // n + 1; anything queued under an earlier ownership is dropped and its waiters fail
  // (Aborted). FailedPrecondition unless `ownership` is above every ownership this Sender had
  // for the slot (a number is never reused under one ownership). `committed`, when given and
  // below n, is a promotion's (S15, docs/replication.md W12): the changes up to n are in this
  // member's store but only those up to `committed` are known to be in every in-sync backup, so
  // nothing past it commits until each in-sync backup confirmed n or was filled; with no
  // in-sync backup, n commits at once.
  Status Own(uint16_t slot, uint64_t ownership, uint64_t n, std::vector<Target> in_sync,
             std::vector<Target> filling, std::optional<uint64_t> committed = std::nullopt);
  // The slot's backups as the applied table has them (a later change of them): in sync and
  // filling. A backup not listed before is first asked how far it is (a message with no changes);
  // it then gets what it lacks, or, if that was already dropped here, is reported by NeedsFill
  // (S12). One no longer listed stops holding commits back. FailedPrecondition unless the slot is
  // owned here under `ownership`.
  Status Configure(uint16_t slot, uint64_t ownership, std::vector<Target> in_sync,
                   std::vector<Target> filling);
  // This member no longer owns the slot: queued changes are dropped, waiters get Aborted; Own
  // starts it again.
  void Drop(uint16_t slot);
  // S4: numbers a change of `slot` before its handler writes; every opened change is closed,
  // even when it wrote nothing. FailedPrecondition when the slot is not owned here (or fenced).
  struct Ticket {
    uint64_t n = 0;
    uint64_t ownership = 0;  // a Close under another ownership is ignored
  };
  Result<Ticket> Open(uint16_t slot);
  // The change's entries (copied; their views need not outlive the call). Throws only
  // (bad_alloc) before the change is closed; the caller then closes it with CloseEmpty.
  void Close(uint16_t slot, Ticket ticket, std::span<const Entry> entries);
  // Closes a change without entries and allocates nothing (M9): one that wrote nothing (its
  // handler never ran), or, `lost`, one whose entries could not be built (an allocation or a
  // state that could not be captured). A lost change is in no backup: each backup of the slot,
  // and any configured later that is below it, needs a fill (NeedsFill) before it is sent
  // more or holds a promotable copy.
  void CloseEmpty(uint16_t slot, Ticket ticket, bool lost) noexcept;
  // Whether an entry can travel (kMaxEntryBytes).
  static bool Fits(const Entry& e) { return e.key.size() + e.bytes.size() <= kMaxEntryBytes; }
  // Whether the slot is served here: owned and neither fenced nor dropped (reads check it, S9).
  bool serving(uint16_t slot) const;
  // The in-sync backups the latest Own or Configure listed for the slot (0 once it is no longer
  // owned here); lock-free (a write checks it against min-replicas-to-write, S11).
  uint32_t in_sync(uint16_t slot) const;

  // The last n opened and the last committed (S9's reads load these without a lock).
  uint64_t started(uint16_t slot) const;
  uint64_t committed(uint16_t slot) const;
  // Runs `done` (OK) once the slot's committed reaches n, at once if it has; Aborted if the slot
  // is fenced or dropped first. Runs on the thread that commits, with no lock held.
  void WhenCommitted(uint16_t slot, uint64_t n, std::function<void(Status)> done);

  // The next REPLICATE for backup `id`, encoded, if none is in flight to it, it is not paused
  // and it has changes (or a committed n) it has not been sent; the message is then in flight
  // until OnAnswer or OnFailed. At most kBatchBytes of entries, kMaxChanges changes and
  // kMaxEntries entries; slots are visited round robin.
  std::optional<std::string> NextMessage(uint32_t id);
  // Applies a backup's answer to its message in flight (an answer to another message is
  // ignored). Received changes count whatever the slot's status. A fence (R11) or a conflict
  // stops the slot; "behind", "full" and "not my life" pause the backup until Resume, so the
  // caller waits before sending again. Returns whether the backup is paused.
  bool OnAnswer(uint32_t id, const Answer& answer);
  // Message `message_id` to backup `id` got no answer: its changes are sent again.
  void OnFailed(uint32_t id, uint64_t message_id);
  // S12: begins a fill of backup `id` of `slot` (listed for it, filling or in sync), replacing
  // any fill it had. Its copy restarts as this store after `from` = the slot's last opened n;
  // changes after it are sent live, ahead of the fill's batches (AddFill). The caller's scan
  // may read the slot only once closed(slot) >= from (every change up to it is in the store).
  // Unavailable while a message is in flight to it (ask again after its answer).
  struct FillTicket {
    uint64_t id = 0;
    uint64_t from = 0;
  };
  Result<FillTicket> BeginFill(uint16_t slot, uint32_t id);
  // The next batch of the scan's puts (kPut entries, each Fits, at most kBatchBytes on the wire
  // unless it is one put; copied), the last one with `last`, stamped with the slot's last
  // opened n (F9). Returns the fill's batches not yet installed at the backup (the caller's flow
  // control). FailedPrecondition when the fill is no longer the backup's current one (it was
  // ended by a lost change or install, another life or a new fill): the caller starts again.
  Result<uint64_t> AddFill(uint16_t slot, uint32_t id, FillTicket ticket,
                           std::span<const Entry> puts, bool last);
  struct FillState {
    uint16_t slot = 0;
    uint32_t id = 0;
    uint64_t life = 0;
    bool in_sync = false;
    FillTicket ticket;
    uint64_t waiting = 0;   // batches added and not yet installed there
    bool done = false;      // the last batch was installed: a filling backup may be made in sync
    uint64_t received = 0;  // every change up to it received (BackupInSync's n, S12)
  };
  // Every backup with a fill begun and not ended, done ones included (an in-sync backup's done
  // fill ends at once; a filling one's when it is configured in sync or away).
  std::vector<FillState> Fills() const;
  // The backups a fill should begin for: those that need one (NeedsFill), and those listed as
  // filling that have none begun (a filling backup is made in sync by a fill's end, F7).
  std::vector<std::pair<uint16_t, uint32_t>> FillsWanted() const;
  // Every change up to it is closed (its handler's writes are in the store).
  uint64_t closed(uint16_t slot) const;
  // The id of the message in flight to `id` (0: none).
  uint64_t in_flight(uint32_t id) const;
  void Resume(uint32_t id);
  // The backups with something to send, nothing in flight and not paused.
  std::vector<uint32_t> Ready() const;
  // Backups that lack changes already dropped here or a change closed lost, or answered below
  // what they had acknowledged: a fill (S12) or their removal (B7) is the caller's.
  std::vector<std::pair<uint16_t, uint32_t>> NeedsFill() const;
  // B7 (docs/replication.md, W15): per backup, whether something of one of its slots waits for
  // it (a change closed past what it received, a fill batch not installed, a fill it needs, or
  // where it is not yet learned), and a count that rises with every answer that moved what it
  // received or installed. A backup whose count stands still while it is waited for confirms
  // nothing: its owner reports it once that lasted cluster-node-timeout.
  struct Lag {
    uint32_t id = 0;
    uint64_t life = 0;
    uint64_t progress = 0;
    bool waiting = false;
  };
  std::vector<Lag> Lags() const;
  // Bytes of changes queued and not yet received by every backup; lock-free (a relaxed load:
  // counted in the node's used_memory on every write).
  uint64_t queued_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class Receiver {
 public:
  // Both must outlive the Receiver.
  Receiver(const TableView* table, Sink* sink);
  ~Receiver();  // releases what pending and early changes held
  Receiver(const Receiver&) = delete;
  Receiver& operator=(const Receiver&) = delete;

  // Takes what it can of one decoded REPLICATE and installs what became committed.
  Answer Receive(const Request& request);

  struct SlotStats {
    uint64_t ownership = 0;
    uint64_t applied = 0;
    uint64_t received = 0;
    size_t pending = 0;  // changes received, not yet installed
    size_t early = 0;    // changes after a gap
    uint64_t fill_id = 0;
    uint64_t filled = 0;   // batches of that fill installed
    bool filling = false;  // the fill's last batch has not been installed
  };
  SlotStats Stats(uint16_t slot) const;
  uint64_t charged() const;  // bytes held by pending and early changes
  // This member no longer backs `slot` (B7, a move): what was pending is released and the
  // slot's stream forgotten (a later backup role starts from a fill).
  void Forget(uint16_t slot);
  // A promotion (S15): this backup becomes the slot's owner after change `n`, the highest every
  // in-sync backup confirmed receiving. What it received up to n is installed, the rest
  // dropped, and the stream forgotten. FailedPrecondition (nothing changed) when it has not
  // received up to n, could not install something, is being filled (R19), or holds fill state
  // from past n (R21).
  Status Promote(uint16_t slot, uint64_t n);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace floe::replica

#endif  // FLOE_REPLICA_REPLICA_H_
