// The inside of ClusterNode, shared by the files that implement it: cluster_node.cc (transport,
// endpoint, formation, proxy sessions) and cluster_meta.cc (the agreed metadata: its directory,
// Raft's start, the catch-up with the leader's commit index, routing from the applied table and
// the guard). Private to those two files.

#ifndef FLOE_SERVER_INTERNAL_CLUSTER_NODE_IMPL_H_
#define FLOE_SERVER_INTERNAL_CLUSTER_NODE_IMPL_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "base/base.h"
#include "cluster/cluster.h"
#include "consensus/consensus.h"
#include "dkv/dkv.h"
#include "net/net.h"
#include "rpc/rpc.h"
#include "server/internal/analytics_pool.h"
#include "server/internal/chunk_store.h"
#include "server/internal/cluster_node.h"
#include "server/internal/frame_rpc.h"
#include "server/internal/replica_store.h"
#include "server/server.h"

namespace floe::server::internal {

// An exclusive lock on a member's metadata directory, held while the member runs: a second
// `floe serve` of the same member must not touch the log the first one is writing.
class DirectoryLock {
 public:
  DirectoryLock() = default;
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;
  ~DirectoryLock();
  // Takes `dir`'s LOCK; OK at once when this object holds that directory's already.
  Status Take(const std::string& dir);

