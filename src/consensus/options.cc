// Checks of everything a caller hands the consensus module: addresses, options, configurations.
// Start runs these before touching raft, so a bad value is an InvalidArgument naming the field
// rather than a raft error code from deep inside libraft.

#include <arpa/inet.h>

#include <set>

#include "consensus/consensus.h"

namespace floe::consensus {

namespace {

// raft_uv keeps the directory's path inside fixed-size buffers; well below that.
constexpr size_t kMaxDirBytes = 900;
constexpr uint64_t kMaxThreshold = uint64_t{1} << 31;
constexpr uint64_t kMaxPendingLimit = uint64_t{1} << 20;

Status Field(std::string_view name, std::string_view why) {
  return Status::InvalidArgument(std::string(name) + ": " + std::string(why));
}

}  // namespace

std::string_view RoleName(Role role) {
  switch (role) {
    case Role::kVoter:
      return "voter";
    case Role::kLearner:
      return "learner";
    case Role::kSpare:
      return "spare";
  }
  return "unknown";
}

Status ValidateAddress(std::string_view address) {
  const size_t colon = address.rfind(':');
  if (address.empty() || colon == std::string_view::npos || colon == 0) {
    return Status::InvalidArgument("address '" + std::string(address) +
                                   "' is not of the form a.b.c.d:port");
  }
  const std::string host(address.substr(0, colon));
  in_addr parsed{};
  if (inet_pton(AF_INET, host.c_str(), &parsed) != 1) {
    return Status::InvalidArgument("address '" + std::string(address) +
                                   "': host is not an IPv4 literal");
  }
  int64_t port = 0;
  if (!ParseDecimalInt64(address.substr(colon + 1), &port) || port < 1 || port > 65535) {
    return Status::InvalidArgument("address '" + std::string(address) +
                                   "': port is not in 1-65535");
  }
  return Status::OK();
}

Status Validate(const Options& o) {
  if (o.id == 0) return Field("id", "must be >= 1");
  if (Status s = ValidateAddress(o.address); !s.ok()) return s.WithContext("address");
  if (o.dir.empty()) return Field("dir", "must not be empty");
  if (o.dir.size() > kMaxDirBytes) return Field("dir", "longer than 900 bytes");
  if (o.dir.find('\0') != std::string::npos) return Field("dir", "contains a NUL byte");
  if (o.election_timeout_ms < 10 || o.election_timeout_ms > 60'000) {
    return Field("election_timeout_ms", "must be in 10-60000");
  }
  if (o.heartbeat_timeout_ms < 1 || o.heartbeat_timeout_ms > o.election_timeout_ms / 2) {
    return Field("heartbeat_timeout_ms", "must be in 1 .. election_timeout_ms / 2");
  }
  if (o.snapshot_threshold < 1 || o.snapshot_threshold > kMaxThreshold) {
    return Field("snapshot_threshold", "must be in 1 .. 2^31");
  }
  if (o.snapshot_trailing > kMaxThreshold) return Field("snapshot_trailing", "must be <= 2^31");
  if (o.max_pending < 1 || o.max_pending > kMaxPendingLimit) {
    return Field("max_pending", "must be in 1 .. 2^20");
  }
  if (o.bootstrap.empty()) return Status::OK();
  if (o.bootstrap.size() > kMaxServers) return Field("bootstrap", "more than 1024 servers");
  std::set<uint64_t> ids;
  std::set<std::string> addresses;
  size_t voters = 0;
  bool self_listed = false;
  for (const Server& server : o.bootstrap) {
    const std::string who = "server " + std::to_string(server.id);
    if (server.id == 0) return Field("bootstrap", "a server id is 0");
    if (Status s = ValidateAddress(server.address); !s.ok()) {
      return s.WithContext("bootstrap: " + who);
    }
    if (!ids.insert(server.id).second) return Field("bootstrap", who + " is listed twice");
    if (!addresses.insert(server.address).second) {
      return Field("bootstrap", "address " + server.address + " is listed twice");
    }
    if (server.role == Role::kVoter) voters++;
    if (server.id == o.id) {
      if (server.address != o.address) {
        return Field("bootstrap", "this server (" + who + ") is listed at " + server.address +
                                      ", not at its address " + o.address);
      }
      self_listed = true;
    }
  }
  if (!self_listed) return Field("bootstrap", "does not list this server's id");
  if (voters == 0) return Field("bootstrap", "lists no voter");
  if (voters > kMaxVoters) return Field("bootstrap", "lists more than 5 voters");
  return Status::OK();
}

}  // namespace floe::consensus
