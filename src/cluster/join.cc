// Joining a running cluster (docs/membership.md, rule J1): the JOIN request and answer on the
// wire (docs/wire.md, "Joining"), the secret proof, and the leader's checks and decision.

#include <cstdio>
#include <cstring>
#include <optional>
#include <set>
#include <tuple>

#include "cluster/cluster.h"
#include "cluster/internal/hello.h"
#include "wire/wire.h"

namespace floe::cluster {

namespace {

// Bound on a JOIN or its answer, checked before anything is decoded: 1,024 members of at most
// ~70 bytes fit well inside it.
constexpr size_t kMaxJoinBytes = 128 * 1024;

struct JoinWire {
  std::string cluster_name;
  uint32_t slots = 0;
  uint64_t cluster_id_hi = 0, cluster_id_lo = 0;
  std::string host;
  uint32_t port = 0, raft_port = 0, client_port = 0;
  uint64_t token = 0;
  bool forwarded = false;
  uint64_t proof_hi = 0, proof_lo = 0;
  uint64_t time = 0;

  static constexpr uint16_t kTypeId = 111;
  static constexpr std::string_view kTypeName = "ClusterJoin";
  static constexpr auto FloeIcedFields() {
    return std::make_tuple(
        wire::Field("cluster_name", &JoinWire::cluster_name),
        wire::Field("slots", &JoinWire::slots),
        wire::Field("cluster_id_hi", &JoinWire::cluster_id_hi),
        wire::Field("cluster_id_lo", &JoinWire::cluster_id_lo),
        wire::Field("host", &JoinWire::host), wire::Field("port", &JoinWire::port),
        wire::Field("raft_port", &JoinWire::raft_port),
        wire::Field("client_port", &JoinWire::client_port), wire::Field("token", &JoinWire::token),
        wire::Field("forwarded", &JoinWire::forwarded),
        wire::Field("proof_hi", &JoinWire::proof_hi), wire::Field("proof_lo", &JoinWire::proof_lo),
        wire::Field("time", &JoinWire::time));
  }
};

struct JoinedMemberWire {
  uint32_t id = 0;
  std::string host;
  uint32_t port = 0, raft_port = 0, client_port = 0;

  static constexpr uint16_t kTypeId = 113;  // nested: its body only travels
  static constexpr auto FloeIcedFields() {
    return std::make_tuple(wire::Field("id", &JoinedMemberWire::id),
                           wire::Field("host", &JoinedMemberWire::host),
                           wire::Field("port", &JoinedMemberWire::port),
                           wire::Field("raft_port", &JoinedMemberWire::raft_port),
                           wire::Field("client_port", &JoinedMemberWire::client_port));
  }
};

struct JoinedWire {
  uint32_t id = 0;
  uint64_t cluster_id_hi = 0, cluster_id_lo = 0;
  std::vector<JoinedMemberWire> members;
  uint64_t mac_hi = 0, mac_lo = 0;