 private:
  int fd_ = -1;
  std::string dir_;
};

// The first 64 KiB of a file; empty when it cannot be read.
std::string ReadSmallFile(const std::string& path);
// Replaces `path` with `bytes` so that a crash leaves the old file or the new one, never a torn
// or empty one: a temporary file (`path`.tmp), fsync, rename, fsync of the directory.
bool WriteFileDurably(const std::string& path, std::string_view bytes);
// The file a member writes into its metadata directory when it applies its own removal (rule
// J2): one line saying so; a start from a directory holding it is refused
// (RefuseRemovedDirectory), for founders, joined restarts and --join alike.
inline constexpr char kRemovedFile[] = "removed";
Status RefuseRemovedDirectory(const std::string& dir);
// A member's metadata directory: <--dir, default floe-data>/<host>-<cluster port>.
std::string MemberDirectory(const Config& config, const std::string& host, uint16_t port);
// Test-only faults for the cluster transport, from $FLOE_TEST_CLUSTER_FAULTS:
// "drop=0.05,duplicate=0.02,max_delay_us=2000" (docs/cluster.md, "Flags").
Result<net::Faults> FaultsFromEnvironment();
// A joiner's own checks (rule J1), all before it asks, so the cluster commits no member that
// then cannot start: the options and --join, a secret off loopback (CheckSecurity), an address
// the agreed metadata runs on, a free Raft port, $FLOE_TEST_CLUSTER_FAULTS, its directory's
// LOCK, taken into `lock`, and the directory's identity (a log there is this member's: one of
// another cluster, or of a founder, would stop the start after the join was committed).
Status CheckJoinerLocally(const Config& config, const std::string& host, DirectoryLock* lock);
// The cluster id the log in `raft.dir` holds (rule M5), read from the log itself
// (consensus::ReadStoredLog, cluster::ClusterIdOfLog); empty when it holds no log (*holds_log
// says which). The cluster-id file is a cache of it: Unavailable when the file is damaged or
// names another cluster than the log, or when the log does not read. The start (PrepareMeta)
// and a joiner's request (AskToJoin, through ReadJoinersDirectory) take the id from here alike.
// REQUIRES: no Raft runs on the directory.
Result<cluster::ClusterId> ClusterIdOfDirectory(const consensus::Options& raft, bool* holds_log);
// What the directory of the joiner at host:port records (rule J1), sent in its JOIN: the
// cluster id of its log (ClusterIdOfDirectory), so the leader refuses a directory of another
// cluster before it commits anything, and the member id it joined as (its identity file, when
// a log is there; 0: none), so the leader answers it only as that member.
struct JoinersDirectory {
  cluster::ClusterId cluster_id;
  net::NodeId member = 0;
};
Result<JoinersDirectory> ReadJoinersDirectory(const Config& config, const std::string& host,
                                              uint16_t port);
// A joined member's restart (rule J1): when its directory says it joined this cluster at this
// address, holds a log, and keeps the answer it joined with, that answer (the member starts
// from it and its log, asking nobody); nullopt when it must ask. Unavailable for a kept answer
// that is damaged or not this directory's.
Result<std::optional<cluster::JoinAnswer>> JoinedBefore(const Config& config,
                                                        const std::string& host);
// Keeps `answer` in the member's directory for JoinedBefore (a warning when it cannot).
void KeepJoinAnswer(const Config& config, const std::string& host,
                    const cluster::JoinAnswer& answer);
// The members of `answer`, as a member list (ids, addresses).
std::vector<cluster::Member> MembersOf(const cluster::JoinAnswer& answer);

// Rule M4: how many voters a Raft configuration of `servers` voters and eligible learners
// wants: min(5, servers), one fewer when that is even.
size_t VotersWanted(size_t servers);
// Rule M4: whether the leader's configuration `st` still commits once server `id` is removed
// from it or demoted to a learner: a majority of the voters left must have answered the leader
// within `answer_ms` (the leader counts itself). FailedPrecondition names the shortfall;
// Unavailable when a voter was not heard from yet and the leader is too new to tell (a retry
// may pass).
Status KeepsMajorityWithout(const consensus::State& st, uint64_t id, uint64_t answer_ms);
// How long `id` has been silent to the leader whose state is `st` (0 for the leader itself;
// consensus::State::kNeverHeard when it never answered this leader).
uint64_t SilentMs(const consensus::State& st, uint64_t id);

struct ClusterNode::Impl {
  Engine* engine = nullptr;
  // The chunks of frames this member homes (docs/frames_cluster.md, D3); outlives the endpoint
  // whose handlers reach it.
  std::unique_ptr<ChunkStore> chunks;
  // Sends DROP_CHUNKS when a header stored here dies (D10); set at start, stopped by Stop.
  std::shared_ptr<ChunkDropper> dropper;
  void StartDropper(ClusterNode* node);
  Stats* stats = nullptr;
  uint64_t timeout_us = 0;
  // --replicas as this node was started (W19): the agreed table's value holds; a difference is
  // logged once.
  int64_t replicas_asked = 0;
  std::atomic<bool> replicas_told{false};
  uint64_t holder_wait_us = 0;  // the longest a change waits for a holder (L2's bound)
  // The applied table gives slots backups: a home may hold a reply up to twice
  // cluster-node-timeout (docs/replication.md, H5), which a forwarded request waits out.
  std::atomic<bool> makes_backups{false};
  net::AsioLoop loop;
  std::unique_ptr<net::UdpTcpTransport> transport;
  std::unique_ptr<rpc::Endpoint> endpoint;
  std::unique_ptr<cluster::Cluster> cluster;
  DirectoryLock meta_lock;  // outlives meta (declared before it)
  // The agreed metadata: prepared at start, started on the loop when the cloud forms (rule M5),
  // so a member whose HELLO disagrees on anything, the cluster id included, never runs Raft
  // with the others. meta_view is what readers on any thread load (set once, never cleared:
  // meta lives until the node is destroyed).
  Mutex meta_mu;
  std::optional<cluster::MetaOptions> meta_options FLOE_GUARDED_BY(meta_mu);
  std::unique_ptr<cluster::Meta> meta FLOE_GUARDED_BY(meta_mu);
  std::string meta_off FLOE_GUARDED_BY(meta_mu);  // why it is off; empty when on or waiting
  bool meta_stopped FLOE_GUARDED_BY(meta_mu) = false;
  std::atomic<const cluster::Meta*> meta_view{nullptr};
  std::string cluster_id_path;                // <raft dir>/cluster-id
  std::atomic<bool> cluster_id_known{false};  // the directory records it already
  // Whether the metadata has caught up with the leader's commit index (docs/membership.md,
  // "Routing from the agreed table"): key commands are refused until then. Set once, never
  // cleared; true from the start when the metadata is off by configuration.
  std::atomic<bool> meta_caught_up{false};
  // Whether an applied table lists this process's life, set after the roles it gives were
  // taken (docs/replication.md, W1-W2): key commands are refused until then too, so no write at
  // this member's home runs before its Sender owns the slots it replicates. Set once; true from
  // the start when the metadata is off, and at the first table of a cluster that makes no
  // backups (its members record no lives).
  std::atomic<bool> life_listed{false};
  // The cluster id the directory's file held at start (empty: none), and whether an applied
  // table carried another (rule M5, finding (4)): then Raft stops and no key is served, for good.
  cluster::ClusterId recorded_id;
  std::atomic<bool> meta_refused{false};
  // ClusterNode::serving(): formed, caught up, not refused, and holding its ownership lease in
  // a cluster that makes backups (O1).
  bool Serving() const {
    return meta_caught_up.load() && life_listed.load() && !meta_refused.load() && !removed.load() &&
           cluster->formed() && LeaseHeld();
  }

