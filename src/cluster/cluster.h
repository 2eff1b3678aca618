// cluster: who the members are, which of them is home to each key, and whether they agree
// (docs/cluster.md).
//
//   KeySlot        Redis Cluster's key -> slot (CRC16/XMODEM of the key or its {tag}, mod 16384)
//   ParseMembers   "host:port,host:port,..." -> members sorted and numbered 1..n
//   SlotMap        slot -> home node; versioned; in this issue a pure function of the members
//   Cluster        formation: HELLO to every member until all answer and agree
//   Table, Change  the agreed table of membership that changes while serving: members, and per
//                  slot its owner, backups, move in progress and version; the state machine a
//                  Raft log drives (docs/membership.md, rules M1-M3)
//   Plan           the next changes toward a balanced table (rules J3, J4)
//
// Contracts:
//   1. Every node derives the same node ids and the same SlotMap from the same member list,
//      however the list was written (order, "localhost", IPv6 spelling).
//   2. The cloud is formed at a node when every listed member has answered its HELLO and every
//      answer agrees with it on cluster name, protocol version, slot count and member list
//      (the map's fingerprint). A node that holds a log with a cluster id (SetHoldsLog,
//      SetClusterId: a restart) needs only more than half of the listed members, itself
//      included (docs/membership.md, M5 (3)). Formation is per node and final: formed() never
//      goes back to false.
//   3. A node answers HELLO whether or not it has formed, always with its own view, so the
//      asker can say exactly why it is waiting (WaitingReasons; docs/cluster.md lists them).
//   4. Liveness is rpc's: the endpoint's heartbeats (rpc::Options::heartbeat_interval_us and
//      down_after_us) decide whether a peer is up; the cluster sends no heartbeat of its own and
//      PeerUp asks the endpoint. One heartbeat, not two.
//   5. Method ids 100-119 are the cluster's (kHelloMethod = 100); the DKV uses 200-239.
//      HELLO runs inline (it never blocks) in the highest priority class.
//   6. Malformed HELLO bytes from a peer are a Status, never a crash (fuzz/cluster_fuzz.cc).
//   7. Table::Apply is deterministic: the same changes applied in the same order to equal tables
//      give equal tables (and equal Encode bytes) on every node. A change it refuses changes
//      nothing. Decoding a change or a table from bytes never crashes and never accepts a table
//      that breaks the invariants Table::Check lists (fuzz/cluster_fuzz.cc).
//
// Thread rules: KeySlot, ParseMembers and the SlotMap are pure values, safe to read from any
// thread. Every public method of Cluster is thread-safe; its HELLO handler and call callbacks
// run on the endpoint's receiving threads, its timers and OnFormed callbacks on the loop.

#ifndef FLOE_CLUSTER_CLUSTER_H_
#define FLOE_CLUSTER_CLUSTER_H_

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "base/base.h"
#include "consensus/consensus.h"
#include "net/net.h"
#include "rpc/rpc.h"

