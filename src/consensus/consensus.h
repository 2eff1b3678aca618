// consensus: a replicated log agreed through Raft, for the cluster's metadata (member list,
// slot map). Backed by canonical raft 0.15 (libraft, libuv) behind this narrow interface, so
// another Raft implementation could replace it without the cluster noticing (docs/consensus.md).
//
//   Log            one Raft server: its log on disk under Options::dir, its TCP port, its loop
//   StateMachine   what the log drives: Apply each committed entry in order; Snapshot/Restore
//   Server, Role   a member of the Raft configuration: voter, learner (replicates, never votes)
//                  or spare (neither)
//
// Contracts (numbered as in docs/consensus.md, each names its test there):
//   1. Every server applies the same committed entries in the same order, each once per life
//      of its StateMachine, with the same index; an entry's index is the Raft log index.
//   2. Propose's done runs exactly once: with the index after the entry is committed and applied
//      to the local StateMachine, or with an error. FailedPrecondition means the entry was not
//      appended here (this server is not the leader; the message names the leader, when known,
//      as "leader <id> at <address>"): it is safe to retry at the leader. Unavailable
//      ("leadership lost") and Cancelled (Stop) mean the outcome is unknown: the entry may
//      still be committed, so entries must be idempotent or carry their own request ids.
//   3. What a majority of voters has committed survives any minority of crashes and restarts;
//      a restarted server replays its snapshot and log from Options::dir before it serves.
//   4. Past snapshot_threshold applied entries, the StateMachine's Snapshot is stored and the
//      log truncated to snapshot_trailing entries; a server too far behind (or new) is brought
//      up by installing the leader's snapshot through Restore.
//   5. Learners (RAFT_STANDBY) receive every entry and never count for elections or commits;
//      spares receive nothing. At most kMaxVoters voters are allowed (checked by AddServer and
//      Assign, and in the bootstrap configuration).
//   6. Everything from outside is bounded: an entry is at most kMaxEntryBytes, at most
//      Options::max_pending proposals and membership requests wait at once (ResourceExhausted
//      past that); every Options field is range-checked by Start (InvalidArgument naming it).
//   7. Stop is graceful and idempotent: no new request starts, and what raft appended is on disk
//      before raft closes (waiting at most an election timeout); every request still pending
//      gets its done once (the raft error, or Cancelled); later ones fail with Cancelled at once.
//
// Thread rules:
//   1. Each Log runs libuv's loop, and all of libraft, on a thread of its own (the raft
//      thread). Public methods are thread-safe: they put a request on a mutex-guarded queue and
//      wake the loop with uv_async_send.
//   2. StateMachine methods and every done callback run on the raft thread, with no lock of the
//      Log held; they must not block (a slow Apply delays heartbeats) and must not call Stop or
//      destroy the Log. A request refused before it reaches the queue (too big, queue full,
//      stopped) runs its done on the calling thread before the call returns.
//   3. state() is a copy refreshed by the raft thread after each loop iteration and before each
//      done runs: it may lag raft by one loop iteration (raft fails a leader's requests just
//      before it steps down, so a done told "leadership lost" may still see leader == true).
//   4. libraft parses addresses with strtok, which is not thread-safe; the module therefore
//      defines strtok for the whole process with per-thread state (strtok_r), so that several
//      Logs (or any other thread) may run in one process (docs/consensus.md, "Findings").

#ifndef FLOE_CONSENSUS_CONSENSUS_H_
#define FLOE_CONSENSUS_CONSENSUS_H_

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/base.h"