  // ---- Ownership leases and failover (docs/membership.md, O1-O8; cluster_lease.cc) ----
  // O1: in a cluster that makes backups a member serves keys only until lease_until_us
  // (BootMicros), set from a renewal's start once the leader granted it.
  std::atomic<uint64_t> lease_until_us{0};
  bool LeaseHeld() const {
    return !makes_backups.load(std::memory_order_relaxed) ||
           BootMicros() < lease_until_us.load(std::memory_order_acquire);
  }
  uint64_t lease_us = 1'000'000;            // Config::cluster_owner_lease
  std::atomic<bool> leases_stopped{false};  // TEST_StopLeases: a member that seems paused
  // Loop only. A renewal asked and not answered yet; the leader's grants (BootMicros, by member)
  // and when it first saw it lead (0: not leading); when it first saw each member's life
  // listed unsuspected; a failover or a suspicion being cleared, being proposed.
  bool lease_asking = false;
  std::map<net::NodeId, uint64_t> granted_at;
  uint64_t leading_since_us = 0;
  uint64_t leading_term = 0;           // the term leading_since_us belongs to
  uint64_t last_failover_tick_us = 0;  // BootMicros of FailOverSilent's last run
  // (id, life, suspect_epoch) -> when first seen listed unsuspected.
  std::map<std::tuple<net::NodeId, uint64_t, uint64_t>, uint64_t> listed_since;
  net::NodeId failing_over = 0;
  bool clearing_suspicion = false;
  std::atomic<uint64_t> failovers{0};    // FailOver changes this member proposed and committed
  std::set<net::NodeId> suspected_seen;  // Raft thread (OnTable): members seen suspected
  // O1, on the loop every lease_us / 4: asks the leader to renew this member's lease.
  void RenewLease();
  // RPC 308 (O2): at the leader, grants a lease once a majority confirmed the leadership.
  void OnLease(net::NodeId from, std::string_view request, rpc::Reply reply);
  // O4, on the loop at the leader every kPumpEveryUs: fails over a member not granted a lease
  // for a lease and a margin, and silent to Raft as long.
  void FailOverSilent();
  // O7: clears a suspicion once the suspected member asks for a lease with the current table.
  void ClearSuspicion(net::NodeId id, uint64_t life);
  // O1, O5 on the Raft thread after the routes follow `table` (OnTable).
  void LeasesFollow(const cluster::Table& table, net::NodeId self);
  // Rule J2: set once this member's log applies its own RemoveMember (never cleared): it serves
  // no key, its Raft stops, and its directory records the removal (kRemovedFile).
  std::atomic<bool> removed{false};
  // On the Raft thread: the applied table no longer lists this member, which it did.
  void OnRemoved(const cluster::Table& table);
  // Sets `removed` once (any thread but the loop's): logs why, writes kRemovedFile, stops Raft.
  void MarkRemoved(const std::string& when);
  // The answer to kRemoveMemberMethod: a member that does not lead forwards it once; the leader
  // runs LeaderRemove.
  void OnRemoveMember(std::string_view request, rpc::Reply reply);
  // On the leader: RemoveMember (unless the table no longer lists `id`), then FinishRemove.
  void LeaderRemove(cluster::Meta* m, net::NodeId id, rpc::Reply reply);
  // On the leader: RemoveServer(id); NotFound counts as done when the member was removed from
  // the table; a configuration change in progress is retried (`attempts` left).
  void FinishRemove(cluster::Meta* m, net::NodeId id, bool was_member, rpc::Reply reply,
                    int attempts);
  Mutex left_mu;
  std::function<void()> on_left FLOE_GUARDED_BY(left_mu);
  // MarkRemoved runs once, and a second caller returns only once the first has set `removed`
  // (LEAVE's own answer and a removal notice may race).
  Mutex mark_removed_mu;
  std::string removed_why FLOE_GUARDED_BY(left_mu);  // set before `removed`
  // On the Raft thread: the log applies `id`, which is not recorded_id.
  void RefuseClusterId(const cluster::ClusterId& id);
  // Asks the leader its commit index, then waits until this member's log has applied it; on
  // the loop. The leader's answer is kept as the target (each answer costs the leader a
  // confirmation round, consensus C11): asked again only when the leader changes or after
  // kCatchUpAskAgainUs.
  void PollCaughtUp();
  static constexpr uint64_t kCatchUpAskAgainUs = 5'000'000;
  uint64_t catch_up_target = 0;    // loop thread only; 0: none
  uint64_t catch_up_leader = 0;    // who answered it
  uint64_t catch_up_asked_at = 0;  // loop time of the answer
  // Rules M4 and J2, at the leader, on the loop every kKeepVotersEveryUs: removes from Raft a
  // server the table no longer lists (a removal cut off before RemoveServer), else promotes the
  // lowest listed, up learner while there are fewer voters than VotersWanted; one configuration
  // change at a time.
  void KeepVoters();
  static constexpr uint64_t kKeepVotersEveryUs = 500'000;
  bool reconfiguring = false;  // loop thread only
  // Raft's election timeout, set when the metadata starts. raft marks a follower's answer
  // once per election timeout, so a follower's silence is known to within one: a voter counts
  // as answering for a removal or demotion (KeepsMajorityWithout) when silent at most one; a
  // learner is eligible for promotion when silent under three.
  std::atomic<uint64_t> raft_election_ms{1000};
  // Four voters become three only after this long with no eligible learner (M4: a learner that
  // flaps must not make a healthy voter go back and forth).
  std::atomic<uint64_t> demote_after_us{30'000'000};
  uint64_t four_voters_since = 0;  // loop thread only; 0: not four voters without a learner
  uint64_t four_voters_term = 0;   // loop thread only: the Raft term four_voters_since is of
  uint64_t cut_off_warned_at = 0;  // loop thread only: a stalled cut-off removal's warning
  // A learner whose promotion failed is not picked again before not_before (loop time),
  // 5 s after the first failure, doubling up to kPromoteBackoffMaxUs (M4).
  struct PromoteBackoff {
    int failures = 0;
    uint64_t not_before = 0;
  };
  std::map<uint64_t, PromoteBackoff> promote_backoff;  // loop thread only
  static constexpr uint64_t kPromoteBackoffUs = 5'000'000;
  static constexpr uint64_t kPromoteBackoffMaxUs = 120'000'000;
  // Members the leader is removing (J2), by id, until the steady-clock time: never promoted
  // meanwhile (LeaderRemove runs on RPC and pool threads, KeepVoters on the loop).
  Mutex removing_mu;
  std::map<uint64_t, std::chrono::steady_clock::time_point> removing_ids
      FLOE_GUARDED_BY(removing_mu);
  static constexpr std::chrono::seconds kRemovingFor{30};
  void NoteRemoving(uint64_t id);
  void DoneRemoving(uint64_t id);
  bool BeingRemoved(uint64_t id);
  bool AnyBeingRemoved();
  // The leader asked to remove itself (J2): hands leadership to another voter, then answers
  // Unavailable ("retry"), so the asker asks the new leader.
  void HandOverLeadership(cluster::Meta* m, rpc::Reply reply);
  // The answer to kMetaCommitMethod: this member's commit index when it leads its log.
  void OnMetaCommit(rpc::Reply reply);

