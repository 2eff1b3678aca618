// The node's part in a cluster: transport, endpoint, formation, and the proxy sessions in which
// a home runs the commands other nodes forward to it (docs/cluster.md, "Commands through any
// node").

#include "server/internal/cluster_node.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <future>
#include <map>
#include <optional>
#include <thread>
#include <tuple>
#include <utility>

#include "consensus/consensus.h"
#include "net/net.h"
#include "server/internal/command.h"
#include "server/internal/string_cell.h"
#include "wire/wire.h"

namespace floe::server::internal {

namespace {

// What this node hands out as a cached copy (rule C7): strings of up to kCacheValueMax bytes,
// plain or in a cell (their bytes read under the cell's lock), with their expiry. Sketches
// change by small steps and are large: they are read at their home.
std::optional<dkv::Entry> ExportForCache(const store::Value& v) {
  if (v.type() != kStringValueType) return std::nullopt;
  return WithStringBytes(v, [&](std::string_view bytes) -> std::optional<dkv::Entry> {
    if (bytes.size() > kCacheValueMax) return std::nullopt;
    return dkv::Entry{
        .type = v.type(), .expire_at_ms = v.expire_at_ms(), .payload = std::string(bytes)};
  });
}

// A proxy session nobody used for this long is dropped (its client's node may have died before
// it could say the client left).
constexpr int64_t kProxyIdleMs = 3600 * 1000;

// Test-only faults for the cluster transport, from $FLOE_TEST_CLUSTER_FAULTS:
// "drop=0.05,duplicate=0.02,max_delay_us=2000" (docs/cluster.md, "Flags").
Result<net::Faults> FaultsFromEnvironment() {
  net::Faults f;
  const char* env = std::getenv("FLOE_TEST_CLUSTER_FAULTS");
  if (env == nullptr || *env == '\0') return f;
  std::string_view rest(env);
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    const std::string_view item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    const size_t eq = item.find('=');
    const std::string_view name = item.substr(0, eq);
    const std::string value(eq == std::string_view::npos ? "" : item.substr(eq + 1));
    char* end = nullptr;
    const double v = std::strtod(value.c_str(), &end);
    if (value.empty() || end != value.c_str() + value.size() || !(v >= 0) || v > 1e9) {
      return Status::InvalidArgument("FLOE_TEST_CLUSTER_FAULTS: bad value in '" +
                                     std::string(item) + "'");
    }
    if (name == "drop" && v <= 1) {
      f.drop = v;
    } else if (name == "duplicate" && v <= 1) {
      f.duplicate = v;
    } else if (name == "max_delay_us") {
      f.max_delay_us = static_cast<uint64_t>(v);
    } else {
      return Status::InvalidArgument("FLOE_TEST_CLUSTER_FAULTS: unknown or out of range '" +
                                     std::string(item) + "'");
    }
  }
  return f;
}

// An exclusive lock on a member's metadata directory, held while the member runs: a second
// `floe serve` of the same member must not touch the log the first one is writing.
class DirectoryLock {
 public:
  DirectoryLock() = default;
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;
  ~DirectoryLock() {
    if (fd_ >= 0) close(fd_);
  }
  Status Take(const std::string& dir) {
    fd_ = open((dir + "/LOCK").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0)
      return Status::Unavailable(std::string("cannot open its LOCK: ") + strerror(errno));
    if (flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      return Status::Unavailable("another floe serve of this member holds it (its LOCK)");
    }
    return Status::OK();
  }

 private:
  int fd_ = -1;
};

// The file in a member's metadata directory that records its cluster's id (rule M5), written
// once the log's first entry is applied, read at every start: HELLO carries it before Raft runs.
constexpr const char* kClusterIdFile = "cluster-id";

// What a member's metadata directory belongs to: written when its log is created, compared at
// every later start, so a log of another cluster (another list, or ids that moved) is never
// replayed as this one's.
std::string DirectoryIdentity(const Config& config, const std::vector<cluster::Member>& members,
                              net::NodeId self) {
  std::string out = "floe agreed metadata\ncluster-name " + config.cluster_name + "\nmembers ";
  for (size_t i = 0; i < members.size(); i++) {
    out += (i > 0 ? "," : "") + members[i].address();
  }
  return out + "\nself " + std::to_string(self) + "\n";
}

// The first 64 KiB of a file; empty when it cannot be read.
std::string ReadSmallFile(const std::string& path) {
  std::string out;
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;
  char buf[4096];
  ssize_t n = 0;
  while (out.size() < 65536 && (n = read(fd, buf, sizeof(buf))) > 0) {
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

// Replaces `path` with `bytes` so that a crash leaves the old file or the new one, never a torn
// or empty one: a temporary file (`path`.tmp), fsync, rename, fsync of the directory.
bool WriteFileDurably(const std::string& path, std::string_view bytes) {
  const std::string tmp = path + ".tmp";
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  const bool synced = done == bytes.size() && fsync(fd) == 0;
  close(fd);
  if (!synced || rename(tmp.c_str(), path.c_str()) != 0) {
    unlink(tmp.c_str());
    return false;
  }
  const std::string dir = std::filesystem::path(path).parent_path().string();
  const int dfd = open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
  return true;
}

// Whether `dir` holds anything besides the files this node's own checks keep there (and their
// temporary copies, left by a crash in WriteFileDurably).
bool HoldsALog(const std::string& dir) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    std::string name = entry.path().filename().string();
    if (name.ends_with(".tmp")) name.resize(name.size() - 4);
    if (name != "LOCK" && name != "member" && name != kClusterIdFile) return true;
  }
  return false;
}

// Whether TCP `host:port` can be listened on now (as the Raft library will, with SO_REUSEADDR):
// a port in use stops the start with the reason, although Raft itself starts only at formation.
Status ProbeListen(const std::string& host, uint16_t port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::Unavailable(std::string("socket: ") + strerror(errno));
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  Status st;
  if (inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) {
    st = Status::InvalidArgument("not an IPv4 address: " + host);
  } else if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || listen(fd, 1) != 0) {
    st = Status::Unavailable("cannot listen on " + host + ":" + std::to_string(port) + ": " +
                             strerror(errno));
  }
  close(fd);
  return st;
}