  static constexpr uint16_t kTypeId = 112;
  static constexpr std::string_view kTypeName = "ClusterJoined";
  static constexpr auto FloeIcedFields() {
    return std::make_tuple(wire::Field("id", &JoinedWire::id),
                           wire::Field("cluster_id_hi", &JoinedWire::cluster_id_hi),
                           wire::Field("cluster_id_lo", &JoinedWire::cluster_id_lo),
                           wire::Field("members", &JoinedWire::members),
                           wire::Field("mac_hi", &JoinedWire::mac_hi),
                           wire::Field("mac_lo", &JoinedWire::mac_lo));
  }
};

// A canonical host literal: what ParseMember writes back for it.
bool CanonicalHost(const std::string& host, uint32_t port) {
  if (port == 0 || port > 65535 || host.empty() || host.size() > 64) return false;
  Result<Member> m =
      ParseMember(Member{.host = host, .port = static_cast<uint16_t>(port)}.address());
  return m.ok() && m->host == host;
}

std::string Versioned(uint32_t version, const std::string& body) {
  std::string out;
  wire::Writer(&out).PutVarint64(version);
  return out + body;
}

}  // namespace

std::string EncodeJoinRequest(const JoinRequest& r) {
  JoinWire w{.cluster_name = r.cluster_name,
             .slots = r.slots,
             .cluster_id_hi = r.cluster_id.hi,
             .cluster_id_lo = r.cluster_id.lo,
             .host = r.host,
             .port = r.port,
             .raft_port = r.raft_port,
             .client_port = r.client_port,
             .token = r.token,
             .forwarded = r.forwarded,
             .proof_hi = r.proof_hi,
             .proof_lo = r.proof_lo,
             .time = r.time};
  return Versioned(r.protocol_version, wire::Encode(w));
}

Result<JoinRequest> DecodeJoinRequest(std::string_view bytes) {
  if (bytes.size() > kMaxJoinBytes) return Status::Corruption("JOIN: too large");
  wire::Reader r(bytes);
  JoinRequest out;
  FLOE_RETURN_IF_ERROR(r.GetVarint32(&out.protocol_version).WithContext("JOIN version"));
  // Another version's layout may differ after the varint: only the version is read.
  if (out.protocol_version != kProtocolVersion) return out;
  std::string_view rest;
  FLOE_RETURN_IF_ERROR(r.GetRaw(r.remaining(), &rest));
  FLOE_ASSIGN_OR_RETURN(JoinWire w, wire::Decode<JoinWire>(rest));
  if (!internal::ValidClusterName(w.cluster_name))
    return Status::Corruption("JOIN: bad cluster name");
  if (!CanonicalHost(w.host, w.port)) return Status::Corruption("JOIN: bad address");
  if (w.port >= 65535 || w.raft_port != w.port + 1) {
    return Status::Corruption("JOIN: the Raft port is not the cluster port + 1");
  }
  if (w.client_port > 65535) return Status::Corruption("JOIN: client port out of range");
  if (w.token == 0) return Status::Corruption("JOIN: a token of 0");
  out.complete = true;
  out.cluster_name = std::move(w.cluster_name);
  out.slots = w.slots;
  out.cluster_id = ClusterId{w.cluster_id_hi, w.cluster_id_lo};
  out.host = std::move(w.host);
  out.port = static_cast<uint16_t>(w.port);
  out.raft_port = static_cast<uint16_t>(w.raft_port);
  out.client_port = static_cast<uint16_t>(w.client_port);
  out.token = w.token;
  out.forwarded = w.forwarded;
  out.proof_hi = w.proof_hi;
  out.proof_lo = w.proof_lo;
  out.time = w.time;
  return out;
}

namespace {

// SipHash-2-4-128 of `bytes` keyed as the RPC MAC is (rpc::DeriveMacKey(secret)).
std::pair<uint64_t, uint64_t> Mac(std::string_view secret, std::string_view bytes) {
  const rpc::MacKey key = rpc::DeriveMacKey(secret);
  uint8_t mac[16];
  rpc::SipHash128(key, bytes, mac);
  uint64_t hi = 0, lo = 0;
  std::memcpy(&hi, mac, 8);
  std::memcpy(&lo, mac + 8, 8);
  return {hi, lo};
}

// The proof over `request` (forwarded and proof cleared) under `secret`; {0, 0} without one.
std::pair<uint64_t, uint64_t> Proof(const JoinRequest& request, std::string_view secret) {
  if (secret.empty()) return {0, 0};
  JoinRequest plain = request;
  plain.forwarded = false;
  plain.proof_hi = plain.proof_lo = 0;
  return Mac(secret, std::string(kJoinProofDomain) + EncodeJoinRequest(plain));
}

// The answer's MAC: over kJoinAnswerDomain, the request's token and proof (8 bytes each, little-
// endian) and the answer encoded with its MAC cleared; {0, 0} without a secret.
std::pair<uint64_t, uint64_t> AnswerMac(const JoinAnswer& answer, const JoinRequest& request,
                                        std::string_view secret) {
  if (secret.empty()) return {0, 0};
  JoinAnswer plain = answer;
  plain.mac_hi = plain.mac_lo = 0;
  std::string bytes(kJoinAnswerDomain);
  for (uint64_t v : {request.token, request.proof_hi, request.proof_lo}) {
    for (int i = 0; i < 8; i++) bytes.push_back(static_cast<char>(v >> (8 * i)));
  }
  return Mac(secret, bytes + EncodeJoinAnswer(plain));
}

// The MAC of a refusal's reason (SignJoinRefusal).
std::pair<uint64_t, uint64_t> RefusalMac(std::string_view reason, const JoinRequest& request,
                                         std::string_view secret) {
  std::string bytes(kJoinRefusalDomain);
  for (uint64_t v : {request.token, request.proof_hi, request.proof_lo}) {
    for (int i = 0; i < 8; i++) bytes.push_back(static_cast<char>(v >> (8 * i)));
  }
  bytes.append(reason);
  return Mac(secret, bytes);
}

std::string Hex(std::pair<uint64_t, uint64_t> mac) {
  char buf[33];
  std::snprintf(buf, sizeof(buf), "%016llx%016llx", static_cast<unsigned long long>(mac.first),
                static_cast<unsigned long long>(mac.second));
  return buf;
}

}  // namespace

std::string SignJoinRefusal(std::string_view reason, const JoinRequest& request,
                            std::string_view secret) {
  if (secret.empty()) return std::string(reason);
  return std::string(reason) + "\n#" + Hex(RefusalMac(reason, request, secret));
}

std::optional<std::string> OpenJoinRefusal(std::string_view message, const JoinRequest& request,
                                           std::string_view secret) {
  if (secret.empty()) return std::string(message);
  const size_t cut = message.rfind("\n#");
  if (cut == std::string_view::npos || message.size() - cut != 2 + 32) return std::nullopt;
  const std::string_view reason = message.substr(0, cut);
  const std::string want = Hex(RefusalMac(reason, request, secret));
  // Constant time: the comparison does not stop at the first difference.
  unsigned diff = 0;
  for (size_t i = 0; i < want.size(); i++) {
    diff |= static_cast<unsigned char>(want[i]) ^ static_cast<unsigned char>(message[cut + 2 + i]);
  }
  if (diff != 0) return std::nullopt;
  return std::string(reason);
}

void SignJoinRequest(JoinRequest* request, std::string_view secret) {
  std::tie(request->proof_hi, request->proof_lo) = Proof(*request, secret);
}

bool JoinProofMatches(const JoinRequest& request, std::string_view secret) {
  const auto [hi, lo] = Proof(request, secret);
  // Constant time: the comparison does not stop at the first difference.
  return ((hi ^ request.proof_hi) | (lo ^ request.proof_lo)) == 0;
}

void SignJoinAnswer(JoinAnswer* answer, const JoinRequest& request, std::string_view secret) {
  std::tie(answer->mac_hi, answer->mac_lo) = AnswerMac(*answer, request, secret);
}

bool JoinAnswerMatches(const JoinAnswer& answer, const JoinRequest& request,
                       std::string_view secret) {
  const auto [hi, lo] = AnswerMac(answer, request, secret);
  // Constant time: the comparison does not stop at the first difference.
  return ((hi ^ answer.mac_hi) | (lo ^ answer.mac_lo)) == 0;
}

bool StrangersJoinIsProven(std::string_view bytes, std::string_view secret, uint64_t now) {
  Result<JoinRequest> request = DecodeJoinRequest(bytes);
  if (!request.ok() || !request->complete || request->forwarded) return false;
  // Fresh: a captured request replays for minutes, not for ever.
  const uint64_t apart = request->time > now ? request->time - now : now - request->time;
  return apart <= kJoinFreshSeconds && JoinProofMatches(*request, secret);
}

std::string EncodeJoinAnswer(const JoinAnswer& a) {
  JoinedWire w{.id = a.id,
               .cluster_id_hi = a.cluster_id.hi,
               .cluster_id_lo = a.cluster_id.lo,
               .mac_hi = a.mac_hi,
               .mac_lo = a.mac_lo};
  for (const TableMember& m : a.members) {
    w.members.push_back(JoinedMemberWire{.id = m.id,
                                         .host = m.host,
                                         .port = m.port,
                                         .raft_port = m.raft_port,
                                         .client_port = m.client_port});
  }
  return Versioned(kProtocolVersion, wire::Encode(w));
}

Result<JoinAnswer> DecodeJoinAnswer(std::string_view bytes) {
  if (bytes.size() > kMaxJoinBytes) return Status::Corruption("JOIN answer: too large");
  wire::Reader r(bytes);
  uint32_t version = 0;
  FLOE_RETURN_IF_ERROR(r.GetVarint32(&version).WithContext("JOIN answer version"));
  if (version != kProtocolVersion) {
    return Status::Corruption("JOIN answer: protocol version " + std::to_string(version) +
                              ", ours " + std::to_string(kProtocolVersion));
  }
  std::string_view rest;
  FLOE_RETURN_IF_ERROR(r.GetRaw(r.remaining(), &rest));
  FLOE_ASSIGN_OR_RETURN(JoinedWire w, wire::Decode<JoinedWire>(rest));
  if (w.id == 0 || w.id >= kFirstReservedId) return Status::Corruption("JOIN answer: bad id");
  if (w.members.empty() || w.members.size() > kMaxMembers) {
    return Status::Corruption("JOIN answer: member count out of range");
  }
  JoinAnswer out{.id = w.id,
                 .cluster_id = ClusterId{w.cluster_id_hi, w.cluster_id_lo},
                 .mac_hi = w.mac_hi,
                 .mac_lo = w.mac_lo};
  if (out.cluster_id.empty()) return Status::Corruption("JOIN answer: no cluster id");
  std::set<std::pair<std::string, uint32_t>> addresses;
  bool self_listed = false;
  for (const JoinedMemberWire& m : w.members) {
    if (m.id == 0 || m.id >= kFirstReservedId ||
        (!out.members.empty() && m.id <= out.members.back().id)) {
      return Status::Corruption("JOIN answer: member ids out of order");
    }
    if (!CanonicalHost(m.host, m.port) || m.raft_port == 0 || m.raft_port > 65535 ||
        m.client_port > 65535 || !addresses.insert({m.host, m.port}).second) {
      return Status::Corruption("JOIN answer: bad member address");
    }
    self_listed = self_listed || m.id == w.id;
    out.members.push_back(TableMember{.id = m.id,
                                      .host = m.host,
                                      .port = static_cast<uint16_t>(m.port),
                                      .raft_port = static_cast<uint16_t>(m.raft_port),
                                      .client_port = static_cast<uint16_t>(m.client_port)});
  }
  if (!self_listed) return Status::Corruption("JOIN answer: the joiner is not among the members");
  return out;
}

Result<JoinDecision> DecideJoin(const Table& table, const JoinRequest& request,
                                const JoinPolicy& ours) {
  auto refused = [](const std::string& why) { return Status::FailedPrecondition(why); };
  if (!request.complete || request.protocol_version != ours.protocol_version) {
    return refused("protocol version " + std::to_string(request.protocol_version) + ", ours " +
                   std::to_string(ours.protocol_version));
  }
  if (request.cluster_name != ours.cluster_name) {
    return refused("cluster-name '" + request.cluster_name + "', ours '" + ours.cluster_name + "'");
  }
  if (request.slots != ours.slots) {
    return refused(std::to_string(request.slots) + " slots, ours " + std::to_string(ours.slots));
  }
  if (table.members().empty() || table.cluster_id().empty()) {
    return Status::Unavailable("the agreed table is not initialized yet");
  }
  if (!request.cluster_id.empty() && request.cluster_id != table.cluster_id()) {
    return refused("cluster id " + request.cluster_id.ToString() + ", ours " +
                   table.cluster_id().ToString() +
                   " (the joiner's data directory holds another cluster's log)");
  }
  if (request.token == 0) return refused("a join token of 0");
  if (!JoinProofMatches(request, ours.secret)) {
    return refused("cluster secret differs (--cluster-secret)");
  }
  const std::string address = Member{.host = request.host, .port = request.port}.address();
  if (request.host.find(':') != std::string::npos) {
    return refused(address + ": the agreed metadata needs an IPv4 address");
  }
  {
    // Off loopback only with a secret, as for the founders (CheckSecurity).
    Options joiner;
    joiner.members = {Member{.id = 1, .host = request.host, .port = request.port}};
    if (Status st = CheckSecurity(joiner, ours.secret); !st.ok()) {
      return refused(std::string(st.message()));
    }
  }
  for (const TableMember& m : table.members()) {
    if (m.host != request.host || m.port != request.port) continue;
    // This join's own earlier attempt (rule J1): answered, never added twice.
    if (m.join_token == request.token) return JoinDecision{.joined = m.id};
    return refused(address + " is already member " + std::to_string(m.id));
  }
  for (const TableMember& m : table.members()) {
    // Two members on one host must not share a port, cluster or Raft (rule M6).
    if (m.host == request.host && (m.raft_port == request.raft_port ||
                                   m.raft_port == request.port || m.port == request.raft_port)) {
      return refused(address + ": its ports " + std::to_string(request.port) + " and " +
                     std::to_string(request.raft_port) + " overlap member " + std::to_string(m.id) +
                     "'s (space cluster ports on one address by 2)");
    }
  }
  if (table.members().size() >= kMaxMembers) {
    return refused("the cluster has " + std::to_string(kMaxMembers) + " members");
  }
  if (table.next_id() >= kFirstReservedId) return refused("no member id is left to assign");
  Change c;
  c.kind = Change::Kind::kAddMember;
  c.member = TableMember{.host = request.host,
                         .port = request.port,
                         .raft_port = request.raft_port,
                         .client_port = request.client_port,
                         .join_token = request.token};
  return JoinDecision{.propose = std::move(c)};
}

JoinAnswer MakeJoinAnswer(const Table& table, net::NodeId id) {
  return JoinAnswer{.id = id, .cluster_id = table.cluster_id(), .members = table.members()};
}

}  // namespace floe::cluster
