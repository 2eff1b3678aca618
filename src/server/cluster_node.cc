// The node's part in a cluster: transport, endpoint, formation, and the proxy sessions in which
// a home runs the commands other nodes forward to it (docs/cluster.md, "Commands through any
// node"). The agreed metadata is cluster_meta.cc's.

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <future>
#include <map>
#include <optional>
#include <thread>
#include <tuple>
#include <utility>

#include "net/net.h"
#include "server/internal/cluster_node_impl.h"
#include "server/internal/command.h"
#include "server/internal/frame_value.h"
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

}  // namespace

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

namespace {
std::atomic<size_t> forward_answer_budget{kForwardAnswerBudget};
std::atomic<void (*)(bool)> proxy_run_hook{nullptr};
}  // namespace

void TEST_SetProxyRunHook(void (*hook)(bool entering)) {
  proxy_run_hook.store(hook, std::memory_order_relaxed);
}

size_t ForwardAnswerBudget() { return forward_answer_budget.load(std::memory_order_relaxed); }

void TEST_SetForwardAnswerBudget(size_t bytes) {
  forward_answer_budget.store(bytes, std::memory_order_relaxed);
}

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

void ClusterNode::Impl::OnCommand(net::NodeId from, std::string_view bytes, rpc::Reply reply) {
  Result<ForwardRequest> decoded = DecodeForward(bytes);
  if (!decoded.ok()) return reply(decoded.status());
  ForwardRequest& req = *decoded;
  stats->proxied.fetch_add(1, std::memory_order_relaxed);
  const auto now_ms = static_cast<int64_t>(WallMicros() / 1000);
  // The same error for every command of the request (and no copies).
  auto refuse = [&](std::string_view error) {
    std::string one, out;
    resp::ReplyWriter(&one, req.protocol).Error(error);
    for (size_t i = 0; i < req.commands.size(); i++) AppendFramedReply(one, &out);
    for (size_t i = 0; i < req.copies.size(); i++) AppendFramedReply({}, &out);
    reply(std::move(out));
  };
  std::shared_ptr<Proxy> proxy;
  {
    MutexLock lock(&proxies_mu);
    SweepIdle(now_ms);
    Peer& peer = peers[from];
    if (req.origin < peer.origin) {
      // A request of the node's previous life, late: its client is gone.
      return refuse("ERR the client's node has restarted");
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
        return refuse("ERR max number of clients reached");
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
      // A deferred reply resumes the parked request: here when the thread that ran the command
      // has not parked it yet (it then goes on at once), else on a handler thread, never on
      // the sink's (the analytics pool's, or a DKV callback's that must not block).
      slot->session->set_reply_sink([weak = std::weak_ptr<Proxy>(slot), resumer = resumer, this](
                                        uint64_t ticket, std::string deferred) {
        std::shared_ptr<Proxy> p = weak.lock();
        if (p == nullptr) return;  // dropped (CLIENT KILL, idle, the node stopping)
        {
          MutexLock parked_lock(&p->mu);
          if (!p->parked) {
            p->arrived.emplace(ticket, std::move(deferred));
            return;
          }
          p->parked = false;
        }
        MutexLock resumer_lock(&resumer->mu);
        // Once the node stopped nothing runs it: the request is never answered, as none is
        // after Stop, and its client's node gives up at its deadline.
        if (resumer->endpoint == nullptr) return;
        resumer->endpoint->Post(1, [this, p, d = Deferred(ticket, std::move(deferred))]() mutable {
          RunProxy(p, std::move(d));
        });
      });
      peer.proxies++;
      stats->proxy_sessions.fetch_add(1, std::memory_order_relaxed);
    }
    slot->last_used_ms = now_ms;
    proxy = slot;
  }
  {
    MutexLock lock(&proxy->mu);
    proxy->waiting.push_back({.from = from, .req = std::move(req), .reply = std::move(reply)});
    if (proxy->running) return;  // runs after the one running (or parked) now
    proxy->running = true;
  }
  RunProxy(proxy, std::nullopt);
}