  // The slot map routing reads (RESP routing and forwarding, the DKV's homes, CLUSTER SLOTS,
  // SHARDS, NODES, COUNTKEYSINSLOT):
  // null until the agreed table first gives a slot another owner than the member list's
  // balanced map (cluster->map()); then the newest map the Raft thread published. Readers on
  // I/O threads take one acquire load and keep the reference for one reply; a published map is
  // immutable and never freed while the node lives (`published` keeps it), so a reader never
  // races its reclamation. A map is published only when an owner changes: none today (nothing
  // proposes it, docs/membership.md), one per committed move once migration comes.
  std::atomic<const cluster::SlotMap*> routes{nullptr};
  Mutex routes_mu;  // the Raft thread's, against a second publisher
  std::vector<std::unique_ptr<const cluster::SlotMap>> published FLOE_GUARDED_BY(routes_mu);
  std::atomic<uint64_t> slots_given_away_with_keys{0};
  // The guard's count of the keys a published table gave away runs here, not on the Raft thread
  // (rule M5, finding (5)): a store of millions of keys must not delay Raft. One thread, started
  // with the node, and a queue of the published tables that gave slots away.
  struct GuardJob {
    uint64_t epoch = 0;
    std::vector<bool> given_away;    // by slot
    std::vector<net::NodeId> homes;  // by slot: the new owner
  };
  Mutex guard_mu;
  std::condition_variable_any guard_wake;
  std::deque<GuardJob> guard_jobs FLOE_GUARDED_BY(guard_mu);
  bool guard_stopping FLOE_GUARDED_BY(guard_mu) = false;
  std::thread guard_thread;
  std::function<void()> guard_hook FLOE_GUARDED_BY(guard_mu);  // tests: before each count
  void GuardLoop();
  void StopGuard();
  const cluster::SlotMap& Routes() const {
    const cluster::SlotMap* m = routes.load(std::memory_order_acquire);
    return m != nullptr ? *m : cluster->map();
  }
  void PublishRoutes(const cluster::Table& table);

