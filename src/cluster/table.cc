// The agreed table (docs/membership.md, rules M1-M3): its changes, their encoding, and the
// strict decoders a log entry or a snapshot goes through.

#include <algorithm>
#include <cstdio>
#include <random>
#include <set>

#include "cluster/cluster.h"
#include "wire/wire.h"

namespace floe::cluster {

namespace {

constexpr uint32_t kTableFormat = 2;   // 2: the cluster id
constexpr uint32_t kChangeFormat = 2;  // 2: the cluster id

Status Refused(const std::string& why) { return Status::FailedPrecondition(why); }

std::string SlotText(uint16_t s) { return "slot " + std::to_string(s); }

bool Contains(const std::vector<net::NodeId>& v, net::NodeId id) {
  return std::find(v.begin(), v.end(), id) != v.end();
}

void Erase(std::vector<net::NodeId>& v, net::NodeId id) { std::erase(v, id); }

void PutIds(wire::Writer& w, const std::vector<net::NodeId>& ids) {
  w.PutVarint64(ids.size());
  for (net::NodeId id : ids) w.PutVarint64(id);
}

Status GetIds(wire::Reader& r, std::vector<net::NodeId>* ids) {
  uint64_t n = 0;
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&n));
  if (n > kMaxReplicas) return Status::Corruption("more backups than kMaxReplicas");
  ids->resize(n);
  for (auto& id : *ids) {
    uint32_t v = 0;
    FLOE_RETURN_IF_ERROR(r.GetVarint32(&v));
    id = v;
  }
  return Status::OK();
}

void PutMember(wire::Writer& w, const TableMember& m) {
  w.PutVarint64(m.id);
  w.PutLengthPrefixed(m.host);
  w.PutVarint64(m.port);
  w.PutVarint64(m.raft_port);
  w.PutVarint64(m.client_port);
  w.PutVarint64(m.life);
  // Flag 4: a join token follows; flag 8: a suspect epoch. A member without them is written as
  // before they existed.
  w.PutU8(static_cast<uint8_t>((m.leaving ? 1 : 0) | (m.suspected ? 2 : 0) |
                               (m.join_token != 0 ? 4 : 0) | (m.suspect_epoch != 0 ? 8 : 0)));
  if (m.join_token != 0) w.PutVarint64(m.join_token);
  if (m.suspect_epoch != 0) w.PutVarint64(m.suspect_epoch);
}

// The fewest bytes PutMember writes: seven fields of at least one byte (an empty host is its
// length alone). A member count beyond remaining() / kMinMemberBytes is a lie.
constexpr size_t kMinMemberBytes = 7;

Status GetPort(wire::Reader& r, uint16_t* port) {
  uint32_t v = 0;
  FLOE_RETURN_IF_ERROR(r.GetVarint32(&v));
  if (v > 65535) return Status::Corruption("port out of range");
  *port = static_cast<uint16_t>(v);
  return Status::OK();
}

Status GetMember(wire::Reader& r, TableMember* m) {
  uint32_t id = 0;
  FLOE_RETURN_IF_ERROR(r.GetVarint32(&id));
  m->id = id;
  std::string_view host;
  FLOE_RETURN_IF_ERROR(r.GetLengthPrefixed(&host, 64));
  m->host = std::string(host);
  FLOE_RETURN_IF_ERROR(GetPort(r, &m->port));
  FLOE_RETURN_IF_ERROR(GetPort(r, &m->raft_port));
  FLOE_RETURN_IF_ERROR(GetPort(r, &m->client_port));
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&m->life));
  uint8_t flags = 0;
  FLOE_RETURN_IF_ERROR(r.GetU8(&flags));
  if (flags > 15) return Status::Corruption("bad member flags");
  m->leaving = (flags & 1) != 0;
  m->suspected = (flags & 2) != 0;
  m->join_token = 0;
  if ((flags & 4) != 0) {
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&m->join_token));
    if (m->join_token == 0) return Status::Corruption("a join token of 0");
  }
  m->suspect_epoch = 0;
  if ((flags & 8) != 0) {
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&m->suspect_epoch));
    if (m->suspect_epoch == 0) return Status::Corruption("a suspect epoch of 0");
  }
  return Status::OK();
}