void ClusterNode::Impl::RunProxy(const std::shared_ptr<Proxy>& p, std::optional<Deferred> resumed) {
  void (*const hook)(bool) = proxy_run_hook.load(std::memory_order_relaxed);
  if (hook != nullptr) hook(true);
  for (;;) {
    try {
      RunProxyRequests(p, resumed);
      break;
    } catch (...) {
      // Memory ran out where no handler's net is (the replies' framing, a copy, the answer):
      // the request is answered, never left to block the client's later requests here, and the
      // next one runs.
      resumed.reset();
      FailCurrentRequest(*p);
    }
  }
  if (hook != nullptr) hook(false);
}

void ClusterNode::Impl::FailCurrentRequest(Proxy& p) noexcept {
  if (!p.current) return;
  Pending c = std::move(*p.current);
  p.current.reset();
  std::string().swap(p.out);
  stats->proxy_failures.fetch_add(1, std::memory_order_relaxed);
  // Its transaction, if one was open, ends with it (the client hears that none of it is known):
  // left open, the client's next MULTI was refused as nested and its EXEC ran this one's queue.
  // The transaction is gone before anything in EndTransaction may allocate.
  try {
    p.session->EndTransaction();
    FLOE_LOG_WARN("a request of node {} ran out of memory here: answered as of unknown outcome",
                  c.from);
  } catch (...) {
  }
  try {
    std::string one, out;
    resp::ReplyWriter(&one, c.req.protocol)
        .Error("ERR out of memory at the key's home: the command may or may not have run");
    for (size_t i = 0; i < c.req.commands.size(); i++) AppendFramedReply(one, &out);
    for (size_t i = 0; i < c.req.copies.size(); i++) AppendFramedReply({}, &out);
    c.reply(std::move(out));
  } catch (...) {
    // The framed answer could not be made (~80 bytes a command): a refusal, which the client's
    // node answers for each command as an error, allocates about nothing.
    try {
      c.reply(Status::ResourceExhausted("out of memory at the key's home"));
    } catch (...) {
      // Not even that: the client's node answers at its deadline that the outcome is unknown.
    }
  }
}

