// The node's agreed metadata (docs/membership.md): its directory and cluster id (rule M5), Raft
// started at formation, the catch-up with the leader's commit index (RPC 302), routing from the
// applied table and the guard of slots it gives away.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "consensus/consensus.h"
#include "server/internal/cluster_node_impl.h"
#include "server/internal/replica_store.h"
#include "wire/wire.h"

namespace floe::server::internal {

DirectoryLock::~DirectoryLock() {
  if (fd_ >= 0) close(fd_);
}

Status DirectoryLock::Take(const std::string& dir) {
  if (fd_ >= 0 && dir == dir_) return Status::OK();  // taken already (a joiner, before it asks)
  if (fd_ >= 0) close(fd_);
  dir_ = dir;
  fd_ = open((dir + "/LOCK").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) return Status::Unavailable(std::string("cannot open its LOCK: ") + strerror(errno));
  if (flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    // Not held: a later Take of this directory must try again, not count it as taken.
    close(fd_);
    fd_ = -1;
    return Status::Unavailable("another floe serve of this member holds it (its LOCK)");
  }
  return Status::OK();
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

std::string MemberDirectory(const Config& config, const std::string& host, uint16_t port) {
  return (config.dir.empty() ? std::string("floe-data") : config.dir) + "/" + host + "-" +
         std::to_string(port);
}

namespace {

// The file in a member's metadata directory that records its cluster's id (rule M5), written
// once the log's first entry is applied, read at every start: HELLO carries it before Raft runs.
constexpr const char* kClusterIdFile = "cluster-id";
// The answer a joined member joined with (rule J1): its restarts start from it and the log.
constexpr const char* kJoinAnswerFile = "join-answer";

// What a member's metadata directory belongs to: written when its log is created, compared at
// every later start, so a log of another cluster (another list, or ids that moved) is never
// replayed as this one's.
// A joined member's identity up to its id: its member list grows with the cluster, so the
// directory is this member's by its address.
std::string JoinedIdentityPrefix(const Config& config, const std::string& host, uint16_t port) {
  return "floe agreed metadata\ncluster-name " + config.cluster_name + "\njoined as " +
         cluster::Member{.host = host, .port = port}.address() + "\nself ";
}

std::string DirectoryIdentity(const Config& config, const std::vector<cluster::Member>& members,
                              net::NodeId self, bool joined) {
  if (joined) {
    const cluster::Member& me = *std::find_if(
        members.begin(), members.end(), [self](const cluster::Member& x) { return x.id == self; });
    return JoinedIdentityPrefix(config, me.host, me.port) + std::to_string(self) + "\n";
  }
  std::string out = "floe agreed metadata\ncluster-name " + config.cluster_name + "\nmembers ";
  for (size_t i = 0; i < members.size(); i++) {
    out += (i > 0 ? "," : "") + members[i].address();
  }
  return out + "\nself " + std::to_string(self) + "\n";
}

// Whether `dir` holds anything besides the files this node's own checks keep there (and their
// temporary copies, left by a crash in WriteFileDurably).
bool HoldsALog(const std::string& dir) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    std::string name = entry.path().filename().string();
    if (name.ends_with(".tmp")) name.resize(name.size() - 4);
    if (name != "LOCK" && name != "member" && name != kClusterIdFile && name != "join-token" &&
        name != kJoinAnswerFile) {
      return true;
    }
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

}  // namespace

Result<cluster::ClusterId> ClusterIdOfDirectory(const consensus::Options& raft, bool* holds_log) {
  const std::string id_path = raft.dir + "/" + kClusterIdFile;
  cluster::ClusterId in_file;
  if (std::string text = ReadSmallFile(id_path); !text.empty()) {
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
    Result<cluster::ClusterId> parsed = cluster::ClusterId::Parse(text);
    if (!parsed.ok()) {
      return Status::Unavailable(id_path + " is damaged: " + parsed.status().ToString());
    }
    in_file = *parsed;
  }
  // Rule M5: the id is the log's, read before the first HELLO; the file is a cache of it.
  Result<consensus::StoredLog> stored = consensus::ReadStoredLog(raft);
  if (!stored.ok() && stored.status().code() != StatusCode::kNotFound) {
    return Status::Unavailable("cannot read its log: " + stored.status().ToString());
  }
  *holds_log = stored.ok();
  cluster::ClusterId id;
  if (stored.ok()) {
    Result<cluster::ClusterId> in_log = cluster::ClusterIdOfLog(*stored);
    if (!in_log.ok())
      return Status::Unavailable("cannot read its log: " + in_log.status().ToString());
    id = *in_log;
  }
  if (!in_file.empty() && !id.empty() && in_file != id) {
    return Status::Unavailable(
        "the cluster id in " + id_path + " is " + in_file.ToString() + ", but its log holds " +
        id.ToString() +
        ": the directory holds files of two clusters (give this member its own --dir, or restore "
        "the directory whole)");
  }
  if (!in_file.empty() && id.empty()) {
    // A file with no log behind it (the log was removed): the member is new, and must join.
    FLOE_LOG_WARN("{} records cluster {} but the directory holds no log of it: ignored", id_path,
                  in_file.ToString());
  }
  return id;
}

Result<JoinersDirectory> ReadJoinersDirectory(const Config& config, const std::string& host,
                                              uint16_t port) {
  consensus::Options raft;
  raft.dir = MemberDirectory(config, host, port);
  raft.address = host + ":" + std::to_string(port + 1);
  // Its id, when its directory says it joined here ("joined as <address>", then "self <id>");
  // the log reads alike under any id.
  raft.id = 1;
  net::NodeId recorded = 0;
  const std::string identity = ReadSmallFile(raft.dir + "/member");
  if (const std::string prefix = JoinedIdentityPrefix(config, host, port);
      identity.starts_with(prefix)) {
    int64_t self = 0;
    std::string_view rest(identity);
    rest.remove_prefix(prefix.size());
    while (!rest.empty() && rest.back() == '\n') rest.remove_suffix(1);
    if (ParseDecimalInt64(rest, &self) && self >= 1 && self < cluster::kFirstReservedId) {
      raft.id = recorded = static_cast<net::NodeId>(self);
    }
  }
  bool holds_log = false;
  Result<cluster::ClusterId> id = ClusterIdOfDirectory(raft, &holds_log);
  if (!id.ok()) {
    return Status::Unavailable("cannot join from directory " + raft.dir + ": " +
                               std::string(id.status().message()));
  }
  // Without a log the start rewrites the identity file: no id is recorded yet.
  return JoinersDirectory{.cluster_id = *id, .member = holds_log ? recorded : 0};
}

namespace {

// The key of the Raft transport's handshake (docs/consensus.md, "The transport"): derived
// from the cluster secret under a domain of its own (a key apart from the RPC MAC's); without
// a secret, from the cluster name, which bounds everything and keeps clusters apart but
// authenticates nothing (docs/cluster.md, "Security").
consensus::Mac RaftTransportMac(const Config& config) {
  const rpc::MacKey key =
      config.cluster_secret.empty()
          ? rpc::DeriveMacKey("floe raft transport v1, no secret\n" + config.cluster_name)
          : rpc::DeriveMacKey("floe raft transport v1\n" + config.cluster_secret);
  return [key](std::string_view bytes) {
    std::array<uint8_t, 16> out{};
    rpc::SipHash128(key, bytes, out.data());
    return out;
  };
}

// The agreed metadata (docs/membership.md, rule M1; step 1 of its build order): every member
// runs the Raft log of the cluster's table on its cluster port + 1, its log and snapshots in
// <dir>/<host>-<cluster port>. The founders are the members of --cluster, the first five (by
// id) voters and the rest learners (rule M4). Checks the directory and the port now and returns
// the options Raft starts with once the cloud has formed (rule M5: a member runs no Raft until
// every member's HELLO, cluster id included, agrees with it). Nullopt, with *off saying why,
// when Raft cannot run safely here: a member with an IPv6 address (raft 0.15's transport takes
// IPv4 only), or one off loopback (not run nor tested there yet: docs/cluster.md, "Security").
// *id: the cluster id the directory's log carries (empty for a new member: rule M5 reads it
// from the log itself, the cluster-id file being only a cache checked against it); *holds_log:
// whether the directory holds a log.
Result<std::optional<cluster::MetaOptions>> PrepareMeta(const Config& config,
                                                        const std::vector<cluster::Member>& members,
                                                        net::NodeId self, bool joined,
                                                        uint64_t node_timeout_ms,
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
             " is not on loopback, and the agreed metadata runs on loopback members only so far";
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
  const cluster::Member& me = *std::find_if(
      members.begin(), members.end(), [self](const cluster::Member& x) { return x.id == self; });
  cluster::MetaOptions o;
  o.raft.id = self;
  o.raft.address = raft_address(me);
  o.raft.dir = MemberDirectory(config, me.host, me.port);
  o.raft.mac = RaftTransportMac(config);
  const std::string where = o.raft.address + ", directory " + o.raft.dir;
  auto failed = [&where](const std::string& why) {
    return Status::Unavailable("cannot start the agreed metadata (Raft on " + where + "): " + why);
  };
  std::error_code ec;
  std::filesystem::create_directories(o.raft.dir, ec);
  if (ec) return failed("cannot create the directory: " + ec.message());
  if (Status st = lock->Take(o.raft.dir); !st.ok()) return failed(std::string(st.message()));
  FLOE_RETURN_IF_ERROR(RefuseRemovedDirectory(o.raft.dir));
  const std::string identity = DirectoryIdentity(config, members, self, joined);
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
    // A joined member's Raft starts with no configuration: the leader's log brings it.
    if (joined) break;
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
  // --replicas (docs/replication.md W19): the founder that leads first proposes the table with
  // its value. Tests of in-process clusters set theirs through the hook.
  o.replicas = TEST_ReplicasAtFounding().load() != 0
                   ? TEST_ReplicasAtFounding().load()
                   : static_cast<uint32_t>(std::clamp<int64_t>(config.replicas, 0, 8));
  if (Status st = ProbeListen(me.host, static_cast<uint16_t>(me.port + 1)); !st.ok()) {
    return failed(st.ToString());
  }
  Result<cluster::ClusterId> in_log = ClusterIdOfDirectory(o.raft, holds_log);
  if (!in_log.ok()) return failed(std::string(in_log.status().message()));
  *id = *in_log;
  return std::optional<cluster::MetaOptions>(std::move(o));
}

}  // namespace

Result<std::optional<cluster::JoinAnswer>> JoinedBefore(const Config& config,
                                                        const std::string& host) {
  const auto port = static_cast<uint16_t>(config.cluster_port);
  const std::string dir = MemberDirectory(config, host, port);
  const std::string identity = ReadSmallFile(dir + "/member");
  const std::string prefix = JoinedIdentityPrefix(config, host, port);
  // Not a joined member's directory, or one whose Raft wrote nothing yet: it asks (the leader
  // answers a retry of its token as its own join).
  if (!identity.starts_with(prefix) || !HoldsALog(dir)) return std::optional<cluster::JoinAnswer>();
  const std::string path = dir + "/" + kJoinAnswerFile;
  // Read whole (an answer may reach 128 KiB, above ReadSmallFile's 64), bounded.
  std::string bytes;
  if (std::ifstream in(path, std::ios::binary); in) {
    char buf[4096];
    while (bytes.size() <= 256 * 1024 && in.read(buf, sizeof(buf)).gcount() > 0) {
      bytes.append(buf, static_cast<size_t>(in.gcount()));
    }
  }
  if (bytes.empty()) return std::optional<cluster::JoinAnswer>();
  // The version it joined under, before the answer is decoded: a directory of another
  // protocol version is neither damaged nor this build's to read (docs/cluster.md, "Versions").
  if (uint32_t version = 0;
      wire::Reader(bytes).GetVarint32(&version).ok() && version != cluster::kProtocolVersion) {
    return Status::FailedPrecondition(
        "this member joined under protocol version " + std::to_string(version) +
        " (its answer in " + path + "), and this build runs protocol version " +
        std::to_string(cluster::kProtocolVersion) +
        ": a joined member restarts only under the version it joined with; run that release "
        "on this directory, or remove the directory to join anew");
  }
  Result<cluster::JoinAnswer> answer = cluster::DecodeJoinAnswer(bytes);
  if (!answer.ok()) {
    return Status::Unavailable(path + " is damaged (" + answer.status().ToString() +
                               "): remove it, and the member asks to join again");
  }
  if (identity != prefix + std::to_string(answer->id) + "\n") {
    return Status::Unavailable(path + " is not the answer of member " + dir +
                               ": remove it, and the member asks to join again");
  }
  return std::optional<cluster::JoinAnswer>(std::move(*answer));
}

void KeepJoinAnswer(const Config& config, const std::string& host,
                    const cluster::JoinAnswer& answer) {
  const std::string path =
      MemberDirectory(config, host, static_cast<uint16_t>(config.cluster_port)) + "/" +
      kJoinAnswerFile;
  if (!WriteFileDurably(path, cluster::EncodeJoinAnswer(answer))) {
    FLOE_LOG_WARN("cannot write {}: {}; a restart of this member asks to join again", path,
                  std::strerror(errno));
  }
}

std::vector<cluster::Member> MembersOf(const cluster::JoinAnswer& answer) {
  std::vector<cluster::Member> members;
  for (const cluster::TableMember& m : answer.members) {
    members.push_back(cluster::Member{.id = m.id, .host = m.host, .port = m.port});
  }
  return members;
}

Status CheckJoinerLocally(const Config& config, const std::string& host, DirectoryLock* lock) {
  FLOE_ASSIGN_OR_RETURN(cluster::Member contact, cluster::ParseMember(config.join));
  if (config.cluster_port <= 0 || config.cluster_port >= 65535) {
    return Status::InvalidArgument("--cluster-port must be 1-65534 (Raft listens on it + 1)");
  }
  const auto port = static_cast<uint16_t>(config.cluster_port);
  cluster::Options o;
  o.cluster_name = config.cluster_name;
  o.members = {cluster::Member{.id = 1, .host = host, .port = port},
               cluster::Member{.id = 2, .host = contact.host, .port = contact.port}};
  o.self = 1;
  if (o.members[0] == o.members[1]) {
    return Status::InvalidArgument("--join names this node itself: give a running member");
  }
  FLOE_RETURN_IF_ERROR(cluster::ValidateOptions(o));
  // Off loopback, only with a secret (the cluster's own rule): the leader refuses it too.
  FLOE_RETURN_IF_ERROR(cluster::CheckSecurity(o, config.cluster_secret));
  if (!IsLoopbackAddress(host)) {
    return Status::FailedPrecondition(
        "a joined member serves from the agreed metadata, whose Raft runs on loopback members "
        "only so far: join from a 127.0.0.x "
        "address");
  }
  if (Status st = ProbeListen(host, static_cast<uint16_t>(port + 1)); !st.ok()) {
    return Status::Unavailable("cannot start the agreed metadata (Raft on " + host + ":" +
                               std::to_string(port + 1) + "): " + std::string(st.message()));
  }
  FLOE_RETURN_IF_ERROR(FaultsFromEnvironment().status());
  const std::string dir = MemberDirectory(config, host, port);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::Unavailable("cannot create " + dir + ": " + ec.message());
  if (Status st = lock->Take(dir); !st.ok()) {
    return Status::Unavailable("cannot start the agreed metadata (directory " + dir +
                               "): " + std::string(st.message()));
  }
  FLOE_RETURN_IF_ERROR(RefuseRemovedDirectory(dir));
  // PrepareMeta's identity check, before the join rather than after: a log here must be this
  // member's (joined at this address, in this cluster-name); any other (a founder's, another
  // cluster's, one without its identity file) would stop the start once the join is committed.
  if (HoldsALog(dir) &&
      !ReadSmallFile(dir + "/member").starts_with(JoinedIdentityPrefix(config, host, port))) {
    return Status::Unavailable(
        "cannot start the agreed metadata (directory " + dir +
        "): it holds the metadata of another cluster (another --cluster-name or member list, or "
        "this node under another id): give this member its own --dir, or remove the directory");
  }
  return Status::OK();
}

Status ClusterNode::Impl::PrepareMetaAtStart(const Config& config,
                                             const std::vector<cluster::Member>& members,
                                             net::NodeId self, bool joined,
                                             cluster::ClusterId* cluster_id, bool* holds_log) {
  MutexLock lock(&meta_mu);
  FLOE_ASSIGN_OR_RETURN(
      meta_options,
      PrepareMeta(config, members, self, joined, static_cast<uint64_t>(config.cluster_node_timeout),
                  &meta_lock, &meta_off, cluster_id, holds_log));
  if (!meta_options) {
    FLOE_LOG_WARN("agreed metadata is off: {}", meta_off);
    // No member runs Raft (the reason holds for every member): routing is the member list's.
    meta_caught_up = true;
    life_listed = true;
  } else {
    cluster_id_path = meta_options->raft.dir + "/" + kClusterIdFile;
    // The file is rewritten from the log when it is missing (a crash before it was written).
    cluster_id_known =
        !cluster_id->empty() && ReadSmallFile(cluster_id_path) == cluster_id->ToString() + "\n";
    recorded_id = *cluster_id;
  }
  return Status::OK();
}

void ClusterNode::Impl::StartMeta() {
  MutexLock lock(&meta_mu);
  if (meta_stopped || !meta_options) return;
  // Told it was removed (RPC 304) before its metadata started: its Raft never starts.
  if (removed.load()) {
    MutexLock left(&left_mu);
    meta_off = removed_why;
    return;
  }
  cluster::MetaOptions o = std::move(*meta_options);
  meta_options.reset();
  raft_election_ms.store(o.raft.election_timeout_ms);
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
  loop.Post([this] { KeepVoters(); });
  loop.Post([this] { RepairBackups(); });
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
    // Its commit index covers what earlier leaders committed only once it has committed an
    // entry of its own term (docs/membership.md; consensus C10).
    if (!st.leader_ready || !reached(st.commit_index)) again();
    return;
  }
  // A target the same leader gave: wait for this log to apply it, without asking again.
  if (catch_up_target != 0 && catch_up_leader == st.leader_id &&
      loop.NowMicros() - catch_up_asked_at < kCatchUpAskAgainUs) {
    if (!reached(catch_up_target)) again();
    return;
  }
  // The follower's own commit index is at most what it has stored: only the leader knows.
  const uint64_t leader = st.leader_id;
  endpoint->CallAsync(leader, kMetaCommitMethod, std::string(), timeout_us,
                      [this, reached, again, leader](Result<std::string> r) {
                        if (stopped.load()) return;
                        uint64_t commit = 0;
                        if (r.ok()) {
                          wire::Reader reader(*r);
                          if (!reader.GetVarint64(&commit).ok() || reader.remaining() != 0) {
                            r = Status::Corruption("bad commit index");
                          }
                        }
                        if (r.ok() && reached(commit)) return;
                        const bool answered = r.ok() && commit != 0;
                        loop.Post([this, again, answered, commit, leader] {
                          if (answered) {
                            catch_up_target = commit;
                            catch_up_leader = leader;
                            catch_up_asked_at = loop.NowMicros();
                          }
                          again();
                        });
                      });
}

void ClusterNode::Impl::OnMetaCommit(rpc::Reply reply) {
  const cluster::Meta* m = meta_view.load(std::memory_order_acquire);
  if (m == nullptr) return reply(Status::Unavailable("no agreed metadata here"));
  const consensus::State st = m->raft();
  if (!st.running || !st.leader) return reply(Status::FailedPrecondition("not the leader"));
  // A new leader's commit index can lag what an earlier leader committed until it has committed
  // an entry of its own term (Raft §5.4.2): a member caught up to it could route by an old
  // table. The asker asks again.
  if (!st.leader_ready) {
    return reply(Status::Unavailable("the leader has not committed an entry of its term yet"));
  }
  // A leader cut off from the majority still counts itself ready until its quorum check steps
  // it down; a member caught up to it could serve by a table the majority has replaced. So the
  // answer waits for a majority to confirm the leadership (consensus C11, Raft §8).
  // Answered from the node's loop, not the Raft thread that confirms: the reply runs the
  // endpoint's queued work, which must not delay Raft's heartbeats.
  m->ConfirmLeadership([this, reply = std::move(reply)](Result<uint64_t> commit) mutable {
    loop.Post([reply = std::move(reply), commit = std::move(commit)] {
      if (!commit.ok()) return reply(commit.status());
      std::string out;
      wire::Writer(&out).PutVarint64(*commit);
      reply(std::move(out));
    });
  });
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
  if (removed.load()) return;
  // Rule J2: a table that assigned this member's id and no longer lists it removed it (a
  // joiner's log replays tables from before its AddMember: those have not assigned its id).
  const net::NodeId self = cluster->self();
  if (!table->members().empty() && self < table->next_id() && table->FindMember(self) == nullptr) {
    return OnRemoved(*table);
  }
  // W2: the Sender owns a slot before the routes send its writes here, and drops it after
  // they send them away (its changes in between are the old ownership's, refused by backups).
  Replication* replication = engine->replication();
  const uint64_t life = endpoint->incarnation();
  if (replication != nullptr) {
    std::vector<uint16_t> promoted = replication->Follow(table, self, life);
    if (!promoted.empty() && dkv != nullptr) {
      // W13: the dead owner's copies of these keys lapse within the start-up grace of its end,
      // which came before this apply; until then the keys' changes wait here.
      auto slots = std::make_shared<std::vector<bool>>(cluster::kSlots, false);
      for (uint16_t s : promoted) (*slots)[s] = true;
      dkv->WaitOutCopies([slots](std::string_view key) { return (*slots)[cluster::KeySlot(key)]; },
                         dkv_start_grace_us);
    }
  }
  // H5: a request forwarded to a home waits out the home's hold bound too.
  makes_backups.store(table->replicas() > 0, std::memory_order_relaxed);
  if (!table->members().empty() && !replicas_told.exchange(true) &&
      static_cast<int64_t>(table->replicas()) != replicas_asked && replicas_asked != 0) {
    FLOE_LOG_WARN(
        "this node was started with --replicas {}; the cluster keeps {} backup(s) of each slot, "
        "as it was founded",
        replicas_asked, table->replicas());
  }
  // Rule O3: the copies of keys whose slot changes owner go, and no answer of their old
  // home installs one after, as the routes switch.
  std::shared_ptr<std::vector<bool>> moved;
  if (dkv != nullptr && !table->members().empty()) {
    const cluster::SlotMap& now = Routes();
    for (uint16_t s = 0; s < cluster::kSlots; s++) {
      if (table->slot(s).owner == now.Home(s)) continue;
      if (!moved) moved = std::make_shared<std::vector<bool>>(cluster::kSlots, false);
      (*moved)[s] = true;
    }
  }
  if (moved) {
    dkv->ChangeHomes([&moved](std::string_view key) { return (*moved)[cluster::KeySlot(key)]; },
                     [this, &table] { PublishRoutes(*table); });
  } else {
    PublishRoutes(*table);
  }
  LeasesFollow(*table, self);  // O1, O5 (cluster_lease.cc)
  // W1: a cluster that makes backups serves a member's keys once its life is listed; one that
  // makes none records no lives (no table change at a start). Only after the routes follow the
  // table that lists it: a restarted member serving by its replayed tables would take a write
  // of a slot that this very table gives to its heir, and lose it with the routes' switch
  // (found under ThreadSanitizer: ReplicaPromotionTest lost two acknowledged writes).
  if (!table->members().empty() && !life_listed.load()) {
    const cluster::TableMember* me = table->FindMember(self);
    if (table->replicas() == 0) {
      life_listed = true;
    } else if (me != nullptr && me->life == life && !life_listed.exchange(true)) {
      FLOE_LOG_INFO("the agreed table lists this member's life: serving keys once caught up");
    }
  }
  if (replication != nullptr) {
    std::vector<uint16_t> forgotten = replication->Unfollow(table, self, life);
    // Their keys go on a handler thread of the lowest class: a pass over the replica store
    // must not hold the Raft thread or the loop.
    if (!forgotten.empty()) {
      // A slot backed here again before the drop runs starts a new copy with a flush, which
      // raises its generation: the drop then leaves that slot alone (B7, W18).
      std::vector<uint64_t> generations = replication->store().Generations(forgotten);
      endpoint->Post(
          0, [replication, forgotten = std::move(forgotten), generations = std::move(generations)] {
            replication->store().DropSlots(forgotten, &generations);
          });
    }
  }
  if (!table->members().empty()) {
    std::vector<cluster::Member> members;
    for (const cluster::TableMember& m : table->members()) {
      members.push_back(cluster::Member{.id = m.id, .host = m.host, .port = m.port});
    }
    // The transport's SetPeer runs on the loop (it waits for it): never from the Raft thread,
    // which the loop may be joining (Meta::Stop).
    loop.Post(
        [this, members = std::move(members), epoch = table->epoch(),
         cid = table->cluster_id()]() mutable { FollowMembers(std::move(members), epoch, cid); });
  }
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

void ClusterNode::Impl::FollowMembers(std::vector<cluster::Member> members, uint64_t epoch,
                                      cluster::ClusterId cluster_id) {
  if (stopped.load()) return;
  const net::NodeId self = cluster->self();
  std::map<net::NodeId, cluster::Member> now;
  for (cluster::Member& m : members) {
    if (m.id != self) now.emplace(m.id, std::move(m));
  }
  for (const auto& [id, m] : now) {
    auto it = table_peers.find(id);
    if (it != table_peers.end() && it->second == m) continue;
    transport->SetPeer(net::PeerAddress{.id = id, .host = m.host, .port = m.port});
    if (Status st = endpoint->AddPeer(id); !st.ok()) {
      FLOE_LOG_ERROR("member {} of the agreed table: {}", id, st.ToString());
      continue;
    }
    if (it == table_peers.end() && !table_peers.empty()) {
      FLOE_LOG_INFO("member {} at {} joined", id, m.address());
    }
  }
  for (const auto& [id, m] : table_peers) {
    if (now.count(id) == 0) {
      FLOE_LOG_INFO("member {} at {} left the agreed table", id, m.address());
      // Dropped a while later, unless it is back (ids are never reused, so it cannot be).
      const uint64_t drop_at = loop.NowMicros() + kRemovedPeerGraceUs;
      loop.PostAt(drop_at, [this, id = id] {
        if (!stopped.load() && table_peers.count(id) == 0) endpoint->RemovePeer(id);
      });
      // Not for the removals a restarted member's log replays (it was not there to see them).
      if (!cluster_id.empty() && meta_caught_up.load()) {
        TellRemoved(RemovedNotice{.id = id, .epoch = epoch, .cluster_id = cluster_id},
                    drop_at - kTellRemovedEveryUs);
      }
    }
  }
  table_peers = std::move(now);
}

Status ClusterNode::Impl::SignedRefusal(const Status& refusal,
                                        const cluster::JoinRequest& request) const {
  if (refusal.code() != StatusCode::kFailedPrecondition) return refusal;
  // Only the secret makes a refusal the joiner exits on (it asks again after a forged one).
  return Status::FailedPrecondition(
      cluster::SignJoinRefusal(refusal.message(), request, join_policy.secret));
}

void ClusterNode::Impl::OnJoin(net::NodeId from, std::string_view bytes, rpc::Reply reply) {
  Result<cluster::JoinRequest> request = cluster::DecodeJoinRequest(bytes);
  if (!request.ok()) return reply(request.status());
  if (from == cluster::kJoinerId) {
    // The endpoint took only a joiner's own request with the secret's proof
    // (rpc::Options::stranger_check), so a stranger makes no member call another; checked
    // again here, before the answer's address is set: nothing unproven is answered anywhere.
    if (!request->complete || request->forwarded ||
        !cluster::JoinProofMatches(*request, join_policy.secret)) {
      return reply(Status::PermissionDenied("a joiner's request without its proof"));
    }
    // The stranger is answered at the address it names (rpc::Options::stranger_method).
    transport->SetPeer(
        net::PeerAddress{.id = cluster::kJoinerId, .host = request->host, .port = request->port});
  }
  if (!request->complete) {
    return reply(Status::FailedPrecondition("protocol version " +
                                            std::to_string(request->protocol_version) + ", ours " +
                                            std::to_string(join_policy.protocol_version)));
  }
  // One join at a time here (docs/membership.md, J1): a replay of a running request, or
  // another joiner's, is answered "retry" before anything is looked up or proposed for it.
  Result<uint64_t> ticket = TakeJoinPlace(request->token);
  if (!ticket.ok()) return reply(ticket.status());
  reply = [this, token = request->token, ticket = *ticket,
           reply = std::move(reply)](Result<std::string> r) {
    FreeJoinPlace(token, ticket);
    reply(std::move(r));
  };
  cluster::Meta* m = nullptr;
  {
    MutexLock lock(&meta_mu);
    m = meta.get();
  }
  if (m == nullptr || meta_refused.load()) {
    return reply(Status::Unavailable("the agreed metadata does not run at this member"));
  }
  const consensus::State st = m->raft();
  if (!st.leader) {
    // Forwarded once: a request forwarded to a member that no longer leads is retried by the
    // joiner, which asks again (docs/membership.md, J1).
    if (request->forwarded || st.leader_id == 0) {
      return reply(Status::Unavailable("no leader of the agreed metadata here; retry"));
    }
    request->forwarded = true;
    // Within the joiner's own attempt (2 s): a leader that died mid-join holds this member's
    // place for the token no longer than the joiner waits before it asks again.
    endpoint->CallAsync(st.leader_id, cluster::kJoinMethod, cluster::EncodeJoinRequest(*request),
                        std::min<uint64_t>(timeout_us, 2'000'000), [reply](Result<std::string> r) {
                          if (!r.ok() && r.status().code() != StatusCode::kFailedPrecondition) {
                            return reply(Status::Unavailable("the leader did not answer: " +
                                                             r.status().ToString()));
                          }
                          reply(std::move(r));
                        });
    return;
  }
  Result<cluster::JoinDecision> decision = cluster::DecideJoin(*m->table(), *request, join_policy);
  if (!decision.ok()) {
    FLOE_LOG_WARN("refused the join of {}: {}",
                  cluster::Member{.host = request->host, .port = request->port}.address(),
                  decision.status().message());
    return reply(SignedRefusal(decision.status(), *request));
  }
  if (decision->joined != 0) return FinishJoin(m, decision->joined, *request, reply, 40);
  joins_proposed.fetch_add(1, std::memory_order_relaxed);
  m->Propose(*decision->propose, [this, m, request = *request, reply](Status proposed) {
    // Committed, refused (a concurrent commit of the same join), or unknown: the applied table
    // says which (a retry of an unknown outcome finds the member by its token).
    if (!proposed.ok() && proposed.code() != StatusCode::kFailedPrecondition) {
      return reply(Status::Unavailable("the join's outcome is unknown (" + proposed.ToString() +
                                       "); retry"));
    }
    Result<cluster::JoinDecision> now = cluster::DecideJoin(*m->table(), request, join_policy);
    if (!now.ok()) return reply(SignedRefusal(now.status(), request));
    if (now->joined == 0) return reply(Status::Unavailable("the join was not committed; retry"));
    FinishJoin(m, now->joined, request, reply, 40);
  });
}

Result<uint64_t> ClusterNode::Impl::TakeJoinPlace(uint64_t token) {
  const auto now = std::chrono::steady_clock::now();
  MutexLock lock(&join_mu);
  // Freed by the join's answer; a join whose answer never comes (a callback lost at a stop)
  // frees its place after twice the node timeout and 5 s more, at most 30 s.
  const auto limit =
      std::chrono::microseconds(std::min<uint64_t>(2 * timeout_us + 5'000'000, 30'000'000));
  std::erase_if(joins_in_flight, [&](const auto& kv) { return now - kv.second.since >= limit; });
  if (joins_in_flight.count(token) != 0) {
    return Status::Unavailable("the join of this token is in progress here; retry");
  }
  if (joins_in_flight.size() >= kMaxJoinsInFlight) {
    return Status::Unavailable(std::to_string(kMaxJoinsInFlight) +
                               " joins are in progress here; retry");
  }
  joins_in_flight[token] = JoinInFlight{.ticket = ++join_ticket, .since = now};
  return join_ticket;
}

void ClusterNode::Impl::FreeJoinPlace(uint64_t token, uint64_t ticket) {
  MutexLock lock(&join_mu);
  auto it = joins_in_flight.find(token);
  if (it != joins_in_flight.end() && it->second.ticket == ticket) joins_in_flight.erase(it);
}

void ClusterNode::Impl::FinishJoin(cluster::Meta* m, net::NodeId id,
                                   const cluster::JoinRequest& request, rpc::Reply reply,
                                   int attempts) {
  if (stopped.load()) return reply(Status::Unavailable("stopping"));
  const std::string raft_address = request.host + ":" + std::to_string(request.raft_port);
  m->AddServer(id, raft_address, consensus::Role::kLearner,
               [this, m, id, request, reply, attempts](Status added) {
                 // OK also when it was there already: a retry, or an add a leader change cut
                 // off, whose spare is made a learner now (consensus::Log::AddServer).
                 // AlreadyExists is another server at its id or address: not this join's.
                 if (added.ok()) {
                   FLOE_LOG_INFO(
                       "member {} at {} joined the agreed metadata as a learner", id,
                       cluster::Member{.host = request.host, .port = request.port}.address());
                   cluster::JoinAnswer answer = cluster::MakeJoinAnswer(*m->table(), id);
                   // The founders' client ports are in their HELLOs, not the table.
                   for (const cluster::Cluster::MemberState& s : cluster->Members()) {
                     for (cluster::TableMember& a : answer.members) {
                       if (a.id == s.member.id && a.client_port == 0) a.client_port = s.client_port;
                     }
                   }
                   // Only the secret makes an answer to this request (the joiner checks).
                   cluster::SignJoinAnswer(&answer, request, join_policy.secret);
                   return reply(cluster::EncodeJoinAnswer(answer));
                 }
                 if (added.code() == StatusCode::kAborted && attempts > 1) {
                   // Another configuration change is in progress: again shortly, within the call.
                   loop.PostAt(loop.NowMicros() + 25'000, [this, m, id, request, reply, attempts] {
                     FinishJoin(m, id, request, reply, attempts - 1);
                   });
                   return;
                 }
                 reply(Status::Unavailable("adding member " + std::to_string(id) +
                                           " to Raft: " + added.ToString() + "; retry"));
               });
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

}  // namespace floe::server::internal
