// Key -> slot -> home: CRC16, member lists, the balanced slot map, and the checks the server
// runs on cluster options before it starts.

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <set>

#include "cluster/cluster.h"
#include "cluster/internal/hello.h"
#include "wire/wire.h"

namespace floe::cluster {

namespace {

// CRC16/XMODEM, table-driven, the table built at compile time.
constexpr std::array<uint16_t, 256> MakeCrc16Table() {
  std::array<uint16_t, 256> t{};
  for (int i = 0; i < 256; i++) {
    uint16_t c = static_cast<uint16_t>(i << 8);
    for (int b = 0; b < 8; b++) {
      c = static_cast<uint16_t>((c & 0x8000) != 0 ? (c << 1) ^ 0x1021 : c << 1);
    }
    t[i] = c;
  }
  return t;
}
constexpr std::array<uint16_t, 256> kCrc16Table = MakeCrc16Table();

// An address literal parsed for ordering: family (4 before 6), then the bytes.
struct Binary {
  int family = 0;
  std::array<uint8_t, 16> bytes{};
  auto operator<=>(const Binary&) const = default;
};

bool ParseHost(const std::string& host, Binary* out, std::string* canonical) {
  char text[INET6_ADDRSTRLEN] = {};
  if (inet_pton(AF_INET, host.c_str(), out->bytes.data()) == 1) {
    out->family = 4;
    inet_ntop(AF_INET, out->bytes.data(), text, sizeof(text));
  } else if (inet_pton(AF_INET6, host.c_str(), out->bytes.data()) == 1) {
    out->family = 6;
    inet_ntop(AF_INET6, out->bytes.data(), text, sizeof(text));
  } else {
    return false;
  }
  *canonical = text;
  return true;
}

bool IsLoopback(const std::string& host) {
  Binary b;
  std::string canonical;
  if (!ParseHost(host, &b, &canonical)) return false;
  if (b.family == 4) return b.bytes[0] == 127;
  static constexpr std::array<uint8_t, 16> kLoopback6 = {0, 0, 0, 0, 0, 0, 0, 0,
                                                         0, 0, 0, 0, 0, 0, 0, 1};
  return b.bytes == kLoopback6;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

uint16_t Crc16(std::string_view bytes) {
  uint16_t crc = 0;
  for (const char ch : bytes) {
    crc = static_cast<uint16_t>((crc << 8) ^
                                kCrc16Table[((crc >> 8) ^ static_cast<uint8_t>(ch)) & 0xff]);
  }
  return crc;
}

uint16_t KeySlot(std::string_view key) {
  const size_t open = key.find('{');
  if (open != std::string_view::npos) {
    const size_t close = key.find('}', open + 1);
    // "{}" (an empty tag) or no closing brace: the whole key is hashed, as Redis does.
    if (close != std::string_view::npos && close > open + 1) {
      key = key.substr(open + 1, close - open - 1);
    }
  }
  return static_cast<uint16_t>(Crc16(key) & (kSlots - 1));
}

std::string Member::address() const {
  const std::string p = std::to_string(port);
  return host.find(':') != std::string::npos ? "[" + host + "]:" + p : host + ":" + p;
}

Result<Member> ParseMember(std::string_view entry) {
  const std::string quoted = "'" + std::string(entry) + "'";
  std::string host;
  std::string_view port_text;
  if (entry.starts_with('[')) {
    const size_t close = entry.find(']');
    if (close == std::string_view::npos || close + 1 >= entry.size() || entry[close + 1] != ':') {
      return Status::InvalidArgument(quoted + ": an IPv6 member is written [address]:port");
    }
    host = std::string(entry.substr(1, close - 1));
    port_text = entry.substr(close + 2);
    Binary b;
    std::string canonical;
    if (!ParseHost(host, &b, &canonical) || b.family != 6) {
      return Status::InvalidArgument(quoted + ": '" + host + "' is not an IPv6 address");
    }
    host = canonical;
  } else {
    const size_t colon = entry.rfind(':');
    if (colon == std::string_view::npos) {
      return Status::InvalidArgument(quoted + ": missing ':port'");
    }
    host = std::string(entry.substr(0, colon));
    port_text = entry.substr(colon + 1);
    if (host.find(':') != std::string::npos) {
      return Status::InvalidArgument(quoted + ": an IPv6 member is written [address]:port");
    }
    if (host == "localhost") host = "127.0.0.1";
    Binary b;
    std::string canonical;
    if (!ParseHost(host, &b, &canonical)) {
      return Status::InvalidArgument(
          quoted + ": the host must be an IPv4 address, an IPv6 address in [], or localhost");
    }
    host = canonical;
  }
  uint32_t port = 0;
  bool digits = !port_text.empty() && port_text.size() <= 5;
  for (const char c : port_text) {
    if (c < '0' || c > '9') {
      digits = false;
      break;
    }
    port = port * 10 + static_cast<uint32_t>(c - '0');
  }
  if (!digits || port == 0 || port > 65535) {
    return Status::InvalidArgument(quoted + ": the port must be a number in 1-65535");
  }
  return Member{.id = 0, .host = std::move(host), .port = static_cast<uint16_t>(port)};
}

Result<std::vector<Member>> ParseMembers(std::string_view list) {
  if (Trim(list).empty()) return Status::InvalidArgument("the member list is empty");
  std::vector<std::pair<std::pair<Binary, uint16_t>, Member>> parsed;
  size_t position = 0;
  while (true) {
    position++;
    const size_t comma = list.find(',');
    const std::string_view entry = Trim(list.substr(0, comma));
    if (entry.empty()) {
      return Status::InvalidArgument("member " + std::to_string(position) +
                                     " of the list is empty");
    }
    if (parsed.size() >= kMaxMembers) {
      return Status::InvalidArgument("more than " + std::to_string(kMaxMembers) + " members");
    }
    FLOE_ASSIGN_OR_RETURN(Member m, ParseMember(entry));
    Binary b;
    std::string canonical;
    ParseHost(m.host, &b, &canonical);
    parsed.push_back({{b, m.port}, std::move(m)});
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  std::sort(parsed.begin(), parsed.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<Member> members;
  members.reserve(parsed.size());
  for (size_t i = 0; i < parsed.size(); i++) {
    if (i > 0 && parsed[i].first == parsed[i - 1].first) {
      return Status::InvalidArgument(parsed[i].second.address() + " is listed twice");
    }
    members.push_back(std::move(parsed[i].second));
    members.back().id = static_cast<net::NodeId>(i + 1);
  }
  return members;
}

// ---------------------------------------------------------------------------------------------
SlotMap SlotMap::Balanced(std::vector<Member> members, uint64_t version) {
  std::sort(members.begin(), members.end(),
            [](const Member& a, const Member& b) { return a.id < b.id; });
  SlotMap map;
  map.version_ = version;
  map.members_ = std::move(members);
  map.homes_.assign(kSlots, 0);
  const size_t n = map.members_.size();
  if (n > 0 && n <= static_cast<size_t>(kSlots)) {
    const size_t base = kSlots / n, extra = kSlots % n;
    size_t slot = 0;
    for (size_t i = 0; i < n; i++) {
      const size_t count = base + (i < extra ? 1 : 0);
      for (size_t k = 0; k < count; k++) map.homes_[slot++] = map.members_[i].id;
    }
  }
  std::string bytes;
  wire::Writer w(&bytes);
  w.PutVarint64(version);
  w.PutVarint64(kSlots);
  w.PutVarint64(n);
  for (const Member& m : map.members_) {
    w.PutVarint64(m.id);
    w.PutLengthPrefixed(m.address());
  }
  map.fingerprint_ = HashBytes(bytes);
  return map;
}

SlotMap SlotMap::WithHomes(std::vector<Member> members, std::vector<net::NodeId> homes,
                           uint64_t version) {
  FLOE_CHECK(homes.size() == static_cast<size_t>(kSlots));
  SlotMap map = Balanced(std::move(members), version);
  map.homes_ = std::move(homes);
  return map;
}

const Member* SlotMap::Find(net::NodeId id) const {
  // Ids are 1..n in order when the map came from ParseMembers; search anyway if not.
  if (id >= 1 && id <= members_.size() && members_[id - 1].id == id) return &members_[id - 1];
  for (const Member& m : members_) {
    if (m.id == id) return &m;
  }
  return nullptr;
}

std::vector<SlotMap::Range> SlotMap::Ranges() const {
  std::vector<Range> out;
  for (size_t s = 0; s < homes_.size(); s++) {
    if (!out.empty() && out.back().home == homes_[s]) {
      out.back().last = static_cast<uint16_t>(s);
    } else {
      out.push_back({static_cast<uint16_t>(s), static_cast<uint16_t>(s), homes_[s]});
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
Status ValidateOptions(const Options& o) {
  if (!internal::ValidClusterName(o.cluster_name)) {
    return Status::InvalidArgument("cluster name '" + o.cluster_name +
                                   "' must be 1-64 letters, digits, '.', '_' or '-'");
  }
  if (o.members.empty()) return Status::InvalidArgument("the member list is empty");
  if (o.members.size() > kMaxMembers) {
    return Status::InvalidArgument("more than " + std::to_string(kMaxMembers) + " members");
  }
  // A joined member's list is the agreed table's: ids ascending, with the gaps of members
  // removed (rule J2; ids are never reused, M3). A founder's is --cluster's, 1..n.
  bool self_listed = false;
  for (size_t i = 0; i < o.members.size(); i++) {
    const bool in_order = o.joined ? o.members[i].id >= 1 && o.members[i].id < kFirstReservedId &&
                                         (i == 0 || o.members[i].id > o.members[i - 1].id)
                                   : o.members[i].id == i + 1;
    if (!in_order) {
      return Status::InvalidArgument(o.joined
                                         ? "members must have ascending ids"
                                         : "members must be numbered 1..n in order (ParseMembers)");
    }
    self_listed = self_listed || o.members[i].id == o.self;
  }
  if (!self_listed) {
    return Status::InvalidArgument("this node (id " + std::to_string(o.self) +
                                   ") is not in the member list");
  }
  if (o.hello_interval_us == 0 || o.hello_timeout_us == 0 || o.log_interval_us == 0) {
    return Status::InvalidArgument("cluster intervals must be positive");
  }
  return Status::OK();
}

Status CheckSecurity(const Options& options, std::string_view secret) {
  if (!secret.empty()) return Status::OK();
  for (const Member& m : options.members) {
    if (!IsLoopback(m.host)) {
      return Status::FailedPrecondition(
          "cluster member " + m.address() +
          " is not on a loopback address: set --cluster-secret so that every message between "
          "nodes is authenticated, or use 127.0.0.x addresses");
    }
  }
  return Status::OK();
}

Result<net::NodeId> FindSelf(const std::vector<Member>& members, std::string_view host,
                             uint16_t port) {
  std::string canonical;
  if (!host.empty()) {
    // A bind address is written bare ("::1"); a member entry puts IPv6 in brackets.
    const bool bare_v6 = host.find(':') != std::string_view::npos && !host.starts_with("[");
    const std::string entry = bare_v6 ? "[" + std::string(host) + "]" : std::string(host);
    FLOE_ASSIGN_OR_RETURN(Member want, ParseMember(entry + ":" + std::to_string(port)));
    canonical = want.host;
  }
  net::NodeId found = 0;
  for (const Member& m : members) {
    if (m.port != port || (!canonical.empty() && m.host != canonical)) continue;
    if (found != 0) {
      return Status::InvalidArgument("several members use port " + std::to_string(port) +
                                     ": say which address is this node's");
    }
    found = m.id;
  }
  if (found == 0) {
    return Status::NotFound(
        "this node (" +
        (host.empty() ? "port " + std::to_string(port) : canonical + ":" + std::to_string(port)) +
        ") is not in the member list");
  }
  return found;
}

std::vector<net::NodeId> PeerIds(const std::vector<Member>& members, net::NodeId self) {
  std::vector<net::NodeId> out;
  for (const Member& m : members) {
    if (m.id != self) out.push_back(m.id);
  }
  return out;
}

std::vector<net::PeerAddress> PeerAddresses(const std::vector<Member>& members, net::NodeId self) {
  std::vector<net::PeerAddress> out;
  for (const Member& m : members) {
    if (m.id != self) out.push_back({.id = m.id, .host = m.host, .port = m.port});
  }
  return out;
}

}  // namespace floe::cluster
