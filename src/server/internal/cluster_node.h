// The node's part in a cluster (docs/cluster.md): the transport, the RPC endpoint and the
// Cluster that forms the cloud, and the forwarding of a client's command to the home of its
// keys, where it runs in a proxy session for that client. Private to server/.
//
// Thread rules: every public member is thread-safe. Forward's `done` runs on an RPC thread; the
// proxy sessions run on the endpoint's handler threads under the engine's proxy worker lock, and
// a command there that defers its reply holds neither while it waits (cluster_node_impl.h).

#ifndef FLOE_SERVER_INTERNAL_CLUSTER_NODE_H_
#define FLOE_SERVER_INTERNAL_CLUSTER_NODE_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/base.h"
#include "cluster/cluster.h"
#include "dkv/dkv.h"
#include "frame/frame.h"
#include "rpc/rpc.h"
#include "server/internal/frame_rpc.h"
#include "server/server.h"

namespace floe::server::internal {

class ChunkDropper;
class ChunkStore;

// RPC method ids 300-319 are the server's (docs/wire.md, "Forwarded commands").
inline constexpr uint16_t kCommandMethod = 300;       // run commands in a proxy session
inline constexpr uint16_t kCloseSessionMethod = 301;  // the client left: drop its proxy session
// The leader's commit index of the agreed metadata (docs/membership.md, "Routing from the agreed
// table"): an empty request; the answer is a varint, from a member that leads its log only.
inline constexpr uint16_t kMetaCommitMethod = 302;
// Removes a member (docs/membership.md, rule J2): the request is the member's id (a varint), the
// answer empty; the leader of the agreed metadata commits RemoveMember then RemoveServer, a
// member that does not lead forwards it there once.
inline constexpr uint16_t kRemoveMemberMethod = 303;
// Strings up to this size are handed out as cached copies (rule C7); larger ones are read at
// their home every time (a copy would double what a miss moves).
inline constexpr size_t kCacheValueMax = 64 * 1024;

// Redis Cluster names every node with 40 hex characters. A member's name is derived from its
// cluster address, so every node gives every member the same name (CLUSTER NODES, MYID).
std::string NodeName(const cluster::Member& member);

// What a forwarded request carries (docs/wire.md, "Forwarded commands").
struct ForwardRequest {
  // The sending node's RPC incarnation (its start time, higher after each restart): a client id
  // is unique only within it, and a home drops the proxy sessions of a node's earlier life.
  uint64_t origin = 0;
  uint64_t client = 0;  // the client's id at the sending node (with origin, the proxy's key)
  // Numbers the client's requests to this home from 1. A request that arrives after a later
  // one ran (its node gave up on it: CLUSTERDOWN) is refused, never run out of order (rule C3).
  uint64_t seq = 0;
  // The sending node's monotonic clock when it sent the request, after it dropped its copies of
  // the keys the request's writes change: its holder records from before need no invalidation
  // (docs/coherence.md, X4), and copies it asks for are recorded as asked then.
  uint64_t sent_us = 0;
  uint8_t protocol = 2;  // the client's RESP version: the replies come back in it
  // The client WATCHes keys at this home (before these commands run). A proxy session that
  // has none (the home restarted, or dropped it idle) then aborts the client's next EXEC, as
  // a changed watched key would: the watch can no longer be checked.
  bool watching = false;
  std::vector<std::vector<std::string>> commands;
  // Commands (their indices, increasing) that read one key and whose key the sender wants a
  // cached copy of (rule C8): the answer carries a DKV GET answer for each after the replies.
  std::vector<uint32_t> copies;
  // Commands (their indices, increasing, each at least 1) that continue the entry of the one
  // before them: the home never stops before one at its answer budget (docs/cluster.md, C9).
  std::vector<uint32_t> continues;
};
// Bounds on a forwarded request (docs/wire.md): the sender refuses a request beyond them with
// an error to its client (ForwardFits), so an honest node never sends more.
inline constexpr uint64_t kMaxForwardCommands = 1u << 20;
inline constexpr uint64_t kMaxForwardArgs = 1u << 24;
bool ForwardFits(const std::vector<std::vector<std::string>>& commands);
std::string EncodeForward(const ForwardRequest& request);
// Strict: Corruption for truncated or trailing bytes, a protocol other than 2 or 3, no command,
// an empty command, or counts beyond the limits of docs/wire.md.
Result<ForwardRequest> DecodeForward(std::string_view bytes);
// RPC 303's request (docs/wire.md, "Removing a member"): the member to remove, and whether a
// member forwarded it to the leader. Decode: Corruption for anything but two varints, the
// second 0 or 1 (the id is checked by the leader).
struct RemoveRequest {
  uint64_t id = 0;
  bool forwarded = false;
};
std::string EncodeRemoveRequest(const RemoveRequest& request);
Result<RemoveRequest> DecodeRemoveRequest(std::string_view bytes);
// Records a member's life (docs/replication.md, W1): the request is the member's id, its life
// and whether a member forwarded it (varint, varint, byte 0 or 1), the answer empty; the leader
// commits Restarted{id, life}, a member that does not lead forwards it there once. A member asks
// for itself only (a forwarded request names whom it is for). Decode: Corruption for anything
// else, an id of 0 or a life of 0.
inline constexpr uint16_t kRecordLifeMethod = 305;
struct RecordLifeRequest {
  uint64_t id = 0;
  uint64_t life = 0;
  bool forwarded = false;
};
std::string EncodeRecordLife(const RecordLifeRequest& request);
Result<RecordLifeRequest> DecodeRecordLife(std::string_view bytes);
// Asks the leader to make filled backups in sync (docs/replication.md, wiring step 5, rule F7):
// the owner's id and life, whether a member forwarded it, and per slot the version the owner's
// table has, the backup and the n its fill's end reached (BackupInSync's seq). The answer is
// empty; the leader commits one BackupInSync of every item the table still allows, a member
// that does not lead forwards it there once. Decode: Corruption for anything else, an id or
// life of 0, an owner or backup of 0 or at kFirstReservedId and above, no item or more than
// kMaxInSyncItems, a slot past 16,383 or named twice.
inline constexpr uint16_t kBackupInSyncMethod = 306;
inline constexpr size_t kMaxInSyncItems = 1024;
struct InSyncItem {
  uint16_t slot = 0;
  uint64_t version = 0;
  uint64_t backup = 0;
  uint64_t n = 0;
  friend bool operator==(const InSyncItem&, const InSyncItem&) = default;
};
struct BackupInSyncRequest {
  uint64_t owner = 0;
  uint64_t life = 0;
  bool forwarded = false;
  std::vector<InSyncItem> items;
  friend bool operator==(const BackupInSyncRequest&, const BackupInSyncRequest&) = default;
};
std::string EncodeBackupInSync(const BackupInSyncRequest& request);
Result<BackupInSyncRequest> DecodeBackupInSync(std::string_view bytes);
// Reports backups that confirmed nothing for cluster-node-timeout (docs/replication.md, W15-W16):
// the layout of RPC 306, each item's `n` being the backup's life, one backup per request. The
// answer lists the slots whose item named a version the leader's table no longer has (sent
// again at once with the owner's newer one, EncodeSlotList); the leader commits one SetBackups
// without the backups it may remove, a member that does not lead forwards it there once.
inline constexpr uint16_t kBackupDownMethod = 307;
using BackupDownRequest = BackupInSyncRequest;
// Asks the Raft leader for an ownership lease (docs/membership.md, O1-O2): the member's id, its
// life, the epoch of the table it has applied and whether a member forwarded it (four varints,
// the last 0 or 1). The answer is empty, sent once a majority confirmed the leadership after the
// request came; a member that does not lead forwards it there once. Decode: Corruption for
// anything else, an id of 0 or a life of 0.
inline constexpr uint16_t kLeaseMethod = 308;
struct LeaseRequest {
  uint64_t id = 0;
  uint64_t life = 0;
  uint64_t epoch = 0;
  bool forwarded = false;
  friend bool operator==(const LeaseRequest&, const LeaseRequest&) = default;
};
std::string EncodeLeaseRequest(const LeaseRequest& request);
Result<LeaseRequest> DecodeLeaseRequest(std::string_view bytes);
// Slots, ascending and distinct. Decode: Corruption for more than kMaxInSyncItems, a slot past
// 16,383, disorder or trailing bytes.
std::string EncodeSlotList(const std::vector<uint16_t>& slots);
Result<std::vector<uint16_t>> DecodeSlotList(std::string_view bytes);
// RPC 304's request (docs/wire.md, "Telling a member it was removed"): the member whose applied
// table no longer lists `id` tells it so, with that table's epoch and cluster id. Decode:
// Corruption for anything but two varints and 16 bytes.
inline constexpr uint16_t kRemovedNoticeMethod = 304;
struct RemovedNotice {
  uint64_t id = 0;
  uint64_t epoch = 0;
  cluster::ClusterId cluster_id;
};
std::string EncodeRemovedNotice(const RemovedNotice& notice);
Result<RemovedNotice> DecodeRemovedNotice(std::string_view bytes);
// The answer: each command's reply, length-prefixed, in order; then one frame per entry of
// `copies` (empty: no copy). Once the replies reach kForwardAnswerBudget the home runs no more
// commands outside a transaction: each command it did not run answers an empty frame, and the
// sender sends those again (docs/cluster.md, C9).
inline constexpr size_t kForwardAnswerBudget = size_t{64} << 20;
// The budget in force: kForwardAnswerBudget, or a test's (the same on every member of the
// process, and for the client's hold).
size_t ForwardAnswerBudget();
void TEST_SetForwardAnswerBudget(size_t bytes);
// Called with true as a thread starts running a proxy session's requests (RunProxy) and with
// false as it stops; null (the default) for none. Process-wide, for tests that make memory run
// out there (alloc_failure_test).
void TEST_SetProxyRunHook(void (*hook)(bool entering));
void AppendFramedReply(std::string_view reply, std::string* answer);
// Corruption unless `answer` holds exactly `n` framed replies.
Result<std::vector<std::string>> DecodeFramedReplies(std::string_view answer, size_t n);

// The clients connected to this node: the engine's sessions but the proxy sessions it runs for
// other nodes' clients (they have a limit of their own, and are not connections here).
int64_t ConnectedClients(const Engine& engine);

// How ClusterNode::PutFrameChunks reports and stops.
struct FramePutOptions {
  std::function<void(uint64_t bytes_put)> sent;
  const std::atomic<bool>* cancel = nullptr;
  uint64_t batch_bytes = 0;  // a request's column bytes at most; 0: kPutBatchBytes (8 MiB)
};

// Rule J1, the joiner's side: asks the member at config.join (as rpc's stranger, from this
// node's cluster port on `host`) to add this node, again every 500 ms while the answer is
// "retry" or none, for at most `limit_us` (10 s). FailedPrecondition naming what the leader
// refused ("cluster-name 'a', ours 'b'", "cluster secret differs (--cluster-secret)", ...);
// Unavailable when no member answered in time. The join token is kept in the member's
// directory (<dir>/<host>-<port>/join-token), so a restart is answered as its own join.
Result<cluster::JoinAnswer> AskToJoin(const Config& config, const std::string& host,
                                      uint16_t client_port, uint64_t limit_us = 10'000'000);

class ClusterNode {
 public:
  struct Stats {
    std::atomic<uint64_t> forwarded{0};         // requests sent to homes
    std::atomic<uint64_t> forward_failures{0};  // ... that got no answer (CLUSTERDOWN)
    std::atomic<uint64_t> proxied{0};           // requests run here for other nodes
    std::atomic<uint64_t> proxy_sessions{0};    // open now
    // Requests run here that memory ran out answering (each command: unknown outcome).
    std::atomic<uint64_t> proxy_failures{0};
    // Rule C9: requests run here that stopped at the answer budget, and homes held back by a
    // client of this node until it read its replies.
    std::atomic<uint64_t> answers_cut{0};
    std::atomic<uint64_t> forwards_held{0};
  };