void ClusterNode::Impl::RunProxyRequests(const std::shared_ptr<Proxy>& p,
                                         std::optional<Deferred>& resumed) {
  Session& s = *p->session;
  std::string reply;
  std::vector<std::string_view> args;
  for (;;) {
    if (!p->current) {
      {
        MutexLock lock(&p->mu);
        if (p->waiting.empty()) {
          p->running = false;
          return;
        }
        p->current.emplace(std::move(p->waiting.front()));
        p->waiting.pop_front();
      }
      Pending& c = *p->current;
      if (c.req.seq <= p->last_seq) {
        // Late: a later request of the client already ran. Its node answered this one
        // CLUSTERDOWN (may or may not have happened); it does not happen, rather than out of
        // order.
        std::string one, out;
        resp::ReplyWriter(&one, c.req.protocol).Error("ERR the request arrived after a later one");
        for (size_t i = 0; i < c.req.commands.size(); i++) AppendFramedReply(one, &out);
        for (size_t i = 0; i < c.req.copies.size(); i++) AppendFramedReply({}, &out);
        c.reply(std::move(out));
        p->current.reset();
        continue;
      }
      p->last_seq = c.req.seq;
      p->next = 0;
      p->out.clear();
      s.set_protocol(c.req.protocol);
      s.set_request_origin(c.from, c.req.sent_us);
      if (c.req.watching && !s.watching()) s.BreakWatches();
    }
    Pending& c = *p->current;
    if (resumed) {
      // The parked command's reply (a C7 change, an analytics command: it finishes here). A
      // change that waited for its keys may then wait for its backups (docs/replication.md,
      // H3): parked again until the sink brings the same ticket back.
      bool held = false;
      std::string bytes = s.FinishDeferred(resumed->first, std::move(resumed->second), &held);
      resumed.reset();
      if (held) {
        MutexLock lock(&p->mu);
        if (p->arrived) {
          resumed = std::move(p->arrived);
          p->arrived.reset();
          continue;
        }
        p->parked = true;
        return;
      }
      AppendFramedReply(bytes, &p->out);
      p->next++;
    }
    bool parked = false;
    while (p->next < c.req.commands.size()) {
      // Rule C9: past the answer budget the request stops before a command that begins an
      // entry at the client's node, outside a transaction, and the rest go back unrun.
      if (p->out.size() >= ForwardAnswerBudget() && !s.in_multi() &&
          !std::binary_search(c.req.continues.begin(), c.req.continues.end(), p->next)) {
        break;
      }
      const auto& command = c.req.commands[p->next];
      args.assign(command.begin(), command.end());
      reply.clear();
      if (!s.Execute(args, &reply)) {
        // Deferred: its reply comes through the sink, perhaps already.
        MutexLock lock(&p->mu);
        if (p->arrived) {
          resumed = std::move(p->arrived);
          p->arrived.reset();
        } else {
          p->parked = parked = true;
        }
        break;
      }
      AppendFramedReply(reply, &p->out);
      p->next++;
    }
    if (parked) return;  // the sink resumes it
    if (resumed) continue;
    // Rule C8: copies of the keys the sender's reads asked for, each answered as a DKV GET;
    // none from a member that serves no key (docs/membership.md, "Routing from the agreed
    // table": its store may be stale or empty until it has caught up with the agreed metadata).
    // What did not run (C9) answers an empty frame: no RESP reply is empty.
    if (p->next < c.req.commands.size()) stats->answers_cut.fetch_add(1, std::memory_order_relaxed);
    for (size_t i = p->next; i < c.req.commands.size(); i++) AppendFramedReply({}, &p->out);
    for (uint32_t i : c.req.copies) {
      Result<std::string> copy = i >= p->next ? Result<std::string>(Status::Aborted("not run"))
                                 : !Serving()
                                     ? Result<std::string>(Status::Unavailable("not serving"))
                                 : c.req.commands[i].size() >= 2
                                     ? dkv->HandOut(c.from, c.req.commands[i][1], c.req.sent_us)
                                     : Result<std::string>(Status::InvalidArgument("no key"));
      AppendFramedReply(copy.ok() ? *copy : std::string(), &p->out);
    }
    // A reply that throws leaves `current` for FailCurrentRequest to answer; the endpoint
    // ignores a second answer to a request it answered.
    c.reply(std::exchange(p->out, std::string()));
    p->current.reset();
  }
}