namespace floe::cluster {

inline constexpr int kSlots = 16384;
// 2: the agreed table's member flag 4 (a joined member's token), which a version-1 build cannot
// read, so the two must not form one cluster (docs/cluster.md, "Versions").
inline constexpr uint32_t kProtocolVersion = 2;
// A member list longer than this is refused (every member needs at least one slot, and a
// HELLO carries the whole list).
inline constexpr size_t kMaxMembers = 1024;
// rpc method ids: 100-119 are reserved for the cluster, 200-239 for the DKV.
inline constexpr uint16_t kHelloMethod = 100;
inline constexpr uint16_t kFirstMethod = 100;
inline constexpr uint16_t kLastMethod = 119;

// Redis Cluster's key -> slot: CRC16/XMODEM (poly 0x1021, init 0) of the key, or of the part
// between the first '{' and the next '}' when that part is non-empty; mod 16384.
uint16_t KeySlot(std::string_view key);
// CRC16/XMODEM itself ("123456789" -> 0x31C3).
uint16_t Crc16(std::string_view bytes);

struct Member {
  net::NodeId id = 0;
  std::string host;  // canonical: an IPv4 or IPv6 literal as inet_ntop writes it
  uint16_t port = 0;
  // "host:port", or "[host]:port" for IPv6.
  std::string address() const;
  friend bool operator==(const Member&, const Member&) = default;
};

// Parses "host:port,host:port,..." (IPv4, IPv6 in [..]:port, or "localhost", which is
// 127.0.0.1; spaces around entries are ignored). InvalidArgument, naming the entry, for an
// empty list or entry, a host that is not an address literal, a port outside 1-65535, a member
// listed twice (after canonical spelling) or more than kMaxMembers members. Members are sorted
// by (address family, address bytes, port) and numbered 1..n in that order: every node derives
// the same ids from the same list.
Result<std::vector<Member>> ParseMembers(std::string_view list);
// One "host:port" entry (id 0).
Result<Member> ParseMember(std::string_view entry);

// Slot -> home. In this issue a pure function of the sorted member list: balanced contiguous
// ranges in id order (the first 16384 % n members get one slot more than the others). Versioned:
// every DKV message carries version(); the next issue (Raft-agreed maps with migration) will raise
// it. Thread-compatible value; cheap to read.
class SlotMap {
 public:
  SlotMap() = default;  // no members: every Home() is 0
  // REQUIRES: members as ParseMembers returns them (ids 1..n in sorted order), n <= kSlots.
  static SlotMap Balanced(std::vector<Member> members, uint64_t version = 1);
  // Given homes (the agreed table's owners, docs/membership.md step 1). REQUIRES: kSlots homes,
  // each the id of one of `members`. The fingerprint covers the members only, as Balanced's.
  static SlotMap WithHomes(std::vector<Member> members, std::vector<net::NodeId> homes,
                           uint64_t version);
  uint64_t version() const { return version_; }
  // O(1): a 16384-entry table. 0 for a slot >= kSlots or an empty map.
  net::NodeId Home(uint16_t slot) const {
    return slot < homes_.size() ? homes_[slot] : net::NodeId{0};
  }
  const std::vector<Member>& members() const { return members_; }
  // nullptr when no member has that id.
  const Member* Find(net::NodeId id) const;
  struct Range {
    uint16_t first, last;  // inclusive
    net::NodeId home;
  };
  // The maximal runs of consecutive slots with one home, in slot order.
  std::vector<Range> Ranges() const;
  // xxh3 over (version, slot count, every member's id and address): equal maps, equal
  // fingerprints. Compared at formation.
  uint64_t Fingerprint() const { return fingerprint_; }