// Checks what a member must be before it joins: a canonical address literal and real ports.
Status ValidMember(const TableMember& m) {
  Result<Member> parsed = ParseMember(Member{.host = m.host, .port = m.port}.address());
  if (!parsed.ok() || parsed->host != m.host) return Refused("bad member address '" + m.host + "'");
  if (m.port == 0 || m.raft_port == 0) return Refused("a member needs its cluster and raft ports");
  return Status::OK();
}

}  // namespace

// ---- the cluster id ----

std::string ClusterId::ToString() const {
  char buf[33];
  std::snprintf(buf, sizeof(buf), "%016llx%016llx", static_cast<unsigned long long>(hi),
                static_cast<unsigned long long>(lo));
  return std::string(buf, 32);
}

Result<ClusterId> ClusterId::Parse(std::string_view text) {
  if (text.size() != 32) return Status::InvalidArgument("a cluster id is 32 hex digits");
  ClusterId id;
  for (size_t i = 0; i < 32; i++) {
    const char c = text[i];
    uint64_t d = 0;
    if (c >= '0' && c <= '9') {
      d = static_cast<uint64_t>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      d = static_cast<uint64_t>(c - 'a' + 10);
    } else {
      return Status::InvalidArgument("a cluster id is 32 hex digits");
    }
    uint64_t& half = i < 16 ? id.hi : id.lo;
    half = (half << 4) | d;
  }
  return id;
}

ClusterId ClusterId::Random() {
  std::random_device rd;
  ClusterId id;
  while (id.empty()) {
    id.hi = (uint64_t{rd()} << 32) | rd();
    id.lo = (uint64_t{rd()} << 32) | rd();
  }
  return id;
}

// ---- changes ----

std::string EncodeChange(const Change& c) {
  std::string out;
  wire::Writer w(&out);
  w.PutVarint64(kChangeFormat);
  w.PutU8(static_cast<uint8_t>(c.kind));
  PutMember(w, c.member);
  w.PutVarint64(c.node);
  w.PutU8(c.flag ? 1 : 0);
  w.PutVarint64(c.count);
  w.PutFixed64(c.cluster_id.hi);
  w.PutFixed64(c.cluster_id.lo);
  w.PutVarint64(c.slots.size());
  for (const Change::SlotItem& it : c.slots) {
    w.PutVarint64(it.slot);
    w.PutVarint64(it.version);
    w.PutVarint64(it.node);
    w.PutVarint64(it.seq);
    PutIds(w, it.backups);
    PutIds(w, it.filling);
  }
  w.PutVarint64(c.members.size());
  for (const TableMember& m : c.members) PutMember(w, m);
  return out;
}

Result<Change> DecodeChange(std::string_view bytes) {
  wire::Reader r(bytes);
  uint32_t format = 0;
  FLOE_RETURN_IF_ERROR(r.GetVarint32(&format));
  if (format != kChangeFormat) return Status::Corruption("unknown change format");
  Change c;
  uint8_t kind = 0;
  FLOE_RETURN_IF_ERROR(r.GetU8(&kind));
  if (kind < 1 || kind > Change::kLastKind) return Status::Corruption("unknown change kind");
  c.kind = static_cast<Change::Kind>(kind);
  FLOE_RETURN_IF_ERROR(GetMember(r, &c.member));
  uint32_t node = 0;
  FLOE_RETURN_IF_ERROR(r.GetVarint32(&node));
  c.node = node;
  uint8_t flag = 0;
  FLOE_RETURN_IF_ERROR(r.GetU8(&flag));
  if (flag > 1) return Status::Corruption("bad flag");
  c.flag = flag == 1;
  FLOE_RETURN_IF_ERROR(r.GetVarint32(&c.count));
  FLOE_RETURN_IF_ERROR(r.GetFixed64(&c.cluster_id.hi));
  FLOE_RETURN_IF_ERROR(r.GetFixed64(&c.cluster_id.lo));
  uint64_t n = 0;
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&n));
  // Each item takes at least four bytes: a count beyond what remains is a lie, refused before
  // it sizes anything.
  if (n > kSlots || n > r.remaining() / 4) return Status::Corruption("bad slot item count");
  c.slots.resize(n);
  for (Change::SlotItem& it : c.slots) {
    uint32_t slot = 0;
    FLOE_RETURN_IF_ERROR(r.GetVarint32(&slot));
    if (slot >= kSlots) return Status::Corruption("slot out of range");
    it.slot = static_cast<uint16_t>(slot);
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&it.version));
    uint32_t item_node = 0;
    FLOE_RETURN_IF_ERROR(r.GetVarint32(&item_node));
    it.node = item_node;
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&it.seq));
    FLOE_RETURN_IF_ERROR(GetIds(r, &it.backups));
    FLOE_RETURN_IF_ERROR(GetIds(r, &it.filling));
  }
  uint64_t members = 0;
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&members));
  if (members > kMaxMembers || members > r.remaining() / kMinMemberBytes) {
    return Status::Corruption("bad member count");
  }
  c.members.resize(members);
  for (TableMember& m : c.members) FLOE_RETURN_IF_ERROR(GetMember(r, &m));
  if (!r.empty()) return Status::Corruption("trailing bytes after a change");
  return c;
}