  // The frame methods (frame_cluster.cc; docs/frames_cluster.md, "RPC methods"), on handler
  // threads. Each refuses a request of another slot map version (WrongHome, naming both) or
  // while this member does not serve (Unavailable).
  void RegisterFrameMethods();
  Status CheckFrameMapVersion(uint64_t version) const;
  Result<std::string> OnPutChunks(std::string_view request);
  Result<std::string> OnGetChunk(std::string_view request);
  Result<std::string> OnDropChunks(std::string_view request);
  // 314 PUT_HEADER: stores a frame's header at its name's home once no other member holds a
  // copy of the name (C7), never after its deadline (D14). `reply` runs once, on this thread
  // or a handler thread (nowhere once the member stops: its caller waits out its deadline).
  void OnPutHeader(std::string_view request, rpc::Reply reply);
  Result<std::string> OnFrameIdsLive(std::string_view request);
  // 312 MAP_TASK (frame_map.cc; D8): this member maps its own chunks and its subtree's answers
  // are merged in: its own, the left subtree's, the right's. `done` runs once, on an RPC thread
  // or this one. `header` holds the request's header bytes (req.header views it).
  // A member maps its own chunks on `map_pool` (a MAP_TASK from another member: bounded, never
  // on the class-1 handler threads forwarded commands need) or on the calling thread (the
  // coordinator's own part, already on its analytics pool thread: `own_here`).
  void OnMapTask(std::string_view request, rpc::Reply reply);
  void RunMapTask(MapTaskRequest req, std::shared_ptr<const std::string> header,
                  std::function<void(Result<MapTaskAnswer>)> done, bool own_here = false);
  // The member's own maps of MAP_TASKs from others: one thread a core, at most
  // kMaxQueuedAnalytics waiting (more are refused BUSY, the coordinator reports it). Shut down
  // by Stop before anything they read goes.
  std::unique_ptr<AnalyticsPool> map_pool;
  std::atomic<uint64_t> map_tasks{0};  // MAP_TASKs run here (tests)
  // Tests: run by each MAP_TASK here once its halves are sent, before it maps its own chunks.
  Mutex map_hook_mu;
  std::function<void()> map_hook FLOE_GUARDED_BY(map_hook_mu);
  // The periodic orphan sweep, on the loop: one SweepChunks, then again in kChunkSweepUs.
  void SweepTick(ClusterNode* node);