 private:
  uint64_t version_ = 0;
  std::vector<Member> members_;
  std::vector<net::NodeId> homes_;  // kSlots entries
  uint64_t fingerprint_ = 0;
};

// ---- The agreed table (docs/membership.md) ----

// A cluster's identity (rule M5): 128 random bits agreed in its log's first entry and carried by
// every HELLO, so a member whose directory holds another cluster's log is refused by name.
// Empty (zero) until the first entry is applied.
struct ClusterId {
  uint64_t hi = 0;
  uint64_t lo = 0;
  bool empty() const { return hi == 0 && lo == 0; }
  std::string ToString() const;  // 32 lower-case hex digits
  // InvalidArgument unless exactly 32 hex digits.
  static Result<ClusterId> Parse(std::string_view text);
  // From the operating system's random source; never empty.
  static ClusterId Random();
  friend bool operator==(const ClusterId&, const ClusterId&) = default;
};

// At most this many backups per slot (--replicas).
inline constexpr uint32_t kMaxReplicas = 8;

struct TableMember {
  net::NodeId id = 0;
  std::string host;   // canonical, as ParseMember writes it
  uint16_t port = 0;  // cluster (RPC) port
  uint16_t raft_port = 0;
  uint16_t client_port = 0;
  // The member's life: its RPC incarnation (rule O7). 0 until its first start is committed;
  // roles belong to this life, and a new one is a restart.
  uint64_t life = 0;
  // The join token of a member added by a join (rule J1): the same in every retry of that join,
  // so a retry is answered as joined; 0 for a founder.
  uint64_t join_token = 0;
  bool leaving = false;    // its slots move away, then it is removed (rule J2)
  bool suspected = false;  // agreed dead (rule O4): its slots may be promoted away
  // The table's epoch after the last change that set or cleared `suspected` (kFailOver,
  // kSuspect); 0: none. A member is granted an ownership lease only once it has applied a
  // table at least this new (rule O2), so it never serves by a table older than its failover.
  uint64_t suspect_epoch = 0;
  friend bool operator==(const TableMember&, const TableMember&) = default;
};

struct SlotState {
  net::NodeId owner = 0;
  // In sync: every committed change, eligible for promotion. Filling: being copied (rule B6).
  // Distinct across both lists, never the owner.
  std::vector<net::NodeId> backups;
  std::vector<net::NodeId> filling;
  net::NodeId moving_to = 0;  // a move in progress (rule G1); 0: none; may be a backup
  uint64_t version = 1;       // v(s): raised by every change of this slot
  uint64_t ownership = 1;     // o(s): the version at which the owner got the slot
  friend bool operator==(const SlotState&, const SlotState&) = default;
};

// One entry of the log (rule M2). Slot changes name each slot with the version they expect and
// apply to all of them or to none; each raises the version of every slot it names.
struct Change {
  enum class Kind : uint8_t {
    kAddMember = 1,      // member (its id is assigned: the next never used)
    kRemoveMember = 2,   // node: owns, backs up and receives nothing
    kSetLeaving = 3,     // node, flag
    kBeginMove = 4,      // slots[i].node: the destination
    kCommitMove = 5,     // slots[i].seq: frozen at. The destination owns; the source is a backup
    kAbortMove = 6,      // slots
    kSetBackups = 7,     // slots[i].backups (a subset of the in-sync ones), slots[i].filling
    kPromote = 8,        // slots[i].node: an in-sync backup replaces a suspected owner
    kSetReplicas = 9,    // count
    kPausePlanner = 10,  // flag
    kBackupInSync = 11,  // slots[i].node: filling -> in sync, as of slots[i].seq
    kSuspect = 12,       // node, member.life, flag: agreed dead (or alive again)
    kRestarted = 13,     // node, member.life: a new life; the old one's roles end (rule O7)
    kInitialize = 14,    // members, count (replicas), cluster_id: a new cluster's first entry
    // node, member.life: the member's ownership lease lapsed (rule O4). It is suspected; each
    // slot it owns goes to an in-sync backup that is not suspected (O5), and it leaves every
    // backup list.
    kFailOver = 15
  };
  static constexpr uint8_t kLastKind = 15;
  struct SlotItem {
    uint16_t slot = 0;
    uint64_t version = 0;  // expected
    net::NodeId node = 0;
    uint64_t seq = 0;
    std::vector<net::NodeId> backups;
    std::vector<net::NodeId> filling;
    friend bool operator==(const SlotItem&, const SlotItem&) = default;
  };
  Kind kind = Kind::kAddMember;
  TableMember member;
  net::NodeId node = 0;
  bool flag = false;
  uint32_t count = 0;
  std::vector<SlotItem> slots;
  std::vector<TableMember> members;
  ClusterId cluster_id;  // kInitialize: chosen by the founder that proposes it
  friend bool operator==(const Change&, const Change&) = default;
};
std::string EncodeChange(const Change& change);
// Corruption for malformed bytes (unknown kind, out-of-range slot, more items than slots, ...).
Result<Change> DecodeChange(std::string_view bytes);

// The agreed table. A value: copy it to keep a view. Invariants (Check): member ids distinct,
// below next_id and ascending; addresses distinct; every slot's owner, backups, filling backups
// and destination are members; backups and filling distinct across both lists, never the owner,
// each list at most kMaxReplicas; a destination is not the owner; ownership <= version;
// replicas <= kMaxReplicas.
class Table {
 public:
  // A new cluster's table from its member list (ids 1..n as ParseMembers numbers them): owners
  // as SlotMap::Balanced, min(replicas, n - 1) in-sync backups per slot (the store is empty),
  // spread evenly.
  static Table Initial(const std::vector<Member>& members, uint32_t replicas);
  // The same from members with their ports given (ids 1..n ascending, valid distinct addresses,
  // at most kMaxMembers; replicas <= kMaxReplicas): InvalidArgument otherwise. What a new
  // cluster's first log entry (kInitialize) builds on every node alike.
  static Result<Table> Initial(const std::vector<TableMember>& members, uint32_t replicas);