// ---- the table ----

Table Table::Initial(const std::vector<Member>& members, uint32_t replicas) {
  std::vector<TableMember> with_ports;
  for (const Member& m : members) {
    with_ports.push_back(TableMember{.id = m.id,
                                     .host = m.host,
                                     .port = m.port,
                                     .raft_port = static_cast<uint16_t>(m.port + 1)});
  }
  Result<Table> t = Initial(with_ports, replicas);
  FLOE_CHECK(t.ok());
  return std::move(*t);
}

Result<Table> Table::Initial(const std::vector<TableMember>& members, uint32_t replicas) {
  if (members.empty() || members.size() > kMaxMembers) {
    return Status::InvalidArgument("a new cluster has 1-" + std::to_string(kMaxMembers) +
                                   " members");
  }
  if (replicas > kMaxReplicas) {
    return Status::InvalidArgument("replicas must be 0-" + std::to_string(kMaxReplicas));
  }
  Table t;
  t.replicas_ = replicas;
  std::vector<Member> plain;
  for (size_t i = 0; i < members.size(); i++) {
    const TableMember& m = members[i];
    if (m.id != i + 1) return Status::InvalidArgument("member ids must be 1..n in order");
    if (Status st = ValidMember(m); !st.ok()) return Status::InvalidArgument(st.message());
    TableMember copy = m;
    copy.leaving = copy.suspected = false;
    copy.life = 0;
    copy.join_token = 0;
    copy.suspect_epoch = 0;
    t.members_.push_back(std::move(copy));
    plain.push_back(Member{.id = m.id, .host = m.host, .port = m.port});
  }
  t.next_id_ = static_cast<net::NodeId>(members.size() + 1);
  std::set<std::pair<std::string, uint16_t>> addresses;
  for (const TableMember& m : members) {
    if (!addresses.insert({m.host, m.port}).second) {
      return Status::InvalidArgument("a member address is listed twice");
    }
  }
  const SlotMap map = SlotMap::Balanced(plain);
  for (int s = 0; s < kSlots; s++) t.slots_[s].owner = map.Home(static_cast<uint16_t>(s));
  // Backups: Plan fills them, least-loaded first, so they spread over every other member.
  for (const Change& c : Plan(t, PlanOptions{.max_moves = 0})) {
    FLOE_CHECK(c.kind == Change::Kind::kSetBackups);
    FLOE_CHECK(t.Apply(c).ok());
  }
  // The initial table is where every node starts: epoch 0, every slot at version 1, and every
  // backup in sync (there is nothing to copy yet).
  t.epoch_ = 0;
  for (SlotState& st : t.slots_) {
    st.backups.insert(st.backups.end(), st.filling.begin(), st.filling.end());
    st.filling.clear();
    st.version = 1;
    st.ownership = 1;
  }
  return t;
}

const TableMember* Table::FindMember(net::NodeId id) const {
  auto it = std::lower_bound(members_.begin(), members_.end(), id,
                             [](const TableMember& m, net::NodeId v) { return m.id < v; });
  return it != members_.end() && it->id == id ? &*it : nullptr;
}

TableMember* Table::MutableMember(net::NodeId id) {
  auto it = std::lower_bound(members_.begin(), members_.end(), id,
                             [](const TableMember& m, net::NodeId v) { return m.id < v; });
  return it != members_.end() && it->id == id ? &*it : nullptr;
}