namespace floe::consensus {

// Largest entry Propose accepts: metadata (a 16,384-slot map with versions and backups) fits in
// well under 1 MiB, and raft_uv writes an entry into one 8 MiB segment.
inline constexpr size_t kMaxEntryBytes = 1 << 20;
// Voters beyond five slow every commit and add no useful fault tolerance for metadata; the
// other members are learners (issue 11).
inline constexpr size_t kMaxVoters = 5;
// Leadership confirmations waiting at once (C11): they share one barrier per round, outside
// Options::max_pending, so a flood of them never delays a proposal.
inline constexpr size_t kMaxConfirms = 256;
// A configuration larger than this is refused (every member is in every configuration entry).
inline constexpr size_t kMaxServers = 1024;

enum class Role : uint8_t {
  kVoter,    // replicates and votes (RAFT_VOTER)
  kLearner,  // replicates, never votes nor counts for commit (RAFT_STANDBY)
  kSpare,    // neither (RAFT_SPARE): listed, nothing more
};
std::string_view RoleName(Role role);

struct Server {
  uint64_t id = 0;      // >= 1, unique in the configuration
  std::string address;  // "a.b.c.d:port" its raft listens on
  Role role = Role::kVoter;
  friend bool operator==(const Server&, const Server&) = default;
};

// What the log drives. Called on the raft thread only (thread rule 2).
class StateMachine {
 public:
  virtual ~StateMachine() = default;
  // A committed entry, in log order. `entry` lives until Apply returns.
  virtual void Apply(uint64_t index, std::string_view entry) = 0;
  // The whole state as bytes, covering every entry applied so far.
  virtual std::string Snapshot() = 0;
  // Replaces the whole state by a Snapshot's bytes (from disk at start, or the leader's). An
  // error leaves the server unable to proceed from that snapshot (it is logged).
  virtual Status Restore(std::string_view snapshot) = 0;
};

// A 16-byte MAC of `bytes` under a key the caller holds (the transport's handshake, T2).
using Mac = std::function<std::array<uint8_t, 16>(std::string_view bytes)>;

struct Options {
  uint64_t id = 0;      // >= 1
  std::string address;  // "a.b.c.d:port" raft listens on and the others reach it at (IPv4)
  std::string dir;      // data directory (created if missing); docs/consensus.md, "Data dir"
  // The initial configuration, used only when `dir` holds no log yet (it must list this
  // server, at the same address, and at least one voter; every founding member must be given
  // the same list). Empty: a joining server, which waits until a member's AddServer adds it.
  std::vector<Server> bootstrap;
  // A follower that hears nothing from a leader for a random time in [1x, 2x) this starts an
  // election; a leader that cannot reach a majority for this long steps down. 10-60000.
  uint64_t election_timeout_ms = 500;
  // How often an idle leader sends heartbeats. 1 .. election_timeout_ms / 2.
  uint64_t heartbeat_timeout_ms = 100;
  // Applied entries past the last snapshot before taking a new one. 1 .. 2^31.
  uint64_t snapshot_threshold = 1024;
  // Entries kept in the log behind a snapshot (so a follower slightly behind gets entries, not
  // the whole snapshot). 0 .. 2^31.
  uint64_t snapshot_trailing = 128;
  // Proposals and membership requests waiting at once (queued or in raft). 1 .. 2^20.
  uint64_t max_pending = 4096;
  // Keys the transport's handshake (docs/consensus.md, "The transport"): a server accepts a
  // connection only from a caller whose MAC is the same function (the same key). Called on the
  // raft thread; must be pure. Empty: an unkeyed checksum, which bounds every input but
  // authenticates nothing (tests; the server always sets one).
  Mac mac;
};

// Checks every field (the texts name the field); Start calls it.
Status Validate(const Options& options);
// "a.b.c.d:port" with port 1-65535; InvalidArgument otherwise.
Status ValidateAddress(std::string_view address);

struct State {
  uint64_t id = 0;
  bool running = false;    // false before Start's loop runs and after Stop
  bool leader = false;     // this server is the leader now
  uint64_t leader_id = 0;  // 0: no leader known
  std::string leader_address;
  // The leader, and the barrier it appended when elected (an entry of its current term) is
  // committed and applied here: only from then does its commit_index cover everything an
  // earlier leader committed (Raft §5.4.2, §8; docs/consensus.md, C10).
  bool leader_ready = false;
  uint64_t term = 0;
  uint64_t commit_index = 0;
  uint64_t applied_index = 0;
  uint64_t last_index = 0;            // last entry in the local log
  std::vector<Server> configuration;  // the latest (possibly uncommitted) configuration
  uint64_t snapshots_taken = 0;       // by this server since Start
  uint64_t snapshots_restored = 0;    // Restore calls since Start (from disk or the leader)
  // At the leader only (empty elsewhere): raft's replication state of every other server in
  // `configuration`, in its order.
  struct Follower {
    uint64_t id = 0;
    uint64_t match_index = 0;  // the highest entry it reported as stored
    // Since it last answered the leader, as of the last refresh (raft's loop runs at least
    // every heartbeat): kNeverHeard if it never did in this leader's term.
    uint64_t silent_ms = 0;
    friend bool operator==(const Follower&, const Follower&) = default;
  };
  static constexpr uint64_t kNeverHeard = ~uint64_t{0};
  std::vector<Follower> followers;
  uint64_t led_ms = 0;  // at the leader: how long it has led, as of the last refresh
  // Incoming connections the transport closed before raft saw a byte of them (bad hello, bad
  // MAC, EOF, deadline, too many at once), since Start.
  uint64_t handshakes_refused = 0;
};

// What a server's directory holds, read without running a server (docs/consensus.md, "Reading
// a directory"): the last snapshot's state as StateMachine::Snapshot gave it (empty: none) and
// the proposals stored after it, in log order, committed or not (a later leader may still
// replace an uncommitted tail).
struct StoredLog {
  uint64_t snapshot_index = 0;  // 0: no snapshot
  std::string snapshot;
  std::vector<std::pair<uint64_t, std::string>> entries;  // (index, what Propose was given)
};
// Reads `options.dir` through raft's own loader (options.id and address as Start would take
// them). NotFound when the directory holds no log; Corruption for a snapshot or an entry this
// module did not write; Unavailable when raft cannot read it. REQUIRES: no Log runs on the
// directory (the caller holds it).
Result<StoredLog> ReadStoredLog(const Options& options);

using IndexDone = std::function<void(Result<uint64_t>)>;
using Done = std::function<void(Status)>;

// One Raft server. Thread-safe (thread rules above).
class Log {
 public:
  // Validates `options`, creates the directory, loads the log (restoring the last snapshot and
  // replaying entries once committed), binds the address and starts the raft thread. Errors:
  // InvalidArgument (options), Unavailable (the port or the directory cannot be used; the
  // message has raft's text). `machine` must outlive the Log.
  static Result<std::unique_ptr<Log>> Start(const Options& options, StateMachine* machine);