  // At start, before formation: checks the metadata directory and the Raft port, and keeps the
  // options Raft starts with (or why it is off); *cluster_id and *holds_log as PrepareMeta's.
  // `joined`: the member joined a running cluster (rule J1): no bootstrap configuration, no
  // founders, and its directory is its own ("joined as <address>", not the member list).
  Status PrepareMetaAtStart(const Config& config, const std::vector<cluster::Member>& members,
                            net::NodeId self, bool joined, cluster::ClusterId* cluster_id,
                            bool* holds_log);
  // A joined member's view of the others' client ports, from the leader's answer (founders'
  // come from their HELLOs, which it never exchanges); fixed after Start.
  std::map<net::NodeId, uint16_t> joined_client_ports;
  void StartMeta();
  // On the Raft thread, after each applied change: the table's cluster id into HELLO and the
  // directory (rule M5).
  void OnTable(const std::shared_ptr<const cluster::Table>& table);
  // Rule J1: what the leader compares a JOIN with (the node's cluster name and secret).
  cluster::JoinPolicy join_policy;
  // The answer to kJoinMethod (RPC 101): a member that does not lead forwards the request to the
  // leader once; the leader checks it, commits AddMember and adds the node to Raft as a learner.
  void OnJoin(net::NodeId from, std::string_view request, rpc::Reply reply);
  // Rule J1, one join of a token at a time per member, at most kMaxJoinsInFlight joins at once:
  // each join in flight here by its token, with its ticket (so a late answer of one whose place
  // expired frees nothing) and when it was taken.
  static constexpr size_t kMaxJoinsInFlight = 16;
  struct JoinInFlight {
    uint64_t ticket = 0;
    std::chrono::steady_clock::time_point since;
  };
  Mutex join_mu;
  std::map<uint64_t, JoinInFlight> joins_in_flight FLOE_GUARDED_BY(join_mu);
  uint64_t join_ticket FLOE_GUARDED_BY(join_mu) = 0;
  std::atomic<uint64_t> joins_proposed{0};  // AddMember proposals of this member as leader
  // Takes a place for the join of `token` and returns its ticket; or the Unavailable ("retry")
  // a join is answered with while one of the same token runs, or kMaxJoinsInFlight do.
  Result<uint64_t> TakeJoinPlace(uint64_t token);
  void FreeJoinPlace(uint64_t token, uint64_t ticket);
  // A leader's FailedPrecondition to `request`, with the refusal's MAC (SignJoinRefusal).
  Status SignedRefusal(const Status& refusal, const cluster::JoinRequest& request) const;
  // On the leader: adds member `id` (of `request`) to Raft as a learner, then answers; a
  // configuration change in progress is retried (`attempts` left). Runs on the Raft thread or
  // the loop, so it takes `m` (which lives as long as the node) and never meta_mu: the loop
  // holds meta_mu while it stops Raft (RefuseClusterId), which joins the Raft thread.
  void FinishJoin(cluster::Meta* m, net::NodeId id, const cluster::JoinRequest& request,
                  rpc::Reply reply, int attempts);
  // Rule V4: the RPC peers and transport addresses follow the applied table's members. Only the
  // loop thread touches it (OnTable posts there: the transport's SetPeer runs on the loop).
  std::map<net::NodeId, cluster::Member> table_peers;
  // A member that left the table stays an RPC peer this long (rule J2): the leader's answer to
  // its CLUSTER LEAVE, sent once Raft has removed it too, still reaches it.
  static constexpr uint64_t kRemovedPeerGraceUs = 15'000'000;
  // `epoch` and `cluster_id` are the applied table's that lists `members`; a member it no
  // longer lists is told so (TellRemoved).
  void FollowMembers(std::vector<cluster::Member> members, uint64_t epoch,
                     cluster::ClusterId cluster_id);
  // Rule J2: tells member `notice.id`, which the applied table no longer lists, that it was
  // removed (RPC 304), every second until it answers or `until` (loop time): its own log may
  // never apply the removal (cut off, or its Raft left the configuration first).
  void TellRemoved(RemovedNotice notice, uint64_t until);
  static constexpr uint64_t kTellRemovedEveryUs = 1'000'000;
  // The answer to RPC 304 (on a handler thread): checks the notice names this member, its
  // cluster, and an epoch past this member's own table that lists it; then MarkRemoved.
  Result<std::string> OnRemovedNotice(net::NodeId from, std::string_view request);
  dkv::Dkv::Slot dkv_slot = dkv::Dkv::MakeSlot();  // the endpoint's lease hook reaches it
  std::unique_ptr<dkv::Dkv> dkv;                   // destroyed before the endpoint
  uint64_t dkv_start_grace_us = 0;  // rule L4's; a promotion's writes wait as long (W13)
  std::atomic<bool> stopped{false};

  // A forwarded request and where its answer goes (the RPC layer's, answered once).
  struct Pending {
    net::NodeId from = 0;
    ForwardRequest req;
    rpc::Reply reply;
  };
  // A deferred command's reply (ticket, bytes), as the session's reply sink hands it.
  using Deferred = std::pair<uint64_t, std::string>;
  struct Proxy {
    // A client's requests run one after the other, even when its node stopped waiting for one
    // (CLUSTERDOWN at the deadline) and sent the next while the first still ran here (a command
    // then joined an unfinished MULTI): one that comes while another runs waits in `waiting`.
    // A command that defers its reply (Session::Execute false: rule C7, frames analytics)
    // parks the request; the session's reply sink resumes it on an RPC handler thread
    // (RunProxy), so no thread and no worker lock is held while it waits.
    // Dropped (CLIENT KILL, a CLOSE, idle, its node's restart) while a request is parked or
    // waits behind one: each is answered with an error (the replies of the commands that ran,
    // then an error for each that did not) rather than left to its node's deadline.
    ~Proxy();
    Mutex mu;
    std::unique_ptr<Session> session;
    int64_t last_used_ms = 0;  // under proxies_mu
    std::deque<Pending> waiting FLOE_GUARDED_BY(mu);
    bool running FLOE_GUARDED_BY(mu) = false;  // a thread runs the requests, or one is parked
    bool parked FLOE_GUARDED_BY(mu) = false;   // the running request waits for the sink
    // A deferred reply that came before the thread that ran its command had parked.
    std::optional<Deferred> arrived FLOE_GUARDED_BY(mu);
    // The running request; touched only by the thread running it (`running` hands it over).
    uint64_t last_seq = 0;  // the newest request that ran
    std::optional<Pending> current;
    size_t next = 0;  // its first command not run yet
    std::string out;  // its framed replies so far
  };
  // Where a parked request resumes: an RPC handler thread of the forwarded commands' class.
  // Shared with the sessions' reply sinks, which may run after the node stopped.
  struct ProxyResumer {
    Mutex mu;
    rpc::Endpoint* endpoint FLOE_GUARDED_BY(mu) = nullptr;  // null once the node stopped
  };
  std::shared_ptr<ProxyResumer> resumer = std::make_shared<ProxyResumer>();