// The agreed metadata (docs/membership.md, rule M1; step 1 of its build order): every member
// runs the Raft log of the cluster's table on its cluster port + 1, its log and snapshots in
// <dir>/<host>-<cluster port>. The founders are the members of --cluster, the first five (by
// id) voters and the rest learners (rule M4). Checks the directory and the port now and returns
// the options Raft starts with once the cloud has formed (rule M5: a member runs no Raft until
// every member's HELLO, cluster id included, agrees with it). Nullopt, with *off saying why,
// when Raft cannot run safely here: a member with an IPv6 address (raft 0.15's transport takes
// IPv4 only), or one off loopback (Raft's transport does not carry the cluster secret yet).
// *id: the cluster id the directory's log carries (empty for a new member: rule M5 reads it
// from the log itself, the cluster-id file being only a cache checked against it); *holds_log:
// whether the directory holds a log.
Result<std::optional<cluster::MetaOptions>> PrepareMeta(const Config& config,
                                                        const std::vector<cluster::Member>& members,
                                                        net::NodeId self, uint64_t node_timeout_ms,
                                                        DirectoryLock* lock, std::string* off,
                                                        cluster::ClusterId* id, bool* holds_log) {
  for (const cluster::Member& m : members) {
    if (m.host.find(':') != std::string::npos) {
      *off = "member " + m.address() +
             " has an IPv6 address, and the Raft library takes IPv4 addresses only";
      return std::optional<cluster::MetaOptions>();
    }
  }
  for (const cluster::Member& m : members) {
    if (!IsLoopbackAddress(m.host)) {
      *off = "member " + m.address() +
             " is not on loopback, and Raft's transport does not carry the cluster secret yet";
      return std::optional<cluster::MetaOptions>();
    }
  }
  for (const cluster::Member& m : members) {
    if (m.port == 65535) {
      return Status::InvalidArgument("member " + m.address() +
                                     ": cluster port 65535 leaves no port for Raft, which "
                                     "listens on the cluster port + 1");
    }
    for (const cluster::Member& n : members) {
      if (n.host == m.host && n.port == m.port + 1) {
        return Status::InvalidArgument(
            "members " + m.address() + " and " + n.address() + ": a member's Raft listens on " +
            "its cluster port + 1, which is the other's cluster port; space the cluster ports " +
            "of members on one address by 2 or more");
      }
    }
  }
  auto raft_address = [](const cluster::Member& m) {
    return m.host + ":" + std::to_string(m.port + 1);
  };
  const cluster::Member& me = members[self - 1];
  cluster::MetaOptions o;
  o.raft.id = self;
  o.raft.address = raft_address(me);
  o.raft.dir = (config.dir.empty() ? std::string("floe-data") : config.dir) + "/" + me.host + "-" +
               std::to_string(me.port);
  const std::string where = o.raft.address + ", directory " + o.raft.dir;
  auto failed = [&where](const std::string& why) {
    return Status::Unavailable("cannot start the agreed metadata (Raft on " + where + "): " + why);
  };
  std::error_code ec;
  std::filesystem::create_directories(o.raft.dir, ec);
  if (ec) return failed("cannot create the directory: " + ec.message());
  if (Status st = lock->Take(o.raft.dir); !st.ok()) return failed(std::string(st.message()));
  const std::string identity = DirectoryIdentity(config, members, self);
  const std::string identity_path = o.raft.dir + "/member";
  const std::string found = ReadSmallFile(identity_path);
  if (HoldsALog(o.raft.dir) && found != identity) {
    return failed(
        "it holds the metadata of another cluster (another --cluster-name or member list, or "
        "this node under another id): give this cluster its own --dir, or remove the directory");
  }
  if (found != identity && !WriteFileDurably(identity_path, identity)) {
    return failed("cannot write " + identity_path + ": " + std::strerror(errno));
  }
  // A leader unheard of for this long (raft waits 1-2 times it) is replaced: well inside the
  // node timeout, so the metadata has a leader again before clients give up on a command.
  o.raft.election_timeout_ms = std::clamp<uint64_t>(node_timeout_ms / 5, 100, 1000);
  o.raft.heartbeat_timeout_ms = o.raft.election_timeout_ms / 5;
  for (const cluster::Member& m : members) {
    o.raft.bootstrap.push_back({.id = m.id,
                                .address = raft_address(m),
                                .role = o.raft.bootstrap.size() < consensus::kMaxVoters
                                            ? consensus::Role::kVoter
                                            : consensus::Role::kLearner});
    o.founders.push_back(cluster::TableMember{.id = m.id,
                                              .host = m.host,
                                              .port = m.port,
                                              .raft_port = static_cast<uint16_t>(m.port + 1)});
  }
  o.replicas = 0;  // backups come with the replication stream (build order, step 3)
  if (Status st = ProbeListen(me.host, static_cast<uint16_t>(me.port + 1)); !st.ok()) {
    return failed(st.ToString());
  }
  const std::string id_path = o.raft.dir + "/" + kClusterIdFile;
  cluster::ClusterId in_file;
  if (std::string text = ReadSmallFile(id_path); !text.empty()) {
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
    Result<cluster::ClusterId> parsed = cluster::ClusterId::Parse(text);
    if (!parsed.ok()) return failed(id_path + " is damaged: " + parsed.status().ToString());
    in_file = *parsed;
  }
  // Rule M5: the id is the log's, read before the first HELLO; the file is a cache of it.
  Result<consensus::StoredLog> stored = consensus::ReadStoredLog(o.raft);
  if (!stored.ok() && stored.status().code() != StatusCode::kNotFound) {
    return failed("cannot read its log: " + stored.status().ToString());
  }
  *holds_log = stored.ok();
  if (stored.ok()) {
    Result<cluster::ClusterId> in_log = cluster::ClusterIdOfLog(*stored);
    if (!in_log.ok()) return failed("cannot read its log: " + in_log.status().ToString());
    *id = *in_log;
  }
  if (!in_file.empty() && !id->empty() && in_file != *id) {
    return failed("the cluster id in " + id_path + " is " + in_file.ToString() +
                  ", but its log holds " + id->ToString() +
                  ": the directory holds files of two clusters (give this member its own --dir, "
                  "or restore the directory whole)");
  }
  if (!in_file.empty() && id->empty()) {
    // A file with no log behind it (the log was removed): the member is new, and must join.
    FLOE_LOG_WARN("{} records cluster {} but the directory holds no log of it: ignored", id_path,
                  in_file.ToString());
  }
  return std::optional<cluster::MetaOptions>(std::move(o));
}

}  // namespace