  // FailedPrecondition (naming the reason) when the change does not apply to this table: a
  // slot whose version moved on, an unknown or busy member, a destination that is the owner, a
  // promotion of a backup not in sync or away from an owner not suspected...
  Status Apply(const Change& change);

  uint64_t epoch() const { return epoch_; }  // changes applied
  // Set by kInitialize (rule M5); empty before it.
  const ClusterId& cluster_id() const { return cluster_id_; }
  net::NodeId next_id() const { return next_id_; }
  uint32_t replicas() const { return replicas_; }
  bool planner_paused() const { return planner_paused_; }
  const std::vector<TableMember>& members() const { return members_; }
  const TableMember* FindMember(net::NodeId id) const;
  const SlotState& slot(uint16_t s) const { return slots_[s]; }

  std::string Encode() const;
  // Corruption for malformed bytes or a table that breaks an invariant.
  static Result<Table> Decode(std::string_view bytes);
  Status Check() const;
  friend bool operator==(const Table&, const Table&) = default;

 private:
  Status ApplyToSlots(const Change& change);
  TableMember* MutableMember(net::NodeId id);
  // Rules O5, O7: `node`'s slots go to live in-sync backups; it leaves every backup list.
  void EndRoles(net::NodeId node, bool new_life);

  uint64_t epoch_ = 0;
  ClusterId cluster_id_;
  net::NodeId next_id_ = 1;
  uint32_t replicas_ = 0;
  bool planner_paused_ = false;
  std::vector<TableMember> members_;  // by id
  std::vector<SlotState> slots_ = std::vector<SlotState>(kSlots);
};

// ---- Agreed metadata: the table driven by a Raft log (docs/membership.md, rule M1) ----

struct MetaOptions {
  consensus::Options raft;  // id (the member id), address (host:raft_port), dir, timeouts;
                            // bootstrap: the founders' Raft configuration (empty: joining)
  // A founder that leads a log whose table is still empty proposes kInitialize with these, so
  // every node, joiners included, builds the same table from the log. Empty for a joiner.
  std::vector<TableMember> founders;
  uint32_t replicas = 0;
  // Called on the Raft thread after each change the table accepted and after a snapshot was
  // restored, with the table as it now is. Must not block.
  std::function<void(const std::shared_ptr<const Table>&)> on_change;
};

// One member's view of the agreed table: it applies the log's changes in order (every member
// the same), publishes each resulting table as an immutable snapshot, and proposes changes
// through the Raft leader. Thread-safe.
class Meta {
 public:
  // InvalidArgument for bad options (the Raft layer's checks, founders that do not form a
  // table); Unavailable when the Raft port or directory cannot be used.
  static Result<std::unique_ptr<Meta>> Start(MetaOptions options);
  ~Meta();  // Stop()
  Meta(const Meta&) = delete;
  Meta& operator=(const Meta&) = delete;