Status Table::ApplyToSlots(const Change& c) {
  using Kind = Change::Kind;
  auto active = [&](net::NodeId id) {
    const TableMember* m = FindMember(id);
    return m != nullptr && !m->leaving && !m->suspected;
  };
  auto valid_list = [&](const std::vector<net::NodeId>& ids, const SlotState& st,
                        const std::string& where) -> Status {
    if (ids.size() > kMaxReplicas) return Refused(where + ": more than kMaxReplicas backups");
    std::set<net::NodeId> distinct(ids.begin(), ids.end());
    if (distinct.size() != ids.size()) return Refused(where + ": a backup named twice");
    for (net::NodeId b : ids) {
      const TableMember* m = FindMember(b);
      if (m == nullptr || m->suspected || b == st.owner) {
        return Refused(where + ": bad backup " + std::to_string(b));
      }
    }
    return Status::OK();
  };
  if (c.slots.empty()) return Refused("a slot change names no slot");
  std::set<uint16_t> seen;
  for (const Change::SlotItem& it : c.slots) {
    if (it.slot >= kSlots) return Refused(SlotText(it.slot) + " out of range");
    const std::string where = SlotText(it.slot);
    if (!seen.insert(it.slot).second) return Refused(where + " named twice");
    const SlotState& st = slots_[it.slot];
    if (st.version != it.version) {
      return Refused(where + " is at version " + std::to_string(st.version) +
                     ", the change expects " + std::to_string(it.version));
    }
    switch (c.kind) {
      case Kind::kBeginMove:
        if (st.moving_to != 0) return Refused(where + " is already moving");
        if (!active(it.node) || it.node == st.owner) {
          return Refused(where + ": bad destination " + std::to_string(it.node));
        }
        break;
      case Kind::kCommitMove:
        if (st.moving_to == 0) return Refused(where + " is not moving");
        if (st.backups.size() >= kMaxReplicas && !Contains(st.backups, st.moving_to)) {
          return Refused(where + ": no room to keep the source as a backup");
        }
        break;
      case Kind::kAbortMove:
        if (st.moving_to == 0) return Refused(where + " is not moving");
        break;
      case Kind::kSetBackups: {
        // Only BackupInSync declares a backup in sync: the new in-sync list keeps some of the
        // old one, nothing more.
        for (net::NodeId b : it.backups) {
          if (!Contains(st.backups, b)) {
            return Refused(where + ": " + std::to_string(b) + " is not an in-sync backup");
          }
        }
        // B7 (docs/replication.md W16): a suspected owner's in-sync backups are its heirs
        // (O5); none that is itself live is removed before the promotion.
        if (const TableMember* owner = FindMember(st.owner); owner != nullptr && owner->suspected) {
          for (net::NodeId b : st.backups) {
            const TableMember* m = FindMember(b);
            if (m != nullptr && !m->suspected && !Contains(it.backups, b)) {
              return Refused(where + ": its owner is suspected; backup " + std::to_string(b) +
                             " may be its heir");
            }
          }
        }
        std::vector<net::NodeId> both = it.backups;
        both.insert(both.end(), it.filling.begin(), it.filling.end());
        if (it.backups.size() > kMaxReplicas || it.filling.size() > kMaxReplicas) {
          return Refused(where + ": more than kMaxReplicas backups");
        }
        FLOE_RETURN_IF_ERROR(valid_list(both, st, where));
        if (st.moving_to != 0 && Contains(it.filling, st.moving_to)) {
          return Refused(where + ": the destination of its move is filled by the move");
        }
        break;
      }
      case Kind::kBackupInSync:
        if (!Contains(st.filling, it.node)) {
          return Refused(where + ": " + std::to_string(it.node) + " is not filling");
        }
        if (st.backups.size() >= kMaxReplicas) return Refused(where + ": backups are full");
        break;
      case Kind::kPromote: {
        const TableMember* owner = FindMember(st.owner);
        if (owner == nullptr || !owner->suspected) {
          return Refused(where + ": its owner " + std::to_string(st.owner) + " is not suspected");
        }
        if (!Contains(st.backups, it.node) || !active(it.node)) {
          return Refused(where + ": " + std::to_string(it.node) + " is no live in-sync backup");
        }
        break;
      }
      default:
        return Refused("not a slot change");
    }
  }
  for (const Change::SlotItem& it : c.slots) {
    SlotState& st = slots_[it.slot];
    st.version++;
    switch (c.kind) {
      case Kind::kBeginMove:
        st.moving_to = it.node;
        Erase(st.filling, it.node);  // the move's stream fills it (rule G2)
        break;
      case Kind::kCommitMove: {
        // The destination owns the slot; the source, which has every change up to the freeze,
        // stays an in-sync backup (rule J4: never fewer copies); the planner trims extras.
        const net::NodeId from = st.owner;
        Erase(st.backups, st.moving_to);
        st.owner = st.moving_to;
        st.moving_to = 0;
        st.backups.push_back(from);
        st.ownership = st.version;
        break;
      }
      case Kind::kAbortMove:
        st.moving_to = 0;
        break;
      case Kind::kSetBackups:
        st.backups = it.backups;
        st.filling = it.filling;
        break;
      case Kind::kBackupInSync:
        Erase(st.filling, it.node);
        st.backups.push_back(it.node);
        break;
      case Kind::kPromote:
        // The suspected owner's place is not kept: it may have lost its store.
        Erase(st.backups, it.node);
        st.owner = it.node;
        st.moving_to = 0;
        st.ownership = st.version;
        break;
      default:
        break;
    }
  }
  return Status::OK();
}