int64_t ConnectedClients(const Engine& engine) {
  const ClusterNode* node = engine.cluster();
  const uint64_t all = engine.ClientCount();
  const uint64_t proxies =
      node != nullptr ? node->stats().proxy_sessions.load(std::memory_order_relaxed) : 0;
  return static_cast<int64_t>(all - std::min(all, proxies));
}

std::string NodeName(const cluster::Member& member) {
  // Three hashes of the address, each with its own prefix, give 160 bits: 40 hex characters.
  const std::string a = member.address();
  char buf[41];
  std::snprintf(buf, sizeof(buf), "%016llx%016llx%08x",
                static_cast<unsigned long long>(HashBytes("floe-node-1:" + a)),
                static_cast<unsigned long long>(HashBytes("floe-node-2:" + a)),
                static_cast<unsigned>(HashBytes("floe-node-3:" + a) & 0xffffffffu));
  return std::string(buf, 40);
}

struct ClusterNode::Impl {
  Engine* engine = nullptr;
  Stats* stats = nullptr;
  uint64_t timeout_us = 0;
  uint64_t holder_wait_us = 0;  // the longest a change waits for a holder (L2's bound)
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
  // The cluster id the directory's file held at start (empty: none), and whether an applied
  // table carried another (rule M5, finding (4)): then Raft stops and no key is served, for good.
  cluster::ClusterId recorded_id;
  std::atomic<bool> meta_refused{false};
  // On the Raft thread: the log applies `id`, which is not recorded_id.
  void RefuseClusterId(const cluster::ClusterId& id);
  // Asks the leader its commit index until this member's log has applied it; on the loop.
  void PollCaughtUp();
  // The answer to kMetaCommitMethod: this member's commit index when it leads its log.
  Result<std::string> OnMetaCommit();

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

  void StartMeta();
  // On the Raft thread, after each applied change: the table's cluster id into HELLO and the
  // directory (rule M5).
  void OnTable(const std::shared_ptr<const cluster::Table>& table);
  dkv::Dkv::Slot dkv_slot = dkv::Dkv::MakeSlot();  // the endpoint's lease hook reaches it
  std::unique_ptr<dkv::Dkv> dkv;                   // destroyed before the endpoint
  std::atomic<bool> stopped{false};

  struct Proxy {
    // Held while a request runs in the session: a client's requests run one after the other,
    // even when its node stopped waiting for one (CLUSTERDOWN at the deadline) and sent the
    // next while the first still ran here (a command then joined an unfinished MULTI).
    Mutex mu;
    std::unique_ptr<Session> session;
    uint64_t last_seq FLOE_GUARDED_BY(mu) = 0;  // the newest request that ran
    int64_t last_used_ms = 0;
  };
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