  ~Log();  // Stop()
  Log(const Log&) = delete;
  Log& operator=(const Log&) = delete;

  // Appends `entry` through the leader (this server); contract 2. InvalidArgument for an entry
  // over kMaxEntryBytes, ResourceExhausted when max_pending requests wait.
  void Propose(std::string entry, IndexDone done);

  // Membership, on the leader only (FailedPrecondition naming the leader elsewhere). One change
  // at a time: Aborted while another is in progress (retry). AddServer adds `id` and then, for
  // kVoter or kLearner, assigns the role (a voter is first caught up by the leader); done runs
  // after the last step commits. The same server again (id and address) is not an error, so a
  // retry is safe: a spare (an add whose assign a leader change cut off) is assigned `role`,
  // one with a role keeps it, and both are OK; Aborted instead while the configuration holds an
  // uncommitted change. AlreadyExists when the id is at another address or the address is
  // another id's.
  void AddServer(uint64_t id, std::string address, Role role, Done done);
  void Assign(uint64_t id, Role role, Done done);
  void RemoveServer(uint64_t id, Done done);
  // Hands leadership to voter `id` (0: the most up-to-date voter). OK when this server is no
  // longer the leader (and, for id != 0, `id` is) once raft's transfer ends; Timeout otherwise.
  void TransferLeadership(uint64_t id, Done done);
  // Contract C11 (Raft §8's read index): confirms that this server still leads by committing a
  // barrier entry through a majority, then answers the commit index it had when the request
  // reached the raft thread, which covers every entry any leader committed before the call.
  // Confirmations dispatched while a barrier is in flight share the next one (at most one
  // barrier per commit round trip). FailedPrecondition (naming the leader) when it does not
  // lead or leadership moved meanwhile; Unavailable while a new leader has not committed an
  // entry of its term (C10) and when the barrier failed; ResourceExhausted past kMaxConfirms
  // waiting. A leader cut off from the majority never answers OK (its barrier fails when it
  // steps down, within an election timeout).
  void ConfirmLeadership(IndexDone done);

  State state() const;
  uint64_t id() const { return id_; }

  // Leaves the cluster's traffic (not its configuration: RemoveServer does that), finishes
  // every pending request (contract 7), stops the raft thread. Idempotent.
  // REQUIRES: not called on the raft thread (from a StateMachine method or a done).
  void Stop();

  class Impl;  // the raft-thread half (consensus.cc)

 private:
  explicit Log(uint64_t id);
  const uint64_t id_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace floe::consensus

#endif  // FLOE_CONSENSUS_CONSENSUS_H_