  // Starts the transport, the endpoint and formation from config's cluster settings (a non-
  // empty config.cluster), and makes itself the engine's node (Engine::set_cluster) before
  // its endpoint starts. `client_port` is the bound RESP port. Before the node is destroyed:
  // Stop(), then engine->set_cluster(nullptr). Fails for a bad member list,
  // a node that is not in it, a missing secret off loopback, or a port that cannot be bound.
  static Result<std::unique_ptr<ClusterNode>> Start(Engine* engine, const Config& config,
                                                    int client_port);
  ~ClusterNode();
  ClusterNode(const ClusterNode&) = delete;
  ClusterNode& operator=(const ClusterNode&) = delete;

  bool formed() const;
  net::NodeId self() const;
  // The slot map routing reads (docs/membership.md, step 1): the member list's balanced map
  // until the agreed table is applied, then the table's owners (equal until something changes
  // them). An immutable snapshot, valid while the node lives; a later table publishes another.
  const cluster::SlotMap& map() const;
  // Slots the agreed table gave to another node while keys of them were here (the guard: they
  // stay here, served by nobody; docs/membership.md).
  uint64_t slots_given_away_with_keys() const;
  // AddMember proposals this member made as the leader, one per join it committed or tried
  // to (docs/membership.md J1: a replayed JOIN proposes nothing beside its original).
  uint64_t joins_proposed() const;
  // Tests only: the running metadata (null until formation), to propose changes directly.
  cluster::Meta* TEST_meta();
  // Tests: how long four voters without an eligible learner wait before one becomes a learner
  // (M4; 30 s by default).
  void TEST_SetDemoteAfter(std::chrono::microseconds after);
  // Tests: answers a removal notice (RPC 304, J2) as if member `from` had sent it here.
  Result<std::string> TEST_RemovedNotice(net::NodeId from, std::string_view request);
  // Tests: runs a JOIN (RPC 101, docs/membership.md J1) as if a joiner had sent it here.
  void TEST_Join(std::string request, std::function<void(Result<std::string>)> done);
  // Tests: answers a report of a backup that is down (RPC 307, docs/replication.md W16) as if
  // member `from` had sent it here.
  void TEST_BackupDown(net::NodeId from, std::string request,
                       std::function<void(Result<std::string>)> done);
  // Tests: stops (or resumes) asking for ownership leases, as a paused member would
  // (docs/membership.md, O1): its lease lapses and the leader fails it over.
  void TEST_StopLeases(bool stop);
  // Tests: answers an ownership lease request (RPC 308, O2) as if member `from` had sent it.
  void TEST_Lease(net::NodeId from, std::string request,
                  std::function<void(Result<std::string>)> done);
  // O1: what is left of this member's ownership lease (0 in a cluster without backups), and
  // the failovers this member committed as the Raft leader (INFO cluster).
  uint64_t lease_left_ms() const;
  uint64_t failovers() const;
  // Tests only, before any table gives a slot away: runs on the guard thread before each count
  // of the keys a published table gave away.
  void TEST_SetGuardHook(std::function<void()> hook);
  const cluster::Cluster& cluster() const;
  // Every member, in id order: the founders (cluster().Members()) and then the members the
  // agreed table added since (rule J1), which count as agreed, up as the RPC heartbeats say.
  std::vector<cluster::Cluster::MemberState> Members() const;
  const rpc::Stats& rpc_stats() const;
  // The agreed metadata this member runs (docs/membership.md, rule M1): null until the cloud
  // forms (rule M5: Raft starts then) and when off; then meta_off() says why (a member with an
  // IPv6 address), empty while it waits for formation; and, with meta() set, why the running
  // metadata was stopped (its log applies another cluster id than the directory's file).
  const cluster::Meta* meta() const;
  std::string meta_off() const;
  const Stats& stats() const { return stats_; }
  Stats& stats() { return stats_; }
  // The home of a key's slot under map(); 0 before formation.
  net::NodeId Home(uint16_t slot) const;
  // "-CLUSTERDOWN The cluster is not formed: <first reason>" (without the '-').
  std::string NotFormedError() const;
  // Whether key commands are served: formed, and the agreed metadata caught up with the leader's
  // commit index (or off by configuration everywhere); docs/membership.md, "Routing from the
  // agreed table". Cheap once true (an atomic load).
  bool serving() const;
  // Whether the agreed metadata has caught up (true when it is off by configuration).
  bool meta_caught_up() const;
  // The applied table lists this process's life (docs/replication.md, W1): a backup takes
  // changes only then.
  bool life_recorded() const;
  // Why a key command is refused when !serving(): NotFormedError() before formation, then
  // "CLUSTERDOWN The cluster is down" (Redis's text).
  std::string DownError() const;
  // Sends the commands to `home`'s proxy session for the client; `done` gets the reply bytes,
  // or an error status when the home does not answer within cluster-node-timeout (plus, when
  // `changes`, the longest a change may wait for a cut-off holder's lease: rule C7).
  void Forward(net::NodeId home, const ForwardRequest& request, bool changes,
               std::function<void(Result<std::string>)> done) {
    ForwardEncoded(home, EncodeForward(request), changes, std::move(done));
  }
  // The same, of a request already encoded (EncodeForward).
  void ForwardEncoded(net::NodeId home, std::string request, bool changes,
                      std::function<void(Result<std::string>)> done);
  // The client left: its proxy session at `home` is dropped (send it after the client's last
  // request to that home has been answered, or it may overtake it).
  void CloseProxy(uint64_t client, net::NodeId home);
  // Cached copies of keys homed elsewhere, and the holders of this node's keys
  // (docs/cluster.md, "Reads from cached copies"): the DKV over the engine's store.
  dkv::Dkv& dkv();
  const dkv::Dkv& dkv() const;
  // Frames in a cluster (docs/frames_cluster.md): this member's chunk store (D3), and a call of
  // one of the frame methods (310-315, internal/frame_rpc.h) to `peer` with cluster-node-timeout
  // as its deadline; `done` runs once, on an RPC thread (or at once when the call cannot start).
  // A call to this member itself runs its handler on the calling thread; PUT_HEADER's may answer
  // later, on another thread, once other members' copies of the name are gone (C7), and its
  // deadline is ChangeTimeoutUs (the others': cluster-node-timeout).
  ChunkStore& chunks();
  // Tests only: what sends DROP_CHUNKS when a header stored here dies.
  ChunkDropper& TEST_dropper();
  void CallFrame(net::NodeId peer, uint16_t method, std::string request,
                 std::function<void(Result<std::string>)> done);
  // How long a change at a home may take to answer: cluster-node-timeout plus the longest wait
  // for a cut-off holder's lease (C7). PUT_HEADER's deadline.
  uint64_t ChangeTimeoutUs() const;
  // Stores a frame's header (encoded) at `key`'s home by PUT_HEADER (D4, D14) and waits for the
  // answer, at most ChangeTimeoutUs plus kPutHeaderMarginUs. `exclusive_here`: when the home is
  // this member, the call starts inside that engine's exclusive section (between any two
  // commands, as a one-node store runs; only from a thread holding no worker lock). OK when
  // stored; the home's refusal as it is (nothing stored: the caller drops the frame's chunks);
  // TRYAGAIN when the slot moved; else (no answer) D9's CLUSTERDOWN text with *unknown set: the
  // header may or may not be stored, and the chunks are left to D10's sweep. Blocks its thread.
  Status PutHeader(std::string_view key, bool replace, std::string header, Engine* exclusive_here,
                   bool* unknown);
  // A map/reduce over a cluster frame's chunks (D8, frame_map.cc): MAP_TASK `op` down the tree
  // of the members (this one the root), its answers merged in member order, then checked to
  // have mapped exactly the header's chunks, once each, with their rows ("ERR frame <name> is
  // missing chunk k at member N" otherwise). A member that does not answer within
  // cluster-node-timeout fails it with D9's CLUSTERDOWN text. Blocks its thread (the analytics
  // pool's). `task`: the operation and its arguments (the rest is filled in here).
  // `cancel` (the client's, may be null): once set, the wait ends with Cancelled; the members
  // finish their part within its budget and their answer is dropped.
  Result<MapTaskAnswer> MapFrame(const FrameHeader& h, std::string_view name, MapTaskRequest task,
                                 const std::atomic<bool>* cancel = nullptr);
  // A derived frame of a cluster frame (D6: FRAME.SELECT, FRAME.FILTER; frame_map.cc): `task`
  // (kSelect or kFilter, its out_id and out_header_slot set) run by MapFrame, each member putting
  // the output chunks it makes in its own chunk store, then the output's header (id, the
  // source's group, the columns' names, types, domains and NA counts, each chunk's figures) made
  // from the answers. On any failure every member is asked to drop the output's chunks (D10)
  // and the failure returned. The caller stores the header (PUT_HEADER at the destination's
  // home), and drops the chunks if that fails. Blocks its thread, as MapFrame does.
  Result<FrameHeader> DeriveFrame(const FrameHeader& h, std::string_view name, MapTaskRequest task);
  // MAP_TASKs run at this member (tests: the tree reaches every member once).
  uint64_t TEST_map_tasks() const;
  // Runs `hook` in each MAP_TASK at this member once its halves are sent, before it maps its own
  // chunks (tests: a map held while the coordinator waits). Empty: none.
  void TEST_SetMapHook(std::function<void()> hook);
  // Puts f's chunks at their homes under id `frame_id` and `group` (internal/frame_cluster.h,
  // rule 2; D1, D4, D5), the header's slot recorded with them; `done` gets OK once every chunk is
  // put, or the first failure once the chunks sent are dropped again. Runs on RPC threads (the
  // calls to this member itself on the caller's).
  // `options.sent` is told the column bytes put so far after each batch put (on an RPC thread);
  // `options.cancel`, once set, stops the put as a failure does (Cancelled).
  void PutFrameChunks(std::shared_ptr<const frame::Frame> f, uint64_t frame_id, uint16_t group,
                      uint16_t header_slot, std::function<void(Status)> done,
                      FramePutOptions options = {});
  // DROP_CHUNKS for `frame_id` to every member, this one too, without waiting for the answers
  // (D9, D10: a member that misses it finds the chunks by its sweep).
  void DropFrameChunks(uint64_t frame_id);
  // The same for several ids, in one DROP_CHUNKS a member (at most kMaxFrameIds ids each).
  void DropFrameChunks(const std::vector<uint64_t>& frame_ids);
  // One orphan sweep of the chunk store (internal/chunk_store.h, rule 5; D10): asks the home of
  // each set's header slot about its id and drops the sets answered gone twice in a row. The
  // node runs one every kChunkSweepUs; `done` (on an RPC thread, or here when nothing is asked)
  // gets the sets dropped once every home answered or timed out.
  void SweepChunks(std::function<void(uint64_t dropped)> done);
  // This node's ForwardRequest::origin: its RPC endpoint's incarnation.
  uint64_t origin() const { return origin_; }
  // Rule J2 (docs/membership.md): removes member `id` through the Raft leader (RemoveMember, then
  // RemoveServer), waiting at most `wait` (Unavailable after it, or once the node stops).
  // FailedPrecondition when the member owns, backs up or receives a slot (naming how many: moving
  // them needs migration), or is not in the table; Unavailable when the outcome stays unknown
  // (an Unavailable answer, "retry", is asked again every 200 ms within `wait`: a retry finishes
  // a cut-off removal). Blocks the caller: never on the loop, the Raft or an RPC thread.
  // A set `cancel` (a pool task's, at shutdown) ends the wait at once, as Unavailable.
  Status RemoveMember(net::NodeId id, std::chrono::milliseconds wait = std::chrono::seconds(15),
                      const std::atomic<bool>* cancel = nullptr);
  // Whether this member may leave now without migration (rule J2): its agreed metadata runs,
  // it is listed and holds no slot in the applied table (a leader hands leadership over
  // first, rule M4). Any thread.
  bool CanLeave() const;
  // Whether this member has applied its own removal: it serves no key, and meta_off() says why.
  bool removed() const;
  // What the node runs once CLUSTER LEAVE's removal is answered (the server's Stop); called at
  // most once, on the node's loop, after `delay_us`.
  void SetOnLeft(std::function<void()> on_left);
  void Leave(uint64_t delay_us);
  // Stops the endpoint (no more proxy commands run); idempotent.
  void Stop();
  // Tests only: drops every proxy session, as a restart of this node would.
  void TEST_DropProxySessions();
  // For tests: proxy sessions whose request is parked (waits for a deferred reply).
  size_t TEST_ParkedProxies();

 private:
  struct Impl;
  explicit ClusterNode(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  Stats stats_;
  const uint64_t origin_;
};

}  // namespace floe::server::internal

#endif  // FLOE_SERVER_INTERNAL_CLUSTER_NODE_H_