void Table::EndRoles(net::NodeId node, bool new_life) {
  // Its slots go to an in-sync backup that is not suspected (their data survived there); a slot
  // without one stays with it: owned anew by a new life (its store is empty), by the same owner
  // otherwise. It leaves every backup list and every move.
  for (SlotState& st : slots_) {
    const bool touched = st.owner == node || st.moving_to == node || Contains(st.backups, node) ||
                         Contains(st.filling, node);
    if (!touched) continue;
    st.version++;
    Erase(st.backups, node);
    Erase(st.filling, node);
    if (st.moving_to == node) st.moving_to = 0;
    if (st.owner == node) {
      auto heir = std::find_if(st.backups.begin(), st.backups.end(), [&](net::NodeId b) {
        const TableMember* x = FindMember(b);
        return x != nullptr && !x->suspected;
      });
      if (heir != st.backups.end()) {
        st.owner = *heir;
        st.backups.erase(heir);
        st.moving_to = 0;
        st.ownership = st.version;
      } else if (new_life) {
        st.ownership = st.version;
      }
    }
  }
}

Status Table::Apply(const Change& c) {
  using Kind = Change::Kind;
  switch (c.kind) {
    case Kind::kBeginMove:
    case Kind::kCommitMove:
    case Kind::kAbortMove:
    case Kind::kSetBackups:
    case Kind::kPromote:
    case Kind::kBackupInSync:
      FLOE_RETURN_IF_ERROR(ApplyToSlots(c));
      break;
    case Kind::kAddMember: {
      FLOE_RETURN_IF_ERROR(ValidMember(c.member));
      if (members_.size() >= kMaxMembers) return Refused("the cluster has kMaxMembers members");
      // The joiner's RPC id is never a member's (rule J1).
      if (next_id_ >= kFirstReservedId) return Refused("no member id is left to assign");
      for (const TableMember& m : members_) {
        if (m.host == c.member.host && m.port == c.member.port) {
          return Refused(Member{.host = m.host, .port = m.port}.address() + " is already member " +
                         std::to_string(m.id));
        }
      }
      for (const TableMember& m : members_) {
        // Two members on one host share no port, cluster or Raft (rule M6), whoever proposes.
        if (m.host == c.member.host &&
            (m.raft_port == c.member.raft_port || m.raft_port == c.member.port ||
             m.port == c.member.raft_port)) {
          return Refused(Member{.host = c.member.host, .port = c.member.port}.address() +
                         ": its ports overlap member " + std::to_string(m.id) + "'s");
        }
      }
      TableMember m = c.member;
      m.id = next_id_++;  // never reused (rule M3)
      m.life = 0;         // its first start records one (rule O7)
      m.leaving = false;
      m.suspected = false;
      m.suspect_epoch = 0;
      members_.push_back(std::move(m));
      break;
    }
    case Kind::kRemoveMember: {
      if (FindMember(c.node) == nullptr) return Refused("no member " + std::to_string(c.node));
      for (int s = 0; s < kSlots; s++) {
        const SlotState& st = slots_[s];
        if (st.owner == c.node || st.moving_to == c.node || Contains(st.backups, c.node) ||
            Contains(st.filling, c.node)) {
          return Refused("member " + std::to_string(c.node) + " still holds " +
                         SlotText(static_cast<uint16_t>(s)));
        }
      }
      std::erase_if(members_, [&](const TableMember& m) { return m.id == c.node; });
      break;
    }
    case Kind::kSetLeaving: {
      TableMember* m = MutableMember(c.node);
      if (m == nullptr) return Refused("no member " + std::to_string(c.node));
      m->leaving = c.flag;
      break;
    }
    case Kind::kSuspect: {
      TableMember* m = MutableMember(c.node);
      if (m == nullptr) return Refused("no member " + std::to_string(c.node));
      if (m->life != c.member.life) {
        return Refused("member " + std::to_string(c.node) + " is in another life");
      }
      m->suspected = c.flag;
      m->suspect_epoch = epoch_ + 1;  // this change's
      break;
    }
    case Kind::kFailOver: {
      TableMember* m = MutableMember(c.node);
      if (m == nullptr) return Refused("no member " + std::to_string(c.node));
      if (m->life == 0 || m->life != c.member.life) {
        return Refused("member " + std::to_string(c.node) + " is in another life");
      }
      if (m->suspected) return Refused("member " + std::to_string(c.node) + " is suspected");
      m->suspected = true;
      m->suspect_epoch = epoch_ + 1;
      EndRoles(c.node, /*new_life=*/false);  // rule O5: its slots go to in-sync backups
      break;
    }
    case Kind::kRestarted: {
      TableMember* m = MutableMember(c.node);
      if (m == nullptr) return Refused("no member " + std::to_string(c.node));
      if (c.member.life <= m->life) {
        return Refused("member " + std::to_string(c.node) + ": life " +
                       std::to_string(c.member.life) + " is not newer than " +
                       std::to_string(m->life));
      }
      const bool first = m->life == 0;
      m->life = c.member.life;
      m->suspected = false;
      if (first) break;  // its first start: it held nothing yet (no life, no ownership echoes)
      EndRoles(c.node, /*new_life=*/true);  // rule O7: the old life's roles end with it
      break;
    }
    case Kind::kInitialize: {
      if (!members_.empty()) return Refused("the table is initialized already");
      // Rule M5: the id is what tells this cluster's members from another's; none tells nothing.
      if (c.cluster_id.empty()) return Refused("a new cluster needs a cluster id");
      Result<Table> t = Initial(c.members, c.count);
      if (!t.ok()) return Refused(std::string(t.status().message()));
      *this = std::move(*t);
      cluster_id_ = c.cluster_id;
      break;  // epoch 1: the first change
    }
    case Kind::kSetReplicas:
      if (c.count > kMaxReplicas) {
        return Refused("replicas must be 0-" + std::to_string(kMaxReplicas));
      }
      replicas_ = c.count;
      break;
    case Kind::kPausePlanner:
      planner_paused_ = c.flag;
      break;
    default:
      return Refused("unknown change");
  }
  epoch_++;
  return Status::OK();
}

