// The HELLO message: encoding, the strict decoder a peer's bytes go through, and the texts that
// explain a disagreement (docs/cluster.md, "Why a node waits").

#include "cluster/internal/hello.h"

#include <algorithm>
#include <set>

namespace floe::cluster::internal {

bool ValidClusterName(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameBytes) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

std::string EncodeHello(const Hello& hello) {
  std::string out;
  wire::Writer w(&out);
  w.PutVarint64(hello.protocol_version);
  wire::Encode(hello, &out);
  return out;
}

Result<Hello> DecodeHello(std::string_view bytes) {
  if (bytes.size() > kMaxHelloBytes) return Status::Corruption("HELLO: too large");
  wire::Reader r(bytes);
  uint32_t version = 0;
  FLOE_RETURN_IF_ERROR(r.GetVarint32(&version).WithContext("HELLO version"));
  if (version != kProtocolVersion) {
    // Another version's layout may differ after the varint: only the version is read.
    Hello other;
    other.protocol_version = version;
    return other;
  }
  std::string_view rest;
  FLOE_RETURN_IF_ERROR(r.GetRaw(r.remaining(), &rest));
  FLOE_ASSIGN_OR_RETURN(Hello h, wire::Decode<Hello>(rest));
  h.protocol_version = version;
  if (!ValidClusterName(h.cluster_name)) return Status::Corruption("HELLO: bad cluster name");
  if (h.members.empty() || h.members.size() > kMaxMembers) {
    return Status::Corruption("HELLO: member count out of range");
  }
  std::set<std::string_view> seen;
  for (const std::string& a : h.members) {
    Result<Member> m = ParseMember(a);
    // Canonical spelling only, so equal members compare equal as text.
    if (!m.ok() || m->address() != a) return Status::Corruption("HELLO: bad member address");
    if (!seen.insert(a).second) return Status::Corruption("HELLO: a member is listed twice");
  }
  if (h.client_port > 65535) return Status::Corruption("HELLO: client port out of range");
  if (h.self_id < 1 || h.self_id > h.members.size() || h.members[h.self_id - 1] != h.self) {
    return Status::Corruption("HELLO: the sender is not its own list's member self_id");
  }
  if (!h.founder_tokens.empty() && h.founder_tokens.size() != h.members.size()) {
    return Status::Corruption("HELLO: founder tokens are not one per member");
  }
  h.complete = true;
  return h;
}

Hello MakeHello(const Options& options, const SlotMap& map, bool formed) {
  Hello h;
  h.protocol_version = options.protocol_version;
  h.complete = true;
  h.cluster_name = options.cluster_name;
  h.slots = options.slots;
  h.map_version = map.version();
  h.fingerprint = map.Fingerprint();
  h.self_id = options.self;
  if (const Member* self = map.Find(options.self)) h.self = self->address();
  for (const Member& m : map.members()) h.members.push_back(m.address());
  h.formed = formed;
  h.client_port = options.client_port;
  return h;
}

namespace {

// "a, b, c and 4 more": at most five addresses, so one reason stays one line.
std::string ListSome(const std::vector<std::string>& addresses) {
  std::string out;
  const size_t shown = std::min<size_t>(addresses.size(), 5);
  for (size_t i = 0; i < shown; i++) {
    if (i > 0) out += ", ";
    out += addresses[i];
  }
  if (addresses.size() > shown) out += " and " + std::to_string(addresses.size() - shown) + " more";
  return out;
}

}  // namespace

bool DisagreesOnlyAsWiped(const Hello& ours, const Hello& theirs) {
  const ClusterId their_id{theirs.cluster_id_hi, theirs.cluster_id_lo};
  const ClusterId our_id{ours.cluster_id_hi, ours.cluster_id_lo};
  return theirs.protocol_version == ours.protocol_version && theirs.complete &&
         theirs.cluster_name == ours.cluster_name && theirs.slots == ours.slots &&
         !our_id.empty() && their_id.empty() && !theirs.holds_log;
}

bool CountedAsFounder(const Hello& counter, const Hello& founder) {
  // The founder's entry in the counter's list must be the founder itself: a token indexes the
  // counter's list, and the founder's id is its id in its own.
  const size_t i = founder.self_id - size_t{1};
  return founder.start_token != 0 && founder.self_id >= 1 && i < counter.founder_tokens.size() &&
         i < counter.members.size() && counter.members[i] == founder.self &&
         counter.founder_tokens[i] == founder.start_token;
}

std::string Disagreement(const Hello& ours, const Hello& theirs, const Member& expected) {
  if (theirs.protocol_version != ours.protocol_version || !theirs.complete) {
    return "protocol version " + std::to_string(theirs.protocol_version) + ", ours " +
           std::to_string(ours.protocol_version);
  }
  if (theirs.cluster_name != ours.cluster_name) {
    return "cluster-name '" + theirs.cluster_name + "', ours '" + ours.cluster_name + "'";
  }
  if (theirs.slots != ours.slots) {
    return std::to_string(theirs.slots) + " slots, ours " + std::to_string(ours.slots);
  }
  const ClusterId their_id{theirs.cluster_id_hi, theirs.cluster_id_lo};
  const ClusterId our_id{ours.cluster_id_hi, ours.cluster_id_lo};
  if (!their_id.empty() && !our_id.empty() && their_id != our_id) {
    // Rule M5: one of the two directories holds another cluster's log.
    return "cluster id " + their_id.ToString() + ", ours " + our_id.ToString() +
           " (one of us runs from another cluster's data directory)";
  }
  // Rule M5: a member with neither an id nor a log is new or wiped. Forming with it could
  // bootstrap a second log (and let a wiped voter vote twice in a term): it must join instead.
  // Unless it is the very process we formed with (M5 (7)): it never started Raft, so it never
  // voted, and it bootstraps the configuration we did.
  if (!our_id.empty() && their_id.empty() && !theirs.holds_log && !CountedAsFounder(ours, theirs)) {
    return "it holds no log (a new or wiped data directory) and ours is cluster " +
           our_id.ToString() + ": it must --join";
  }
  if (our_id.empty() && !ours.holds_log && !their_id.empty() && !CountedAsFounder(theirs, ours)) {
    return "cluster id " + their_id.ToString() +
           ", and we hold no log (a new or wiped data directory): this member must --join";
  }
  std::vector<std::string> parts;
  if (theirs.self != expected.address()) {
    parts.push_back("it answers as " + theirs.self);
  }
  if (theirs.members != ours.members) {
    const std::set<std::string> mine(ours.members.begin(), ours.members.end());
    const std::set<std::string> its(theirs.members.begin(), theirs.members.end());
    std::vector<std::string> only_its, only_mine;
    for (const std::string& a : theirs.members) {
      if (mine.count(a) == 0) only_its.push_back(a);
    }
    for (const std::string& a : ours.members) {
      if (its.count(a) == 0) only_mine.push_back(a);
    }
    if (its.count(ours.self) == 0) parts.push_back("its list lacks us (" + ours.self + ")");
    std::string how = "member lists differ:";
    if (!only_its.empty()) how += " it lists " + ListSome(only_its) + " that ours lacks";
    if (!only_mine.empty()) {
      how += std::string(only_its.empty() ? "" : ";") + " ours lists " + ListSome(only_mine) +
             " that it lacks";
    }
    parts.push_back(how);
  } else if (theirs.map_version != ours.map_version) {
    parts.push_back("slot map version " + std::to_string(theirs.map_version) + ", ours " +
                    std::to_string(ours.map_version));
  } else if (theirs.fingerprint != ours.fingerprint) {
    parts.push_back("the slot maps differ (fingerprints differ)");
  }
  std::string out;
  for (const std::string& p : parts) out += (out.empty() ? "" : "; ") + p;
  return out;
}

}  // namespace floe::cluster::internal