ClusterNode::Impl::Proxy::~Proxy() {
  // No thread runs it (one that did would hold a reference), so `current` and the fields the
  // running thread owns are quiet.
  std::deque<Pending> queued;
  {
    MutexLock lock(&mu);
    queued.swap(waiting);
  }
  auto answer = [](Pending& c, size_t ran, std::string framed) {
    std::string one;
    resp::ReplyWriter(&one, c.req.protocol)
        .Error("ERR the client's session at the key's home was closed before the command ran");
    for (size_t i = ran; i < c.req.commands.size(); i++) AppendFramedReply(one, &framed);
    for (size_t i = 0; i < c.req.copies.size(); i++) AppendFramedReply({}, &framed);
    c.reply(std::move(framed));
  };
  if (current) answer(*current, next, std::move(out));
  for (Pending& c : queued) answer(c, 0, std::string());
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
    // A capture's wake from now on posts nothing.
    MutexLock lock(&impl_->waker->mu);
    impl_->waker->impl = nullptr;
  }
  // Headers that die from now on (the engine's store outlives the node) send nothing.
  if (impl_->dropper) impl_->dropper->Stop();
  // No member's map runs from now on (the waiting ones are dropped: their callers time out).
  if (impl_->map_pool) impl_->map_pool->Shutdown();
  {
    MutexLock lock(&impl_->meta_mu);
    impl_->meta_stopped = true;
    if (impl_->meta) impl_->meta->Stop();
  }
  // After Raft: no table is published any more, so no count is queued.
  impl_->StopGuard();
  impl_->cluster->Stop();
  impl_->endpoint->Stop();
  {
    // A proxy session's deferred reply that comes from now on resumes nothing.
    MutexLock lock(&impl_->resumer->mu);
    impl_->resumer->endpoint = nullptr;
  }
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
  const std::vector<std::string> binds = BindAddresses(config.bind);
  std::string host = binds.empty() ? std::string() : binds[0];
  if (host == "localhost") host = "127.0.0.1";
  if (host == "0.0.0.0" || host == "::") host.clear();
  if (config.cluster_port == 0) {
    return Status::InvalidArgument(std::string(config.join.empty() ? "--cluster" : "--join") +
                                   " needs --cluster-port: which member is this node");
  }
  // Made first: a joiner takes its directory's lock (impl->meta_lock) before it asks.
  auto impl = std::make_unique<Impl>();
  std::vector<cluster::Member> members;
  std::optional<cluster::JoinAnswer> joined;
  if (!config.join.empty()) {
    // Rule J1: the cluster gives this node its id and the member list.
    if (!config.cluster.empty()) {
      return Status::InvalidArgument("give --cluster (a new cluster) or --join (a running one)");
    }
    if (host.empty() || host.find(':') != std::string::npos) {
      return Status::InvalidArgument(
          "--join needs --bind with this node's IPv4 address (the members reach it there)");
    }
    // Every local check first: nothing is committed for a node that then cannot start.
    FLOE_RETURN_IF_ERROR(CheckJoinerLocally(config, host, &impl->meta_lock));
    // A restart of a joined member starts from its directory: no leader need be up.
    FLOE_ASSIGN_OR_RETURN(joined, JoinedBefore(config, host));
    if (joined) {
      FLOE_LOG_INFO("member {} of cluster {}, as its directory records (joined before)", joined->id,
                    joined->cluster_id.ToString());
    } else {
      FLOE_ASSIGN_OR_RETURN(joined, AskToJoin(config, host, static_cast<uint16_t>(client_port)));
      KeepJoinAnswer(config, host, *joined);
    }
    members = MembersOf(*joined);
  } else {
    FLOE_ASSIGN_OR_RETURN(members, cluster::ParseMembers(config.cluster));
  }
  Result<net::NodeId> self =
      joined ? Result<net::NodeId>(joined->id)
             : cluster::FindSelf(members, host, static_cast<uint16_t>(config.cluster_port));
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
  co.joined = joined.has_value();
  FLOE_RETURN_IF_ERROR(cluster::ValidateOptions(co));
  FLOE_RETURN_IF_ERROR(cluster::CheckSecurity(co, config.cluster_secret));
  FLOE_ASSIGN_OR_RETURN(net::Faults faults, FaultsFromEnvironment());

  impl->engine = engine;
  impl->timeout_us = static_cast<uint64_t>(config.cluster_node_timeout) * 1000;
  impl->lease_us = static_cast<uint64_t>(std::max<int64_t>(config.cluster_owner_lease, 10)) * 1000;
  impl->replicas_asked = config.replicas;
  const cluster::Member& me = *std::find_if(
      members.begin(), members.end(), [&self](const cluster::Member& x) { return x.id == *self; });
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
  FLOE_RETURN_IF_ERROR(impl->PrepareMetaAtStart(config, members, *self, joined.has_value(),
                                                &cluster_id, &holds_log));
  if (joined) {
    // Rule J1: it serves only from the agreed table (its balanced map is not the cluster's).
    {
      MutexLock lock(&impl->meta_mu);
      if (!impl->meta_options) {
        return Status::FailedPrecondition(
            "a joined member needs the agreed metadata, which is off: " + impl->meta_off);
      }
    }
    if (!cluster_id.empty() && cluster_id != joined->cluster_id) {
      return Status::FailedPrecondition("this member's directory holds the log of cluster " +
                                        cluster_id.ToString() + ", but it joined cluster " +
                                        joined->cluster_id.ToString() +
                                        " (give it its own --dir, or remove the directory)");
    }
    cluster_id = joined->cluster_id;
    impl->recorded_id = cluster_id;
    for (const cluster::TableMember& m : joined->members) {
      impl->joined_client_ports[m.id] = m.client_port;
    }
  }
  rpc::Options o;
  o.peers = cluster::PeerIds(members, *self);
  o.secret = config.cluster_secret;
  o.down_after_us = std::min<uint64_t>(impl->timeout_us, 3'000'000);
  o.on_lease_lapse = dkv::Dkv::MakeLeaseHook(impl->dkv_slot);
  o.threads_per_class = 8;
  // What a handler retired (a forwarded DEL's value, an invalidated copy) is freed by the I/O
  // threads' periodic Reclaim once the handler goes idle; kept on its own list, it waited for
  // that handler's next 1,024 retirements or 1 MiB, which an idle member may never reach.
  o.on_idle = [] { store::Store::HandOff(); };
  o.stranger_method = cluster::kJoinMethod;  // a joiner asks as rpc's stranger (rule J1)
  // Only a joiner's request that proves the secret is taken (answered); the rest is dropped.
  o.stranger_check = [secret = config.cluster_secret](std::string_view request) {
    const auto now = std::chrono::duration_cast<std::chrono::seconds>(
        std::chrono::system_clock::now().time_since_epoch());
    return cluster::StrangersJoinIsProven(request, secret, static_cast<uint64_t>(now.count()));
  };
  impl->endpoint = std::make_unique<rpc::Endpoint>(*impl->transport, o);
  {
    MutexLock lock(&impl->resumer->mu);
    impl->resumer->endpoint = impl->endpoint.get();
  }
  impl->cluster = std::make_unique<cluster::Cluster>(*impl->endpoint, impl->loop, co);
  impl->cluster->SetClusterId(cluster_id);
  impl->cluster->SetHoldsLog(holds_log);
  Impl* raw = impl.get();
  dkv::Options d;
  d.self = *self;
  // No home (0) until the member serves: formed and caught up with the agreed metadata
  // (docs/membership.md, "Routing from the agreed table"), so its DKV answers no GET or WRITE.
  d.home = [raw](std::string_view key) -> net::NodeId {
    return raw->Serving() ? raw->Routes().Home(cluster::KeySlot(key)) : 0;
  };
  d.timeout_us = impl->timeout_us;
  d.lease_us = o.lease_us;
  d.start_grace_us = o.lease_us + o.lease_us / 20 + 1000;
  impl->dkv_start_grace_us = d.start_grace_us;
  d.peers = o.peers;
  // Patience, then the lease and its margin (docs/rpc.md, "Leases": 2% + 1 ms).
  impl->holder_wait_us = d.invalidate_patience_us + d.lease_us + d.lease_us / 50 + 1000;
  d.home_store = &engine->store();
  d.export_value = ExportForCache;
  impl->dkv = std::make_unique<dkv::Dkv>(*impl->endpoint, d);
  impl->dkv_slot->store(impl->dkv.get(), std::memory_order_release);
  impl->chunks = std::make_unique<ChunkStore>(engine);
  impl->map_pool = std::make_unique<AnalyticsPool>();
  impl->RegisterFrameMethods();
  impl->RegisterReplication();
  impl->endpoint->RegisterAsync(kCommandMethod, 1,
                                [raw](net::NodeId from, std::string_view req, rpc::Reply reply) {
                                  raw->OnCommand(from, req, std::move(reply));
                                });
  impl->endpoint->RegisterAsync(
      kMetaCommitMethod, rpc::kPriorityClasses - 1,
      [raw](net::NodeId, std::string_view, rpc::Reply reply) {
        raw->OnMetaCommit(std::move(reply));
      },
      /*runs_inline=*/true);
  impl->join_policy =
      cluster::JoinPolicy{.cluster_name = config.cluster_name, .secret = config.cluster_secret};
  impl->endpoint->RegisterAsync(cluster::kJoinMethod, rpc::kPriorityClasses - 1,
                                [raw](net::NodeId from, std::string_view req, rpc::Reply reply) {
                                  raw->OnJoin(from, req, std::move(reply));
                                });
  impl->endpoint->RegisterAsync(kRemoveMemberMethod, rpc::kPriorityClasses - 1,
                                [raw](net::NodeId, std::string_view req, rpc::Reply reply) {
                                  raw->OnRemoveMember(req, std::move(reply));
                                });
  impl->endpoint->Register(kRemovedNoticeMethod, rpc::kPriorityClasses - 1,
                           [raw](net::NodeId from, std::string_view req) -> Result<std::string> {
                             return raw->OnRemovedNotice(from, req);
                           });
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
  node->impl_->StartDropper(node.get());
  FLOE_LOG_INFO("cluster '{}': this node is {} (node {} of {}), waiting for the others",
                config.cluster_name, me.address(), *self, members.size());
  // Job ids name this member (docs/frames_cluster.md, D11).
  engine->jobs().SetMember(static_cast<uint32_t>(*self));
  // The engine knows its node before any peer's command can reach a proxy session.
  engine->set_cluster(node.get());
  node->impl_->endpoint->Start();
  node->impl_->cluster->OnFormed([raw, n = node.get()] {
    raw->StartMeta();
    raw->loop.Post([raw] { raw->RecordLife(); });
    raw->loop.Post([raw] { raw->ReplicationTick(); });
    raw->loop.Post([raw] { raw->RenewLease(); });
    // The orphan sweep of the chunk store (docs/frames_cluster.md, D10), on the loop.
    raw->loop.PostAt(raw->loop.NowMicros() + kChunkSweepUs, [raw, n] { raw->SweepTick(n); });
  });
  node->impl_->cluster->Start();
  return node;
}