Status Table::Check() const {
  if (replicas_ > kMaxReplicas) return Status::Corruption("replicas out of range");
  std::set<std::pair<std::string, uint16_t>> addresses;
  for (size_t i = 0; i < members_.size(); i++) {
    const TableMember& m = members_[i];
    if (m.id == 0 || m.id >= next_id_) return Status::Corruption("member id out of range");
    if (i > 0 && members_[i - 1].id >= m.id) return Status::Corruption("member ids not ascending");
    if (!addresses.insert({m.host, m.port}).second) {
      return Status::Corruption("a member address is listed twice");
    }
    if (!ValidMember(m).ok()) return Status::Corruption("bad member address");
  }
  if (members_.size() > kMaxMembers) return Status::Corruption("too many members");
  if (slots_.size() != kSlots) return Status::Corruption("wrong slot count");
  for (int s = 0; s < kSlots; s++) {
    const SlotState& st = slots_[s];
    if (!members_.empty() && FindMember(st.owner) == nullptr) {
      return Status::Corruption(SlotText(static_cast<uint16_t>(s)) + ": owner is no member");
    }
    if (st.moving_to != 0 && (FindMember(st.moving_to) == nullptr || st.moving_to == st.owner)) {
      return Status::Corruption(SlotText(static_cast<uint16_t>(s)) + ": bad destination");
    }
    if (st.backups.size() > kMaxReplicas || st.filling.size() > kMaxReplicas || st.ownership == 0 ||
        st.ownership > st.version) {
      return Status::Corruption(SlotText(static_cast<uint16_t>(s)) + ": bad backups or versions");
    }
    std::vector<net::NodeId> both = st.backups;
    both.insert(both.end(), st.filling.begin(), st.filling.end());
    std::set<net::NodeId> distinct(both.begin(), both.end());
    if (distinct.size() != both.size()) {
      return Status::Corruption(SlotText(static_cast<uint16_t>(s)) + ": a backup listed twice");
    }
    for (net::NodeId b : both) {
      if (FindMember(b) == nullptr || b == st.owner) {
        return Status::Corruption(SlotText(static_cast<uint16_t>(s)) + ": bad backup");
      }
    }
  }
  return Status::OK();
}