  Result<std::string> OnCommand(net::NodeId from, std::string_view bytes);
  // Drops the proxy session `key` if it is still `session` (not a later one with its key).
  void DropProxy(std::pair<net::NodeId, uint64_t> key, const Session* session);
  void OnClose(net::NodeId from, std::string_view bytes);
  void SweepIdle(int64_t now_ms) FLOE_REQUIRES(proxies_mu);
  using ProxyMap = decltype(proxies);
  ProxyMap::iterator Drop(ProxyMap::iterator it) FLOE_REQUIRES(proxies_mu);
};

void ClusterNode::Impl::StartMeta() {
  MutexLock lock(&meta_mu);
  if (meta_stopped || !meta_options) return;
  cluster::MetaOptions o = std::move(*meta_options);
  meta_options.reset();
  o.on_change = [this](const std::shared_ptr<const cluster::Table>& t) { OnTable(t); };
  const std::string where = o.raft.address + ", directory " + o.raft.dir;
  Result<std::unique_ptr<cluster::Meta>> m = cluster::Meta::Start(std::move(o));
  if (!m.ok()) {
    // The port was free at start; something took it since. The node serves as it did before
    // agreed metadata (routing from the member list), and INFO says why.
    meta_off = "cannot start the agreed metadata (Raft on " + where + "): " + m.status().ToString();
    FLOE_LOG_ERROR("{}", meta_off);
    return;
  }
  meta = std::move(*m);
  meta_view.store(meta.get(), std::memory_order_release);
  cluster->SetHoldsLog(true);  // Raft has written its log (rule M5)
  FLOE_LOG_INFO("agreed metadata: Raft on {}", where);
  loop.Post([this] { PollCaughtUp(); });
}