size_t ClusterNode::TEST_ParkedProxies() {
  MutexLock lock(&impl_->proxies_mu);
  size_t parked = 0;
  for (const auto& [key, proxy] : impl_->proxies) {
    MutexLock proxy_lock(&proxy->mu);
    if (proxy->parked) parked++;
  }
  return parked;
}

void ClusterNode::TEST_DropProxySessions() {
  MutexLock lock(&impl_->proxies_mu);
  for (auto it = impl_->proxies.begin(); it != impl_->proxies.end();) it = impl_->Drop(it);
}

bool ClusterNode::formed() const { return impl_->cluster->formed(); }
net::NodeId ClusterNode::self() const { return impl_->cluster->self(); }
const cluster::SlotMap& ClusterNode::map() const { return impl_->Routes(); }
uint64_t ClusterNode::joins_proposed() const {
  return impl_->joins_proposed.load(std::memory_order_relaxed);
}
uint64_t ClusterNode::slots_given_away_with_keys() const {
  return impl_->slots_given_away_with_keys.load(std::memory_order_relaxed);
}
void ClusterNode::TEST_SetGuardHook(std::function<void()> hook) {
  MutexLock lock(&impl_->guard_mu);
  impl_->guard_hook = std::move(hook);
}

void ClusterNode::TEST_Join(std::string request, std::function<void(Result<std::string>)> done) {
  impl_->OnJoin(1, request, std::move(done));
}