  // The table as last applied here (empty until the log's kInitialize is applied). Any thread,
  // cheap: a shared pointer to an immutable table.
  std::shared_ptr<const Table> table() const;
  // Proposes `change` through the Raft leader. done(OK) once it is committed and the table
  // accepted it here; FailedPrecondition with the table's reason when the table refused it
  // (nothing changed anywhere), or naming the leader when this node is not the leader;
  // Unavailable or Cancelled when the outcome is unknown. Runs once, on the Raft thread (or the
  // caller's, for a request refused at once).
  void Propose(const Change& change, std::function<void(Status)> done);
  // Raft membership, on the leader: see consensus::Log.
  void AddServer(uint64_t id, std::string address, consensus::Role role,
                 std::function<void(Status)> done);
  // NotFound when `id` is not in the configuration (docs/membership.md, J2: a retry's "done").
  void RemoveServer(uint64_t id, std::function<void(Status)> done);
  // Gives server `id` another role (docs/membership.md, M4: a learner promoted to voter).
  void Assign(uint64_t id, consensus::Role role, std::function<void(Status)> done);
  // Hands leadership to voter `id` (0: the most up-to-date one); see consensus::Log.
  void TransferLeadership(uint64_t id, std::function<void(Status)> done);
  // The commit index, once a majority confirmed this node still leads (consensus::Log,
  // contract C11).
  void ConfirmLeadership(consensus::IndexDone done) const;
  consensus::State raft() const;
  // Stops the Raft server (its data stays in the directory). Idempotent.
  void Stop();

