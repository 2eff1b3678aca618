// Joining a running cluster, the joiner's side (docs/membership.md, rule J1): before it has an
// id, a node asks a member, as rpc's stranger, to add it, and starts as a member with the id and
// the member list of the answer.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>

#include "cluster/cluster.h"
#include "net/net.h"
#include "rpc/rpc.h"
#include "server/internal/cluster_node.h"
#include "server/internal/cluster_node_impl.h"

namespace floe::server::internal {

namespace {

// The join token of the member at `dir` (rule J1): read, or drawn and written once, so every
// retry and every restart of this member sends the same one.
Result<uint64_t> JoinToken(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::Unavailable("cannot create " + dir + ": " + ec.message());
  const std::string path = dir + "/join-token";
  std::string text = ReadSmallFile(path);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  if (!text.empty()) {
    unsigned long long v = 0;
    char extra = 0;
    if (text.size() != 16 || std::sscanf(text.c_str(), "%16llx%c", &v, &extra) != 1 || v == 0) {
      return Status::Unavailable(path + " is damaged: remove it (the member joins anew)");
    }
    return static_cast<uint64_t>(v);
  }
  std::random_device rd;
  uint64_t token = 0;
  while (token == 0) token = (uint64_t{rd()} << 32) ^ rd();
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(token));
  if (!WriteFileDurably(path, std::string(buf) + "\n")) {
    return Status::Unavailable("cannot write " + path);
  }
  return token;
}

}  // namespace