std::string Table::Encode() const {
  std::string out;
  wire::Writer w(&out);
  w.PutVarint64(kTableFormat);
  w.PutVarint64(epoch_);
  w.PutVarint64(next_id_);
  w.PutVarint64(replicas_);
  w.PutU8(planner_paused_ ? 1 : 0);
  w.PutFixed64(cluster_id_.hi);
  w.PutFixed64(cluster_id_.lo);
  w.PutVarint64(members_.size());
  for (const TableMember& m : members_) PutMember(w, m);
  for (const SlotState& st : slots_) {
    w.PutVarint64(st.owner);
    w.PutVarint64(st.moving_to);
    w.PutVarint64(st.version);
    w.PutVarint64(st.ownership);
    PutIds(w, st.backups);
    PutIds(w, st.filling);
  }
  return out;
}

Result<Table> Table::Decode(std::string_view bytes) {
  wire::Reader r(bytes);
  uint32_t format = 0;
  FLOE_RETURN_IF_ERROR(r.GetVarint32(&format));
  if (format != kTableFormat) return Status::Corruption("unknown table format");
  Table t;
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&t.epoch_));
  uint32_t next_id = 0;
  FLOE_RETURN_IF_ERROR(r.GetVarint32(&next_id));
  t.next_id_ = next_id;
  FLOE_RETURN_IF_ERROR(r.GetVarint32(&t.replicas_));
  uint8_t paused = 0;
  FLOE_RETURN_IF_ERROR(r.GetU8(&paused));
  if (paused > 1) return Status::Corruption("bad flag");
  t.planner_paused_ = paused == 1;
  FLOE_RETURN_IF_ERROR(r.GetFixed64(&t.cluster_id_.hi));
  FLOE_RETURN_IF_ERROR(r.GetFixed64(&t.cluster_id_.lo));
  uint64_t n = 0;
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&n));
  if (n > kMaxMembers || n > r.remaining() / kMinMemberBytes) {
    return Status::Corruption("bad member count");
  }
  t.members_.resize(n);
  for (TableMember& m : t.members_) FLOE_RETURN_IF_ERROR(GetMember(r, &m));
  for (SlotState& st : t.slots_) {
    uint32_t owner = 0, moving_to = 0;
    FLOE_RETURN_IF_ERROR(r.GetVarint32(&owner));
    FLOE_RETURN_IF_ERROR(r.GetVarint32(&moving_to));
    st.owner = owner;
    st.moving_to = moving_to;
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&st.version));
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&st.ownership));
    FLOE_RETURN_IF_ERROR(GetIds(r, &st.backups));
    FLOE_RETURN_IF_ERROR(GetIds(r, &st.filling));
  }
  if (!r.empty()) return Status::Corruption("trailing bytes after a table");
  FLOE_RETURN_IF_ERROR(t.Check());
  return t;
}

}  // namespace floe::cluster