  // The replication stream (docs/replication.md, wiring step 3, W1-W4; cluster_replication.cc).
  // Registers RPC 305 and 320 and the capture's wake (before the endpoint starts).
  void RegisterReplication();
  // W1, on the loop every kRecordLifeEveryUs until the applied table lists this process's life.
  void RecordLife();
  static constexpr uint64_t kRecordLifeEveryUs = 500'000;
  void OnRecordLife(net::NodeId from, std::string_view bytes, rpc::Reply reply);
  // For a request the Raft leader must take (RPC 305, 306): the agreed metadata when this
  // member leads it; otherwise null, the request having been sent to the leader with `method`
  // (the bytes `forward` makes) unless it was `forwarded` already or no leader is known, when
  // `reply` is answered Unavailable.
  cluster::Meta* LeaderOrForward(uint16_t method, bool forwarded,
                                 const std::function<std::string()>& forward, rpc::Reply& reply);
  // W3: a REPLICATE from a slot's owner, on a class-2 handler thread.
  Result<std::string> OnReplicate(std::string_view bytes);
  // RPC 320's handler, on the receiving thread: installs a quick message there, hands the
  // others to a handler thread (OnReplicate).
  void OnReplicateInline(std::string_view bytes, rpc::Reply reply);
  // W4: sends the next REPLICATE to each backup that is ready; on the loop.
  void PumpReplication();
  void OnReplicateAnswer(uint32_t backup, uint64_t message, Result<std::string> answer);
  void ReplicationTick();  // on the loop every kPumpEveryUs: a wake nothing else gave
  static constexpr uint64_t kPumpEveryUs = 100'000;
  // After a REPLICATE that failed: the pause doubles from the first to the last, and a backup
  // waits out its pause before it is sent more (loop thread only).
  static constexpr uint64_t kRetryAfterUs = 100'000;
  static constexpr uint64_t kRetryAtMostUs = 1'000'000;
  static constexpr uint64_t kResumeAfterUs = 50'000;  // behind, full, not my life
  struct Backoff {
    uint64_t delay_us = 0;
    uint64_t retry_at = 0;
  };
  std::map<uint32_t, Backoff> replica_backoff;  // loop thread only
  // S12's fills at this owner (cluster_fill.cc, rules F6-F7, W6-W8), on the loop: the tick,
  // an answer while a pass runs and a step whose time ran out post a step (one at a time).
  void DriveFills();
  void PostFillStep(uint64_t after_us);
  void BeginWantedFills(replica::Sender& sender);
  void AskInSync(Replication& r, const std::vector<replica::Sender::FillState>& fills);
  // RPC 306 (any handler thread): the leader commits BackupInSync; others forward it once.
  void OnBackupInSync(net::NodeId from, std::string_view bytes, rpc::Reply reply);
  static constexpr uint64_t kInSyncAgainUs = 200'000;
  // B6 at the leader, on the loop every kRepairEveryUs in a cluster that makes backups: the
  // planner's backup repairs (filling backups where a slot has too few in sync, cluster::Plan
  // with no moves), one change at a time.
  void RepairBackups();
  static constexpr uint64_t kRepairEveryUs = 500'000;
  bool repair_proposing = false;  // loop only
  // One pass of the store for one backup: the slots it reads, the keys its last read found
  // and not yet taken, and the puts read, by slot, not yet handed to the Sender.
  struct FillPass {
    bool started = false;
    bool scanned = false;  // the cursor came back to 0
    uint64_t cursor = 0;
    std::map<uint16_t, replica::Sender::FillTicket> slots;
    std::deque<std::string> keys;
    std::map<uint16_t, std::vector<CapturedState>> batches;
    std::map<uint16_t, uint64_t> batch_bytes;
    uint64_t buffered = 0;  // the sum of batch_bytes
  };
  std::map<uint32_t, FillPass> fill_passes;  // by backup; loop only
  std::set<uint64_t> fills_scanned;          // fill ids whose last batch was added; loop only
  bool fill_step_posted = false;             // loop only
  bool fills_begin_pending = false;          // a wanted fill found a message in flight; loop only
  bool in_sync_asking = false;
  uint64_t in_sync_next_us = 0;
  // B7 at an owner (cluster_backup_down.cc, W15), on the loop from ReplicationTick: a backup
  // waited for whose progress stood still, or that the RPC layer found down, for
  // cluster-node-timeout is reported to the leader (RPC 307) until the table drops it.
  void WatchBackups(Replication& r);
  void ReportBackupDown(uint32_t backup, uint64_t life);
  // RPC 307 (any handler thread): the leader removes the reported backups (W16).
  void OnBackupDown(net::NodeId from, std::string_view bytes, rpc::Reply reply);
  // The members the leader has not heard from within cluster-node-timeout (W17); empty unless
  // this member leads.
  std::vector<net::NodeId> Unheard(const consensus::State& st, const cluster::Table& table) const;
  struct BackupWatch {
    uint64_t life = 0;
    uint64_t progress = 0;
    uint64_t still_since_us = 0;  // waited for, with no progress, since
    uint64_t down_since_us = 0;   // PeerUp false since (0: up)
    uint64_t next_report_us = 0;
    uint32_t next_slot = 0;  // where the next report starts (after a full one)
    bool told = false;       // its first report was logged
  };
  std::map<uint32_t, BackupWatch> backup_watch;  // by backup; loop only
  bool backup_down_asking = false;               // loop only
  // At the leader: when it last dropped each member as a backup. For this long such a member is
  // not picked as a new filling backup, so a backup that is slow but alive is not dropped and
  // refilled over and over (a first piece of B8's --replica-delay). Loop only.
  std::map<net::NodeId, uint64_t> dropped_at;
  static constexpr uint64_t kPickAgainAfterUs = 30'000'000;
  // The capture's wake (any thread): one pump posted at a time. Shared with the hook the
  // engine's Replication keeps, which may run after the node stopped.
  struct Waker {
    std::atomic<bool> scheduled{false};
    Mutex mu;
    Impl* impl FLOE_GUARDED_BY(mu) = nullptr;  // null once the node stopped
  };
  std::shared_ptr<Waker> waker = std::make_shared<Waker>();
  static void Wake(const std::shared_ptr<Waker>& waker);
  // Proxy sessions by (node, client id). Guarded by proxies_mu; a session itself runs under
  // the engine's proxy worker lock (Session::Execute takes it).
  Mutex proxies_mu;
  using ProxyKey = std::pair<net::NodeId, uint64_t>;  // node, client
  std::map<ProxyKey, std::shared_ptr<Proxy>> proxies FLOE_GUARDED_BY(proxies_mu);
  struct Peer {
    // Its newest incarnation seen; every proxy of it in `proxies` belongs to that one. A node
    // that restarted numbers its clients from 1 again: the sessions of its previous life are
    // dropped (their clients are gone), never handed to its new clients.
    uint64_t origin = 0;
    // Its proxy sessions here: at most maxclients, as it has at most that many clients (a
    // limit on all proxies together refused clients of a node that had few, once the others'
    // filled it).
    int64_t proxies = 0;
  };
  std::map<net::NodeId, Peer> peers FLOE_GUARDED_BY(proxies_mu);
  int64_t last_sweep_ms FLOE_GUARDED_BY(proxies_mu) = 0;