void ClusterNode::Impl::PollCaughtUp() {
  if (stopped.load() || meta_caught_up.load() || meta_refused.load()) return;
  const cluster::Meta* m = meta_view.load(std::memory_order_acquire);
  auto again = [this] { loop.PostAt(loop.NowMicros() + 20'000, [this] { PollCaughtUp(); }); };
  const consensus::State st = m->raft();
  if (!st.running || st.leader_id == 0 || m->table()->members().empty()) return again();
  auto reached = [this, m](uint64_t commit) {
    const consensus::State now = m->raft();
    const std::shared_ptr<const cluster::Table> table = m->table();
    if (now.applied_index < commit || table->members().empty()) return false;
    // A table of another cluster than the directory's file says is refused (OnTable), never
    // served from, even in the instant before OnTable runs.
    if (!recorded_id.empty() && table->cluster_id() != recorded_id) return false;
    if (!meta_caught_up.exchange(true)) {
      FLOE_LOG_INFO("agreed metadata caught up with the leader's commit index {}: serving keys",
                    commit);
    }
    return true;
  };
  if (st.leader) {
    if (!reached(st.commit_index)) again();
    return;
  }
  // The follower's own commit index is at most what it has stored: only the leader knows.
  endpoint->CallAsync(st.leader_id, kMetaCommitMethod, std::string(), timeout_us,
                      [this, reached, again](Result<std::string> r) {
                        if (stopped.load()) return;
                        uint64_t commit = 0;
                        if (r.ok()) {
                          wire::Reader reader(*r);
                          if (!reader.GetVarint64(&commit).ok() || reader.remaining() != 0) {
                            r = Status::Corruption("bad commit index");
                          }
                        }
                        if (r.ok() && reached(commit)) return;
                        loop.Post(again);
                      });
}

Result<std::string> ClusterNode::Impl::OnMetaCommit() {
  const cluster::Meta* m = meta_view.load(std::memory_order_acquire);
  if (m == nullptr) return Status::Unavailable("no agreed metadata here");
  const consensus::State st = m->raft();
  if (!st.running || !st.leader) return Status::FailedPrecondition("not the leader");
  std::string out;
  wire::Writer(&out).PutVarint64(st.commit_index);
  return out;
}

void ClusterNode::Impl::PublishRoutes(const cluster::Table& table) {
  if (table.members().empty()) return;  // not initialized: the balanced map stays
  MutexLock lock(&routes_mu);
  const cluster::SlotMap& now = Routes();
  std::vector<net::NodeId> homes(cluster::kSlots);
  std::vector<bool> given_away(cluster::kSlots, false);
  bool changed = false, gives_away = false;
  const net::NodeId self = cluster->self();
  for (uint16_t s = 0; s < cluster::kSlots; s++) {
    homes[s] = table.slot(s).owner;
    if (homes[s] == now.Home(s)) continue;
    changed = true;
    if (now.Home(s) == self) given_away[s] = gives_away = true;
  }
  if (!changed) return;
  std::optional<GuardJob> job;
  if (gives_away) {
    // The guard (docs/membership.md, "Routing from the agreed table"): only migration (rule
    // G4) may give away a slot whose keys are here, and it does not exist yet. Such keys stay
    // in this store, served by nobody (every member routes the slot to its new owner), never
    // by two owners once the members have applied the table; counted and logged, on the guard
    // thread (the count walks the whole store), queued once the map is published below.
    job.emplace(GuardJob{.epoch = table.epoch(), .given_away = given_away, .homes = homes});
  }
  std::vector<cluster::Member> members;
  for (const cluster::TableMember& m : table.members()) {
    members.push_back(cluster::Member{.id = m.id, .host = m.host, .port = m.port});
  }
  // The version stays the member list's: the DKV compares it on every message, and per-slot
  // versions (rule V1) replace it with migration.
  published.push_back(std::make_unique<const cluster::SlotMap>(
      cluster::SlotMap::WithHomes(std::move(members), std::move(homes), now.version())));
  routes.store(published.back().get(), std::memory_order_release);
  FLOE_LOG_INFO("routing follows agreed table epoch {}", table.epoch());
  if (job) {
    MutexLock guard(&guard_mu);
    if (!guard_stopping) {
      guard_jobs.push_back(std::move(*job));
      guard_wake.notify_one();
    }
  }
}

void ClusterNode::Impl::GuardLoop() {
  for (;;) {
    GuardJob job;
    {
      MutexLock lock(&guard_mu);
      while (!guard_stopping && guard_jobs.empty()) guard_wake.wait(guard_mu);
      if (guard_stopping) return;
      job = std::move(guard_jobs.front());
      guard_jobs.pop_front();
    }
    std::function<void()> hook;
    {
      MutexLock lock(&guard_mu);
      hook = guard_hook;
    }
    if (hook) hook();
    std::vector<uint64_t> keys(cluster::kSlots, 0);
    engine->store().ForEach([&](const store::Value& v) {
      const uint16_t s = cluster::KeySlot(v.key());
      if (job.given_away[s]) keys[s]++;
    });
    for (uint16_t s = 0; s < cluster::kSlots; s++) {
      if (keys[s] == 0) continue;
      slots_given_away_with_keys.fetch_add(1, std::memory_order_relaxed);
      FLOE_LOG_ERROR(
          "agreed table epoch {} gives slot {} to node {} while {} of its keys are here, with no "
          "migration: they are kept here and served by nobody",
          job.epoch, s, job.homes[s], keys[s]);
    }
  }
}

void ClusterNode::Impl::StopGuard() {
  {
    MutexLock lock(&guard_mu);
    guard_stopping = true;
    guard_wake.notify_all();
  }
  if (guard_thread.joinable()) guard_thread.join();
}

void ClusterNode::Impl::OnTable(const std::shared_ptr<const cluster::Table>& table) {
  const cluster::ClusterId& id = table->cluster_id();
  if (meta_refused.load()) return;
  if (!id.empty() && !recorded_id.empty() && id != recorded_id) return RefuseClusterId(id);
  PublishRoutes(*table);
  if (id.empty()) return;
  cluster->SetClusterId(id);
  if (cluster_id_known.exchange(true)) return;
  // Once per life, a few bytes: the Raft thread may write them (rule M1's "never blocks" is
  // about waiting on others). A directory that cannot keep it only loses the early check.
  if (!WriteFileDurably(cluster_id_path, id.ToString() + "\n")) {
    FLOE_LOG_WARN(
        "cannot write {}: {}; until it is written, a restart of this member checks no cluster id "
        "in HELLO before its log is read",
        cluster_id_path, std::strerror(errno));
  }
}

void ClusterNode::Impl::RefuseClusterId(const cluster::ClusterId& id) {
  if (meta_refused.exchange(true)) return;
  std::string why = "the cluster id in " + cluster_id_path + " is " + recorded_id.ToString() +
                    ", but the log applies " + id.ToString() +
                    ": the directory holds files of two clusters; this member stopped its Raft "
                    "and serves no key (give it its own --dir, or restore the directory whole)";
  FLOE_LOG_ERROR("{}", why);
  // Meta::Stop joins the Raft thread: not from it.
  loop.Post([this, why = std::move(why)] {
    MutexLock lock(&meta_mu);
    meta_off = why;
    if (meta) meta->Stop();
  });
}

ClusterNode::Impl::ProxyMap::iterator ClusterNode::Impl::Drop(ProxyMap::iterator it) {
  peers[it->first.first].proxies--;
  stats->proxy_sessions.fetch_sub(1, std::memory_order_relaxed);
  return proxies.erase(it);
}

void ClusterNode::Impl::SweepIdle(int64_t now_ms) {
  if (now_ms - last_sweep_ms < 60'000) return;
  last_sweep_ms = now_ms;
  for (auto it = proxies.begin(); it != proxies.end();) {
    if (now_ms - it->second->last_used_ms > kProxyIdleMs) {
      it = Drop(it);
    } else {
      ++it;
    }
  }
}

Result<std::string> ClusterNode::Impl::OnCommand(net::NodeId from, std::string_view bytes) {
  FLOE_ASSIGN_OR_RETURN(ForwardRequest req, DecodeForward(bytes));
  stats->proxied.fetch_add(1, std::memory_order_relaxed);
  const auto now_ms = static_cast<int64_t>(WallMicros() / 1000);
  std::shared_ptr<Proxy> proxy;
  {
    MutexLock lock(&proxies_mu);
    SweepIdle(now_ms);
    Peer& peer = peers[from];
    if (req.origin < peer.origin) {
      // A request of the node's previous life, late: its client is gone.
      std::string reply, out;
      resp::ReplyWriter(&reply, req.protocol).Error("ERR the client's node has restarted");
      for (size_t i = 0; i < req.commands.size(); i++) AppendFramedReply(reply, &out);
      for (size_t i = 0; i < req.copies.size(); i++) AppendFramedReply({}, &out);  // no copies
      return out;
    }
    if (req.origin > peer.origin) {
      peer.origin = req.origin;
      for (auto it = proxies.lower_bound({from, 0});
           it != proxies.end() && it->first.first == from;) {
        it = Drop(it);
      }
    }
    const ProxyKey key{from, req.client};
    auto& slot = proxies[key];
    if (slot == nullptr) {
      if (peer.proxies >= engine->maxclients()) {
        proxies.erase(key);
        std::string reply, out;
        resp::ReplyWriter(&reply, req.protocol).Error("ERR max number of clients reached");
        for (size_t i = 0; i < req.commands.size(); i++) AppendFramedReply(reply, &out);
        for (size_t i = 0; i < req.copies.size(); i++) AppendFramedReply({}, &out);
        return out;
      }
      slot = std::make_shared<Proxy>();
      slot->session = std::make_unique<Session>(
          engine, engine->proxy_worker(),
          "node" + std::to_string(from) + ":" + std::to_string(req.client));
      slot->session->set_proxy();
      {
        // CLIENT KILL of a proxy session drops it: the client's next request here gets a new
        // one, without its WATCHes (its EXEC then aborts, rule C6).
        MutexLock state_lock(&slot->session->state().mu);
        slot->session->state().closer = [this, key, s = slot->session.get()] { DropProxy(key, s); };
      }
      peer.proxies++;
      stats->proxy_sessions.fetch_add(1, std::memory_order_relaxed);
    }
    slot->last_used_ms = now_ms;
    proxy = slot;
  }
  // One request of a client at a time runs in its proxy session, and the engine's proxy worker
  // lock serializes the sessions' commands.
  MutexLock run(&proxy->mu);
  if (req.seq <= proxy->last_seq) {
    // Late: a later request of the client already ran. Its node answered this one CLUSTERDOWN
    // (may or may not have happened); it does not happen, rather than out of order.
    std::string reply, out;
    resp::ReplyWriter(&reply, req.protocol).Error("ERR the request arrived after a later one");
    for (size_t i = 0; i < req.commands.size(); i++) AppendFramedReply(reply, &out);
    for (size_t i = 0; i < req.copies.size(); i++) AppendFramedReply({}, &out);
    return out;
  }
  proxy->last_seq = req.seq;
  Session& s = *proxy->session;
  s.set_protocol(req.protocol);
  s.set_request_origin(from, req.sent_us);
  if (req.watching && !s.watching()) s.BreakWatches();
  std::string out, reply;
  std::vector<std::string_view> args;
  for (const auto& command : req.commands) {
    args.assign(command.begin(), command.end());
    reply.clear();
    s.Execute(args, &reply);
    AppendFramedReply(reply, &out);
  }
  // Rule C8: copies of the keys the sender's reads asked for, each answered as a DKV GET.
  for (uint32_t i : req.copies) {
    Result<std::string> copy = req.commands[i].size() >= 2
                                   ? dkv->HandOut(from, req.commands[i][1], req.sent_us)
                                   : Result<std::string>(Status::InvalidArgument("no key"));
    AppendFramedReply(copy.ok() ? *copy : std::string(), &out);
  }
  return out;
}

void ClusterNode::Impl::DropProxy(std::pair<net::NodeId, uint64_t> key, const Session* session) {
  std::shared_ptr<Proxy> gone;  // destroyed after the lock: a session's end may take others
  MutexLock lock(&proxies_mu);
  auto it = proxies.find(key);
  if (it == proxies.end() || it->second->session.get() != session) return;
  gone = std::move(it->second);
  Drop(it);
}

void ClusterNode::Impl::OnClose(net::NodeId from, std::string_view bytes) {
  wire::Reader r(bytes);
  uint64_t origin = 0, client = 0;
  if (!r.GetFixed64(&origin).ok() || !r.GetVarint64(&client).ok() || r.remaining() != 0) return;
  std::shared_ptr<Proxy> gone;
  MutexLock lock(&proxies_mu);
  if (origin != peers[from].origin) return;  // a session of another life: gone already
  auto it = proxies.find({from, client});
  if (it == proxies.end()) return;
  gone = std::move(it->second);
  Drop(it);
}

ClusterNode::ClusterNode(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)), origin_(impl_->endpoint->incarnation()) {
  impl_->stats = &stats_;
}

ClusterNode::~ClusterNode() {
  Stop();
  MutexLock lock(&impl_->proxies_mu);
  impl_->proxies.clear();
}

void ClusterNode::Stop() {
  if (impl_->stopped.exchange(true)) return;
  {
    MutexLock lock(&impl_->meta_mu);
    impl_->meta_stopped = true;
    if (impl_->meta) impl_->meta->Stop();
  }
  // After Raft: no table is published any more, so no count is queued.
  impl_->StopGuard();
  impl_->cluster->Stop();
  impl_->endpoint->Stop();
  // A callback the loop is running (a forwarded answer being handed out) finishes before Stop
  // returns, and none starts after it (the endpoint has stopped): what the node owns may go.
  std::promise<void> drained;
  impl_->loop.Post([&drained] { drained.set_value(); });
  drained.get_future().wait();
  impl_->dkv_slot->store(nullptr, std::memory_order_release);
}

dkv::Dkv& ClusterNode::dkv() { return *impl_->dkv; }
const dkv::Dkv& ClusterNode::dkv() const { return *impl_->dkv; }

Result<std::unique_ptr<ClusterNode>> ClusterNode::Start(Engine* engine, const Config& config,
                                                        int client_port) {
  FLOE_ASSIGN_OR_RETURN(std::vector<cluster::Member> members,
                        cluster::ParseMembers(config.cluster));
  const std::vector<std::string> binds = BindAddresses(config.bind);
  std::string host = binds.empty() ? std::string() : binds[0];
  if (host == "localhost") host = "127.0.0.1";
  if (host == "0.0.0.0" || host == "::") host.clear();
  if (config.cluster_port == 0) {
    return Status::InvalidArgument("--cluster needs --cluster-port: which member is this node");
  }
  Result<net::NodeId> self =
      cluster::FindSelf(members, host, static_cast<uint16_t>(config.cluster_port));
  if (!self.ok()) {
    return Status::InvalidArgument("this node (" + (host.empty() ? "*" : host) + ":" +
                                   std::to_string(config.cluster_port) +
                                   ") is not in --cluster: " + self.status().ToString());
  }
  cluster::Options co;
  co.cluster_name = config.cluster_name;
  co.members = members;
  co.self = *self;
  co.client_port = static_cast<uint16_t>(client_port);
  FLOE_RETURN_IF_ERROR(cluster::ValidateOptions(co));
  FLOE_RETURN_IF_ERROR(cluster::CheckSecurity(co, config.cluster_secret));
  FLOE_ASSIGN_OR_RETURN(net::Faults faults, FaultsFromEnvironment());

  auto impl = std::make_unique<Impl>();
  impl->engine = engine;
  impl->timeout_us = static_cast<uint64_t>(config.cluster_node_timeout) * 1000;
  const cluster::Member& me = members[*self - 1];
  net::TransportOptions t;
  t.self = *self;
  t.bind_host = me.host;
  t.port = me.port;
  t.peers = cluster::PeerAddresses(members, *self);
  t.faults = faults;
  auto transport = net::UdpTcpTransport::Start(impl->loop, t);
  if (!transport.ok()) {
    return Status::Unavailable("cannot open the cluster port " + me.address() + ": " +
                               transport.status().ToString());
  }
  impl->transport = std::move(*transport);
  // After the cluster port is ours: a second start of a running member stops there, before it
  // could touch the member's metadata directory (which its lock guards too).
  cluster::ClusterId cluster_id;
  bool holds_log = false;
  {
    MutexLock lock(&impl->meta_mu);
    FLOE_ASSIGN_OR_RETURN(
        impl->meta_options,
        PrepareMeta(config, members, *self, static_cast<uint64_t>(config.cluster_node_timeout),
                    &impl->meta_lock, &impl->meta_off, &cluster_id, &holds_log));
    if (!impl->meta_options) {
      FLOE_LOG_WARN("agreed metadata is off: {}", impl->meta_off);
      // No member runs Raft (the reason holds for every member): routing is the member list's.
      impl->meta_caught_up = true;
    } else {
      impl->cluster_id_path = impl->meta_options->raft.dir + "/" + kClusterIdFile;
      // The file is rewritten from the log when it is missing (a crash before it was written).
      impl->cluster_id_known = !cluster_id.empty() &&
                               ReadSmallFile(impl->cluster_id_path) == cluster_id.ToString() + "\n";
      impl->recorded_id = cluster_id;
    }
  }
  rpc::Options o;
  o.peers = cluster::PeerIds(members, *self);
  o.secret = config.cluster_secret;
  o.down_after_us = std::min<uint64_t>(impl->timeout_us, 3'000'000);
  o.on_lease_lapse = dkv::Dkv::MakeLeaseHook(impl->dkv_slot);
  o.threads_per_class = 8;
  impl->endpoint = std::make_unique<rpc::Endpoint>(*impl->transport, o);
  impl->cluster = std::make_unique<cluster::Cluster>(*impl->endpoint, impl->loop, co);
  impl->cluster->SetClusterId(cluster_id);
  impl->cluster->SetHoldsLog(holds_log);
  Impl* raw = impl.get();
  dkv::Options d;
  d.self = *self;
  d.home = [raw](std::string_view key) -> net::NodeId {
    return raw->cluster->formed() ? raw->Routes().Home(cluster::KeySlot(key)) : 0;
  };
  d.timeout_us = impl->timeout_us;
  d.lease_us = o.lease_us;
  d.start_grace_us = o.lease_us + o.lease_us / 20 + 1000;
  d.peers = o.peers;
  // Patience, then the lease and its margin (docs/rpc.md, "Leases": 2% + 1 ms).
  impl->holder_wait_us = d.invalidate_patience_us + d.lease_us + d.lease_us / 50 + 1000;
  d.home_store = &engine->store();
  d.export_value = ExportForCache;
  impl->dkv = std::make_unique<dkv::Dkv>(*impl->endpoint, d);
  impl->dkv_slot->store(impl->dkv.get(), std::memory_order_release);
  impl->endpoint->Register(kCommandMethod, 1, [raw](net::NodeId from, std::string_view req) {
    return raw->OnCommand(from, req);
  });
  impl->endpoint->Register(
      kMetaCommitMethod, rpc::kPriorityClasses - 1,
      [raw](net::NodeId, std::string_view) { return raw->OnMetaCommit(); },
      /*runs_inline=*/true);
  impl->endpoint->Register(kCloseSessionMethod, 1,
                           [raw](net::NodeId from, std::string_view req) -> Result<std::string> {
                             raw->OnClose(from, req);
                             return std::string();
                           });
  {
    Result<std::thread> guard = StartThread([raw] { raw->GuardLoop(); });
    if (!guard.ok()) return guard.status();
    impl->guard_thread = std::move(*guard);
  }
  std::unique_ptr<ClusterNode> node(new ClusterNode(std::move(impl)));
  FLOE_LOG_INFO("cluster '{}': this node is {} (node {} of {}), waiting for the others",
                config.cluster_name, me.address(), *self, members.size());
  // The engine knows its node before any peer's command can reach a proxy session.
  engine->set_cluster(node.get());
  node->impl_->endpoint->Start();
  node->impl_->cluster->OnFormed([raw] { raw->StartMeta(); });
  node->impl_->cluster->Start();
  return node;
}

void ClusterNode::TEST_DropProxySessions() {
  MutexLock lock(&impl_->proxies_mu);
  for (auto it = impl_->proxies.begin(); it != impl_->proxies.end();) it = impl_->Drop(it);
}

bool ClusterNode::formed() const { return impl_->cluster->formed(); }
net::NodeId ClusterNode::self() const { return impl_->cluster->self(); }
const cluster::SlotMap& ClusterNode::map() const { return impl_->Routes(); }
uint64_t ClusterNode::slots_given_away_with_keys() const {
  return impl_->slots_given_away_with_keys.load(std::memory_order_relaxed);
}
void ClusterNode::TEST_SetGuardHook(std::function<void()> hook) {
  MutexLock lock(&impl_->guard_mu);
  impl_->guard_hook = std::move(hook);
}

cluster::Meta* ClusterNode::TEST_meta() {
  MutexLock lock(&impl_->meta_mu);
  return impl_->meta.get();
}
const cluster::Cluster& ClusterNode::cluster() const { return *impl_->cluster; }
const rpc::Stats& ClusterNode::rpc_stats() const { return impl_->endpoint->stats(); }
const cluster::Meta* ClusterNode::meta() const {
  return impl_->meta_view.load(std::memory_order_acquire);
}
std::string ClusterNode::meta_off() const {
  MutexLock lock(&impl_->meta_mu);
  return impl_->meta_off;
}

net::NodeId ClusterNode::Home(uint16_t slot) const {
  return formed() ? impl_->Routes().Home(slot) : 0;
}

bool ClusterNode::meta_caught_up() const { return impl_->meta_caught_up.load(); }

bool ClusterNode::serving() const {
  return impl_->meta_caught_up.load() && !impl_->meta_refused.load() && formed();
}

std::string ClusterNode::DownError() const {
  return formed() ? std::string("CLUSTERDOWN The cluster is down") : NotFormedError();
}

std::string ClusterNode::NotFormedError() const {
  const std::vector<std::string> reasons = impl_->cluster->WaitingReasons();
  std::string out = "CLUSTERDOWN The cluster is not formed: ";
  if (reasons.empty()) {
    // Every member has agreed and formation is completing this moment (or Start is not done).
    out += "forming now (every member has answered)";
  } else {
    out += reasons[0];
    if (reasons.size() > 1) out += " (and " + std::to_string(reasons.size() - 1) + " more)";
  }
  return out;
}

void ClusterNode::Forward(net::NodeId home, const ForwardRequest& request, bool changes,
                          std::function<void(Result<std::string>)> done) {
  stats_.forwarded.fetch_add(1, std::memory_order_relaxed);
  Stats* stats = &stats_;
  // A change may wait at its home for a cut-off holder's lease (rule C7): that wait is the
  // holder's, not the home's, so it does not count against cluster-node-timeout.
  const uint64_t timeout = impl_->timeout_us + (changes ? impl_->holder_wait_us : 0);
  impl_->endpoint->CallAsync(home, kCommandMethod, EncodeForward(request), timeout,
                             [stats, done = std::move(done)](Result<std::string> r) {
                               if (!r.ok()) {
                                 stats->forward_failures.fetch_add(1, std::memory_order_relaxed);
                               }
                               done(std::move(r));
                             });
}

void ClusterNode::CloseProxy(uint64_t client, net::NodeId home) {
  if (impl_->stopped.load()) return;
  std::string req;
  wire::Writer w(&req);
  w.PutFixed64(origin_);
  w.PutVarint64(client);
  impl_->endpoint->CallAsync(home, kCloseSessionMethod, req, impl_->timeout_us,
                             [](Result<std::string>) {});
}

}  // namespace floe::server::internal