Result<cluster::JoinAnswer> AskToJoin(const Config& config, const std::string& host,
                                      uint16_t client_port, uint64_t limit_us) {
  Result<cluster::Member> contact = cluster::ParseMember(config.join);
  if (!contact.ok()) return Status::InvalidArgument("--join: " + contact.status().ToString());
  if (config.cluster_port <= 0 || config.cluster_port >= 65535) {
    return Status::InvalidArgument("--cluster-port must be 1-65534 (Raft listens on it + 1)");
  }
  const uint16_t port = static_cast<uint16_t>(config.cluster_port);
  const std::string dir = MemberDirectory(config, host, port);
  FLOE_ASSIGN_OR_RETURN(uint64_t token, JoinToken(dir));
  cluster::JoinRequest request;
  request.complete = true;
  request.cluster_name = config.cluster_name;
  request.host = host;
  request.port = port;
  request.raft_port = static_cast<uint16_t>(port + 1);
  request.client_port = client_port;
  request.token = token;
  // The cluster its directory already belongs to (rule M5), from the file that caches the
  // log's id, so the leader refuses another cluster's directory before it adds anything (the
  // start checks the log itself too).
  if (std::string text = ReadSmallFile(dir + "/cluster-id"); !text.empty()) {
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
    if (Result<cluster::ClusterId> id = cluster::ClusterId::Parse(text); id.ok()) {
      request.cluster_id = *id;
    }
  }
  // Tests only (docs/cluster.md, "Flags"): claim another slot count, to see the refusal.
  if (const char* slots = std::getenv("FLOE_TEST_JOIN_SLOTS"); slots != nullptr && *slots) {
    char* end = nullptr;
    const unsigned long v = std::strtoul(slots, &end, 10);
    if (*end != '\0' || v == 0 || v > 65536) {
      return Status::InvalidArgument("FLOE_TEST_JOIN_SLOTS must be 1-65536");
    }
    request.slots = static_cast<uint32_t>(v);
  }

  // This node's cluster port, as the stranger, until the answer (then the member starts on it).
  net::AsioLoop loop;
  net::TransportOptions t;
  t.self = cluster::kJoinerId;
  t.bind_host = host;
  t.port = port;
  t.peers = {net::PeerAddress{.id = rpc::kAnyNodeId, .host = contact->host, .port = contact->port}};
  Result<std::unique_ptr<net::UdpTcpTransport>> transport = net::UdpTcpTransport::Start(loop, t);
  if (!transport.ok()) {
    return Status::Unavailable("cannot open the cluster port " + host + ":" + std::to_string(port) +
                               ": " + transport.status().ToString());
  }
  rpc::Options o;
  o.peers = {rpc::kAnyNodeId};
  o.down_after_us = limit_us + 1'000'000;  // it sends us no heartbeat: never "down" meanwhile
  o.lease_us = 0;
  o.ackack_delay_us = 0;  // acknowledge the answer at once: the member stops resending it
  // The answer comes unauthenticated (it proves itself inside): nothing larger is decoded.
  o.max_message = 256 * 1024;
  FLOE_LOG_INFO("joining the cluster through {} as {}:{}", contact->address(), host, port);
  const auto start = std::chrono::steady_clock::now();
  auto elapsed_us = [&start] {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                     std::chrono::steady_clock::now() - start)
                                     .count());
  };
  Status last = Status::Unavailable("no answer");
  for (;;) {
    const uint64_t left = limit_us > elapsed_us() ? limit_us - elapsed_us() : 0;
    if (left == 0) break;
    // A new endpoint, so a new incarnation, for every attempt: a member hears one stranger at a
    // time, and a higher incarnation displaces the one it hears at once, where a lower one
    // waits until none of its calls runs (docs/rpc.md, "A stranger").
    // Signed at each attempt, with the time under the proof (members drop a stale one).
    request.time = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                             std::chrono::system_clock::now().time_since_epoch())
                                             .count());
    cluster::SignJoinRequest(&request, config.cluster_secret);
    const std::string bytes = cluster::EncodeJoinRequest(request);
    Result<std::string> r = [&] {
      rpc::Endpoint endpoint(**transport, o);
      endpoint.Start();
      Result<std::string> answer = endpoint.Call(rpc::kAnyNodeId, cluster::kJoinMethod, bytes,
                                                 std::min<uint64_t>(left, 2'000'000));
      endpoint.Stop();
      return answer;
    }();
    if (r.ok()) {
      Result<cluster::JoinAnswer> answer = cluster::DecodeJoinAnswer(*r);
      if (!answer.ok()) {
        last = answer.status();
      } else if (!cluster::JoinAnswerMatches(*answer, request, config.cluster_secret)) {
        // Not the leader's (anyone may send to this port): asked again.
        FLOE_LOG_WARN("dropped an answer to the join that does not prove the cluster secret");
        last = Status::PermissionDenied("an answer that does not prove the cluster secret");
      } else if (answer->members.empty() ||
                 std::none_of(answer->members.begin(), answer->members.end(),
                              [&](const cluster::TableMember& m) {
                                return m.id == answer->id && m.host == host && m.port == port;
                              })) {
        last = Status::Corruption("the answer does not list this node under its id");
      } else {
        FLOE_LOG_INFO("joined cluster {} as member {} ({} members)", answer->cluster_id.ToString(),
                      answer->id, answer->members.size());
        return answer;
      }
    } else if (r.status().code() == StatusCode::kFailedPrecondition) {
      std::optional<std::string> reason =
          cluster::OpenJoinRefusal(r.status().message(), request, config.cluster_secret);
      if (!reason) {
        // Not the leader's (anyone may send to this port): asked again rather than exit.
        FLOE_LOG_WARN("dropped a refusal of the join that does not prove the cluster secret");
        last = Status::PermissionDenied("a refusal that does not prove the cluster secret");
      } else {
        return Status::FailedPrecondition("the cluster refused this node (asked " +
                                          contact->address() + "): " + *reason);
      }
    } else {
      last = r.status();
    }
    const uint64_t pause = std::min<uint64_t>(500'000, limit_us - std::min(limit_us, elapsed_us()));
    std::this_thread::sleep_for(std::chrono::microseconds(pause));
  }
  // A member drops a request without the secret's proof unanswered (it would otherwise answer
  // whatever address the request names): silence is all a wrong secret gets.
  std::string hint;
  if (last.code() == StatusCode::kTimeout || last.code() == StatusCode::kUnavailable) {
    // A member of another protocol version cannot read the request: it answers nothing.
    hint =
        " (a member leaves a request unanswered when --cluster-secret differs, when this "
        "host's clock is more than 10 minutes off the member's, or when it runs another "
        "protocol version than this node's " +
        std::to_string(cluster::kProtocolVersion) + ")";
  }
  return Status::Unavailable("no member let this node join within " +
                             std::to_string(limit_us / 1'000'000) + " s (asked " +
                             contact->address() + "): " + last.ToString() + hint);
}

}  // namespace floe::server::internal