  void OnCommand(net::NodeId from, std::string_view bytes, rpc::Reply reply);
  // Runs `p`'s requests until none waits or one parks; `resumed`: the reply that ends a park.
  // Called by the thread that set `running`, or by a job the reply sink posted.
  void RunProxy(const std::shared_ptr<Proxy>& p, std::optional<Deferred> resumed);
  // RunProxy's loop over the requests, until one parks or none waits; may throw (bad_alloc).
  void RunProxyRequests(const std::shared_ptr<Proxy>& p, std::optional<Deferred>& resumed);
  // Answers the running request, if any, with an unknown outcome for each command, after a throw.
  void FailCurrentRequest(Proxy& p) noexcept;
  // Drops the proxy session `key` if it is still `session` (not a later one with its key).
  void DropProxy(std::pair<net::NodeId, uint64_t> key, const Session* session);
  void OnClose(net::NodeId from, std::string_view bytes);
  void SweepIdle(int64_t now_ms) FLOE_REQUIRES(proxies_mu);
  using ProxyMap = decltype(proxies);
  ProxyMap::iterator Drop(ProxyMap::iterator it) FLOE_REQUIRES(proxies_mu);
};

}  // namespace floe::server::internal

#endif  // FLOE_SERVER_INTERNAL_CLUSTER_NODE_IMPL_H_