void ClusterNode::TEST_BackupDown(net::NodeId from, std::string request,
                                  std::function<void(Result<std::string>)> done) {
  impl_->OnBackupDown(from, request, std::move(done));
}

void ClusterNode::TEST_StopLeases(bool stop) { impl_->leases_stopped.store(stop); }

void ClusterNode::TEST_Lease(net::NodeId from, std::string request,
                             std::function<void(Result<std::string>)> done) {
  impl_->OnLease(from, request, std::move(done));
}

uint64_t ClusterNode::lease_left_ms() const {
  if (!impl_->makes_backups.load()) return 0;
  const uint64_t until = impl_->lease_until_us.load(), now = BootMicros();
  return until > now ? (until - now) / 1000 : 0;
}

uint64_t ClusterNode::failovers() const { return impl_->failovers.load(); }

void ClusterNode::TEST_SetDemoteAfter(std::chrono::microseconds after) {
  impl_->demote_after_us.store(static_cast<uint64_t>(after.count()));
}

Result<std::string> ClusterNode::TEST_RemovedNotice(net::NodeId from, std::string_view request) {
  return impl_->OnRemovedNotice(from, request);
}

cluster::Meta* ClusterNode::TEST_meta() {
  MutexLock lock(&impl_->meta_mu);
  return impl_->meta.get();
}
const cluster::Cluster& ClusterNode::cluster() const { return *impl_->cluster; }
std::vector<cluster::Cluster::MemberState> ClusterNode::Members() const {
  std::vector<cluster::Cluster::MemberState> out = impl_->cluster->Members();
  for (cluster::Cluster::MemberState& s : out) {
    auto it = impl_->joined_client_ports.find(s.member.id);
    if (s.client_port == 0 && it != impl_->joined_client_ports.end()) s.client_port = it->second;
  }
  const cluster::Meta* m = impl_->meta_view.load(std::memory_order_acquire);
  if (m == nullptr) return out;
  const std::shared_ptr<const cluster::Table> table = m->table();
  const net::NodeId last = out.empty() ? 0 : out.back().member.id;
  for (const cluster::TableMember& t : table->members()) {
    if (t.id <= last) continue;  // a founder (ids are never reused: a joiner's is higher)
    out.push_back(cluster::Cluster::MemberState{
        .member = cluster::Member{.id = t.id, .host = t.host, .port = t.port},
        .self = t.id == impl_->cluster->self(),
        .agreed = true,
        .up = t.id == impl_->cluster->self() || impl_->endpoint->PeerUp(t.id),
        .client_port = t.client_port});
  }
  return out;
}
const rpc::Stats& ClusterNode::rpc_stats() const { return impl_->endpoint->stats(); }
const cluster::Meta* ClusterNode::meta() const {
  return impl_->meta_view.load(std::memory_order_acquire);
}
std::string ClusterNode::meta_off() const {
  if (impl_->removed.load()) {
    MutexLock lock(&impl_->left_mu);
    return impl_->removed_why;  // before the loop has stopped Raft and set meta_off too
  }
  MutexLock lock(&impl_->meta_mu);
  return impl_->meta_off;
}