 private:
  Meta() = default;
  void InitializeLoop();
  class Machine;
  std::unique_ptr<Machine> machine_;
  std::unique_ptr<consensus::Log> log_;
  std::thread initializer_;
  Mutex stop_mu_;
  std::condition_variable_any stop_cv_;
  bool stopping_ FLOE_GUARDED_BY(stop_mu_) = false;
  bool initialize_done_ FLOE_GUARDED_BY(stop_mu_) = false;
};

// The cluster id a member's stored log carries (rule M5, read before its first HELLO): its
// snapshot's table with every stored entry after it applied, as Meta would apply them; empty
// when no kInitialize is stored. Corruption when the snapshot is not a table.
Result<ClusterId> ClusterIdOfLog(const consensus::StoredLog& log);

// ---- Joining a running cluster (docs/membership.md, rule J1; docs/wire.md, "Joining") ----

inline constexpr uint16_t kJoinMethod = 101;
// The RPC id a node without a member id yet sends its JOIN from (rpc's stranger), to the member
// it asks as rpc::kAnyNodeId; ids from kAnyNodeId up are never assigned to a member
// (Table::Apply refuses an AddMember that would take one).
inline constexpr net::NodeId kJoinerId = rpc::kStrangerId;
inline constexpr net::NodeId kFirstReservedId = rpc::kAnyNodeId;

// What a joiner sends (RPC kJoinMethod). A value.
struct JoinRequest {
  uint32_t protocol_version = kProtocolVersion;  // the leading varint
  bool complete = false;  // decoded: the version is ours and the fields were read
  std::string cluster_name;
  uint32_t slots = kSlots;
  ClusterId cluster_id;  // the id its directory's log holds (rule M5); empty: none
  std::string host;      // canonical, as ParseMember writes it
  uint16_t port = 0;     // cluster (RPC) port
  uint16_t raft_port = 0;
  uint16_t client_port = 0;
  uint64_t token = 0;      // not 0; the same in every retry of one run (a retry is found by it)
  bool forwarded = false;  // set by the member that forwards it to the leader
  uint64_t proof_hi = 0, proof_lo = 0;  // SignJoinRequest's; 0 without a secret
  uint64_t time = 0;  // when the joiner sent it: seconds since the Unix epoch, under the proof
  // The member id its directory records (it joined before, at this address, and holds a log);
  // 0: none. The leader answers it only as that member's own join (DecideJoin).
  net::NodeId member = 0;
};
// How far a stranger's JOIN's time may be from the member's clock (either way).
inline constexpr uint64_t kJoinFreshSeconds = 600;
std::string EncodeJoinRequest(const JoinRequest& request);
// Corruption for bytes that are not a JOIN (docs/wire.md lists the checks). Another protocol
// version decodes to complete == false with only protocol_version set.
Result<JoinRequest> DecodeJoinRequest(std::string_view bytes);
// Sets the secret proof: SipHash-2-4-128 keyed by rpc::DeriveMacKey(secret) of kJoinProofDomain and
// the request encoded with forwarded and the proof cleared; both 0 for an empty secret.
void SignJoinRequest(JoinRequest* request, std::string_view secret);
// What each MAC of a join begins with (docs/wire.md, "Joining"): the request's proof, the
// answer's MAC, a refusal's MAC. Each ends in a NUL, so none is a prefix of another: a MAC of
// one kind is never one of another, whatever follows the domain.
inline constexpr std::string_view kJoinProofDomain{"floe join proof\0", 16};
inline constexpr std::string_view kJoinAnswerDomain{"floe join answer\0", 17};
inline constexpr std::string_view kJoinRefusalDomain{"floe join refusal\0", 18};
// Whether the request's proof is the one `secret` gives (constant time); DecideJoin checks it.
bool JoinProofMatches(const JoinRequest& request, std::string_view secret);
// Whether `bytes`, sent by a stranger, are a joiner's own JOIN (decoded, of our protocol
// version, not forwarded), sent within kJoinFreshSeconds of `now` (seconds since the Unix
// epoch), whose proof matches `secret`: rpc::Options::stranger_check, so the member drops
// anything else unanswered, and a captured request replays for minutes at most.
bool StrangersJoinIsProven(std::string_view bytes, std::string_view secret, uint64_t now);

// The leader's answer: the joiner's id, the cluster id and the applied table's members.
struct JoinAnswer {
  net::NodeId id = 0;
  ClusterId cluster_id;
  std::vector<TableMember> members;  // id, host and ports only (life and flags are not sent)
  uint64_t mac_hi = 0, mac_lo = 0;   // SignJoinAnswer's; 0 without a secret
};
std::string EncodeJoinAnswer(const JoinAnswer& answer);
// Corruption for bytes that are not an answer (an id of 0 or kFirstReservedId and above, members
// out of id order or not canonical, the joiner's id not among them...).
Result<JoinAnswer> DecodeJoinAnswer(std::string_view bytes);

// Sets the answer's MAC, which the leader gives it (rule J1): SipHash-2-4-128 keyed by
// rpc::DeriveMacKey(secret) of kJoinAnswerDomain, the request's token, proof_hi and proof_lo (8
// bytes each, little-endian) and the answer encoded with its MAC cleared; both 0 for an empty
// secret. So an answer holds only for the request it answers, and only the cluster's secret makes
// one.
void SignJoinAnswer(JoinAnswer* answer, const JoinRequest& request, std::string_view secret);
// Whether `answer` carries the MAC `secret` gives it for `request` (constant time); the joiner
// takes no answer that does not.
bool JoinAnswerMatches(const JoinAnswer& answer, const JoinRequest& request,
                       std::string_view secret);

// A refusal travels as the RPC status (FailedPrecondition), which anyone could send the joiner:
// the leader appends "\n#" and the hex of a MAC under the secret over kJoinRefusalDomain, the
// request's token, proof_hi and proof_lo (8 bytes each, little-endian) and `reason`; nothing
// without a secret. OpenJoinRefusal gives the reason back when the MAC is the one `request` and
// `secret` give (always, without a secret), nullopt otherwise (the joiner then asks again
// rather than exit on a forged refusal).
std::string SignJoinRefusal(std::string_view reason, const JoinRequest& request,
                            std::string_view secret);
std::optional<std::string> OpenJoinRefusal(std::string_view message, const JoinRequest& request,
                                           std::string_view secret);

// What the leader compares a JOIN with: its own settings.
struct JoinPolicy {
  std::string cluster_name;
  std::string secret;
  uint32_t protocol_version = kProtocolVersion;  // tests: pretend another
  uint32_t slots = kSlots;                       // tests: pretend another
};
// The leader's decision on a JOIN (rule J1), from its applied table. FailedPrecondition naming
// what differs ("cluster-name 'a', ours 'b'", "protocol version 1, ours 2", "8192 slots, ours
// 16384", "cluster id X, ours Y", "cluster secret differs (--cluster-secret)", "127.0.0.2:7100
// is already member 2", ...), Unavailable while the table is not initialized. Otherwise either
// `joined` (the member this join already added: a retry with the same token) or `propose`, the
// AddMember to commit. A request with a recorded member id is only ever `joined` as that id
// (its token's member at its address), else refused: it never gets a new one.
struct JoinDecision {
  net::NodeId joined = 0;
  std::optional<Change> propose;
};
Result<JoinDecision> DecideJoin(const Table& table, const JoinRequest& request,
                                const JoinPolicy& ours);
// The answer for member `id` of `table`. REQUIRES: id is a member of table.
JoinAnswer MakeJoinAnswer(const Table& table, net::NodeId id);

struct PlanOptions {
  size_t max_moves = 4;  // moves in progress at once (--migrate-parallel)
  // Members the leader has not heard from lately (docs/replication.md, W17): never picked as a
  // new filling backup. They stay active otherwise: the leader's own view drops no backup.
  std::vector<net::NodeId> unheard;
};
// The next changes toward the balanced table, valid when applied in order (re-plan after any is
// refused): backups repaired first (suspected members dropped; too few in sync: filling ones
// added; a leaving one kept until its replacement is in sync; extras dropped), then new moves up
// to max_moves in progress, then the removal of a leaving member that holds nothing. Active
// members are those neither leaving nor suspected. Balanced: active members' owned slots differ
// by at most one, each slot has min(replicas, active members - 1) in-sync backups. Minimal: a
// slot moves only if its owner is over its share or leaving, preferably to one of its in-sync
// backups. Slots of a suspected owner are failover's, not the planner's. Empty when balanced or
// paused. Filling backups become in sync by BackupInSync, which the owner asks for (rule B6).
std::vector<Change> Plan(const Table& table, const PlanOptions& options);

struct Options {
  std::string cluster_name = "floe";  // 1-64 bytes of [A-Za-z0-9._-]
  std::vector<Member> members;        // every member, self included (from ParseMembers)
  net::NodeId self = 0;
  uint64_t hello_interval_us = 100'000;   // how often a waiting node re-asks the silent or
                                          // disagreeing; a call unavailable at once waits this long
  uint64_t hello_timeout_us = 1'000'000;  // one HELLO call's deadline (rpc resends within it)
  uint64_t log_interval_us = 3'000'000;   // how often it logs why it is still waiting
  // This node's client (RESP) port, sent in HELLO so every member can tell clients where the
  // others listen (CLUSTER SLOTS); 0: none.
  uint16_t client_port = 0;
  // Tests only: pretend to speak another protocol or slot count (to check the reasons).
  uint32_t protocol_version = kProtocolVersion;
  uint32_t slots = kSlots;
  // This process's start token (rule M5 (7)); 0: drawn at random, as a server always does.
  // Simulations set it from their seed, so that a run's HELLOs (their sizes included) replay.
  uint64_t start_token = 0;
  // A member that joined a running cluster (docs/membership.md J1): the leader made
  // formation's checks, so it is formed at Start, every member agreed, and it sends no HELLO.
  bool joined = false;
};

// InvalidArgument when the options cannot form a cloud: no members, self not among them, ids
// not 1..n in order, a bad cluster name, zero intervals. Cluster refuses to form with such
// options (its one waiting reason is this status); the server calls it first to fail fast.
Status ValidateOptions(const Options& options);
// A cluster whose members are not all on loopback addresses (127.0.0.0/8, ::1) must have a
// secret, so that every RPC message is authenticated: FailedPrecondition, naming the address
// and the flag, when `secret` is empty.
Status CheckSecurity(const Options& options, std::string_view secret);
// Which member is this node: the one at host:port. An empty host matches any member on that
// port when exactly one is; NotFound or InvalidArgument (ambiguous) otherwise.
Result<net::NodeId> FindSelf(const std::vector<Member>& members, std::string_view host,
                             uint16_t port);
// What the endpoint and transport under a Cluster must be configured with: every member but
// `self`, by id (rpc::Options::peers) and with its address (net::TransportOptions::peers).
std::vector<net::NodeId> PeerIds(const std::vector<Member>& members, net::NodeId self);
std::vector<net::PeerAddress> PeerAddresses(const std::vector<Member>& members, net::NodeId self);

// Formation on an rpc::Endpoint the caller owns. Construct before Endpoint::Start (it registers
// kHelloMethod), then Start() after the endpoint started. The cloud is formed when every listed
// member has answered HELLO and all agree on cluster name, protocol version, slot count and the
// member list (fingerprint); then formed() is true and the map is usable.
// REQUIRES: the endpoint (configured with PeerIds) and the loop outlive the Cluster, or Stop()
// is called first.
class Cluster {
 public:
  Cluster(rpc::Endpoint& endpoint, net::Loop& loop, Options options);
  ~Cluster();  // Stop()
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  // Starts asking every other member (at once) and logging why it waits. Idempotent.
  void Start();
  // Stops asking and logging; HELLOs are still answered while the endpoint runs. Idempotent.
  void Stop();
  // The cluster id every HELLO (ours, and our answers) carries from now on (rule M5): a peer
  // whose HELLO carries another non-empty id disagrees, "cluster id <theirs>, ours <ours> ...".
  // Empty (the default): none yet, compared with nothing. Thread-safe.
  void SetClusterId(const ClusterId& id);
  // Whether this member's directory holds a Raft log, which every HELLO says from now on (rule
  // M5): a member with a cluster id disagrees with a peer that has neither an id nor a log
  // ("it holds no log ...: it must --join"), and a member with neither disagrees with a peer
  // that has an id. False (the default) until set. Thread-safe.
  void SetHoldsLog(bool holds);
  // Thread-safe, cheap (an atomic load, acquire: the map and OnFormed state are visible).
  bool formed() const;
  // Why the cloud has not formed, one line per member that has not agreed (in id order), then
  // any node that said hello but is not in our list. Empty once formed. Texts (docs/cluster.md):
  //   "127.0.0.3:7100: no answer"
  //   "127.0.0.2:7100: cluster-name 'a', ours 'b'"
  //   "127.0.0.2:7100: protocol version 2, ours 1"
  //   "127.0.0.2:7100: 8192 slots, ours 16384"
  //   "127.0.0.2:7100: cluster id <32 hex>, ours <32 hex> (one of us runs from another ..."
  //   "127.0.0.2:7100: it holds no log (a new or wiped data directory) and ours is cluster ..."
  //   "127.0.0.2:7100: cluster id <32 hex>, and we hold no log (a new or wiped data ..."
  //   "127.0.0.2:7100: its list lacks us (127.0.0.1:7100); member lists differ: ..."
  //   "127.0.0.2:7100: member lists differ: it lists 127.0.0.9:7100 that ours lacks"
  //   "127.0.0.9:7100: not in our list"
  std::vector<std::string> WaitingReasons() const;
  const SlotMap& map() const;  // fixed after construction in this issue
  net::NodeId self() const;
  // Liveness from rpc's heartbeats (contract 4): true for self; for a peer, whether the
  // endpoint has heard from it within down_after_us. False for an id not in the map.
  bool PeerUp(net::NodeId id) const;
  // Runs fn once on the loop thread when the cloud forms (at once, posted, if it has); never
  // once the cluster has stopped or been destroyed, even if it was posted before.
  void OnFormed(std::function<void()> fn);

  // For INFO: every member with its state, in id order.
  struct MemberState {
    Member member;
    bool self = false;
    bool agreed = false;       // answered HELLO and agrees (self: always)
    bool up = false;           // PeerUp
    std::string reason;        // why not agreed, without the address prefix; empty when agreed
    uint16_t client_port = 0;  // from its HELLO (self: Options::client_port); 0 until heard
  };
  std::vector<MemberState> Members() const;
  // Loop time from Start() to formation, in microseconds; 0 until formed.
  uint64_t formation_us() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace floe::cluster

#endif  // FLOE_CLUSTER_CLUSTER_H_