net::NodeId ClusterNode::Home(uint16_t slot) const {
  return formed() ? impl_->Routes().Home(slot) : 0;
}

bool ClusterNode::meta_caught_up() const { return impl_->meta_caught_up.load(); }

bool ClusterNode::life_recorded() const {
  const cluster::Meta* m = impl_->meta_view.load(std::memory_order_acquire);
  if (m == nullptr) return false;
  const std::shared_ptr<const cluster::Table> table = m->table();  // holds what `me` points to
  const cluster::TableMember* me = table->FindMember(self());
  return me != nullptr && me->life == origin_;
}

bool ClusterNode::serving() const { return impl_->Serving(); }

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

void ClusterNode::ForwardEncoded(net::NodeId home, std::string request, bool changes,
                                 std::function<void(Result<std::string>)> done) {
  stats_.forwarded.fetch_add(1, std::memory_order_relaxed);
  Stats* stats = &stats_;
  // A change may wait at its home for a cut-off holder's lease (rule C7): that wait is the
  // holder's, not the home's, so it does not count against cluster-node-timeout.
  // A home that makes backups holds a reply up to twice cluster-node-timeout (H5): its
  // TIMEOUT or CLUSTERDOWN then comes from the home, which knows why.
  const uint64_t timeout =
      impl_->timeout_us + (changes ? impl_->holder_wait_us : 0) +
      (impl_->makes_backups.load(std::memory_order_relaxed) ? 2 * impl_->timeout_us : 0);
  impl_->endpoint->CallAsync(home, kCommandMethod, std::move(request), timeout,
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
