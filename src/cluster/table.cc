// The agreed table (docs/membership.md, rules M1-M3): its changes, their encoding, and the
// strict decoders a log entry or a snapshot goes through.

#include <algorithm>
#include <set>

#include "cluster/cluster.h"
#include "wire/wire.h"

namespace floe::cluster {

namespace {

constexpr uint32_t kTableFormat = 1;
constexpr uint32_t kChangeFormat = 1;

Status Refused(const std::string& why) { return Status::FailedPrecondition(why); }

std::string SlotText(uint16_t s) { return "slot " + std::to_string(s); }

bool Contains(const std::vector<net::NodeId>& v, net::NodeId id) {
  return std::find(v.begin(), v.end(), id) != v.end();
}

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
  w.PutU8(m.leaving ? 1 : 0);
}

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
  uint8_t leaving = 0;
  FLOE_RETURN_IF_ERROR(r.GetU8(&leaving));
  if (leaving > 1) return Status::Corruption("bad flag");
  m->leaving = leaving == 1;
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
  w.PutVarint64(c.slots.size());
  for (const Change::SlotItem& it : c.slots) {
    w.PutVarint64(it.slot);
    w.PutVarint64(it.version);
    w.PutVarint64(it.node);
    PutIds(w, it.backups);
  }
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
  if (kind < 1 || kind > 10) return Status::Corruption("unknown change kind");
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
    FLOE_RETURN_IF_ERROR(GetIds(r, &it.backups));
  }
  if (!r.empty()) return Status::Corruption("trailing bytes after a change");
  return c;
}

// ---- the table ----

Table Table::Initial(const std::vector<Member>& members, uint32_t replicas) {
  Table t;
  t.replicas_ = std::min(replicas, kMaxReplicas);
  for (const Member& m : members) {
    t.members_.push_back(TableMember{.id = m.id,
                                     .host = m.host,
                                     .port = m.port,
                                     .raft_port = static_cast<uint16_t>(m.port + 1)});
    t.next_id_ = std::max<net::NodeId>(t.next_id_, m.id + 1);
  }
  const SlotMap map = SlotMap::Balanced(members);
  for (int s = 0; s < kSlots; s++) t.slots_[s].owner = map.Home(static_cast<uint16_t>(s));
  // Backups: Plan fills them, least-loaded first, so they spread over every other member.
  for (const Change& c : Plan(t, PlanOptions{.max_moves = 0})) {
    FLOE_CHECK(c.kind == Change::Kind::kSetBackups);
    FLOE_CHECK(t.Apply(c).ok());
  }
  // The initial table is where every node starts: epoch 0, every slot at version 1.
  t.epoch_ = 0;
  for (SlotState& st : t.slots_) st.version = 1;
  return t;
}

const TableMember* Table::FindMember(net::NodeId id) const {
  auto it = std::lower_bound(members_.begin(), members_.end(), id,
                             [](const TableMember& m, net::NodeId v) { return m.id < v; });
  return it != members_.end() && it->id == id ? &*it : nullptr;
}

Status Table::Apply(const Change& c) {
  using Kind = Change::Kind;
  auto active = [&](net::NodeId id) {
    const TableMember* m = FindMember(id);
    return m != nullptr && !m->leaving;
  };
  // Slot changes: every item must name a distinct slot at the version it expects.
  if (c.kind >= Kind::kBeginMove && c.kind <= Kind::kPromote) {
    if (c.slots.empty()) return Refused("a slot change names no slot");
    std::set<uint16_t> seen;
    for (const Change::SlotItem& it : c.slots) {
      if (it.slot >= kSlots) return Refused(SlotText(it.slot) + " out of range");
      if (!seen.insert(it.slot).second) return Refused(SlotText(it.slot) + " named twice");
      const SlotState& st = slots_[it.slot];
      if (st.version != it.version) {
        return Refused(SlotText(it.slot) + " is at version " + std::to_string(st.version) +
                       ", the change expects " + std::to_string(it.version));
      }
      switch (c.kind) {
        case Kind::kBeginMove:
          if (st.moving_to != 0) return Refused(SlotText(it.slot) + " is already moving");
          if (!active(it.node) || it.node == st.owner) {
            return Refused(SlotText(it.slot) + ": bad destination " + std::to_string(it.node));
          }
          break;
        case Kind::kCommitMove:
        case Kind::kAbortMove:
          if (st.moving_to == 0) return Refused(SlotText(it.slot) + " is not moving");
          break;
        case Kind::kSetBackups: {
          if (it.backups.size() > kMaxReplicas) return Refused("too many backups");
          std::set<net::NodeId> distinct(it.backups.begin(), it.backups.end());
          if (distinct.size() != it.backups.size()) return Refused("a backup named twice");
          for (net::NodeId b : it.backups) {
            if (FindMember(b) == nullptr || b == st.owner || b == st.moving_to) {
              return Refused(SlotText(it.slot) + ": bad backup " + std::to_string(b));
            }
          }
          break;
        }
        case Kind::kPromote:
          if (!Contains(st.backups, it.node)) {
            return Refused(SlotText(it.slot) + ": " + std::to_string(it.node) + " is no backup");
          }
          break;
        default:
          break;
      }
    }
    for (const Change::SlotItem& it : c.slots) {
      SlotState& st = slots_[it.slot];
      switch (c.kind) {
        case Kind::kBeginMove:
          st.moving_to = it.node;
          break;
        case Kind::kCommitMove: {
          const net::NodeId from = st.owner;
          const net::NodeId to = st.moving_to;
          auto b = std::find(st.backups.begin(), st.backups.end(), to);
          // The destination was a backup: the source keeps its data as one in its place, so
          // the move never leaves fewer copies (rule J4); the planner replaces it later if it
          // is leaving.
          if (b != st.backups.end()) *b = from;
          st.owner = to;
          st.moving_to = 0;
          break;
        }
        case Kind::kAbortMove:
          st.moving_to = 0;
          break;
        case Kind::kSetBackups:
          st.backups = it.backups;
          break;
        case Kind::kPromote:
          // The old owner is gone (failover): its place is not kept.
          st.backups.erase(std::find(st.backups.begin(), st.backups.end(), it.node));
          st.owner = it.node;
          st.moving_to = 0;
          break;
        default:
          break;
      }
      st.version++;
    }
    epoch_++;
    return Status::OK();
  }
  switch (c.kind) {
    case Kind::kAddMember: {
      FLOE_RETURN_IF_ERROR(ValidMember(c.member));
      if (members_.size() >= kMaxMembers) return Refused("the cluster has kMaxMembers members");
      for (const TableMember& m : members_) {
        if (m.host == c.member.host && m.port == c.member.port) {
          return Refused(Member{.host = m.host, .port = m.port}.address() + " is already member " +
                         std::to_string(m.id));
        }
      }
      TableMember m = c.member;
      m.id = next_id_++;  // never reused (rule M3)
      m.leaving = false;
      members_.push_back(std::move(m));
      break;
    }
    case Kind::kRemoveMember: {
      if (FindMember(c.node) == nullptr) return Refused("no member " + std::to_string(c.node));
      for (int s = 0; s < kSlots; s++) {
        const SlotState& st = slots_[s];
        if (st.owner == c.node || st.moving_to == c.node || Contains(st.backups, c.node)) {
          return Refused("member " + std::to_string(c.node) + " still holds " +
                         SlotText(static_cast<uint16_t>(s)));
        }
      }
      members_.erase(std::find_if(members_.begin(), members_.end(),
                                  [&](const TableMember& m) { return m.id == c.node; }));
      break;
    }
    case Kind::kSetLeaving: {
      auto it = std::find_if(members_.begin(), members_.end(),
                             [&](const TableMember& m) { return m.id == c.node; });
      if (it == members_.end()) return Refused("no member " + std::to_string(c.node));
      it->leaving = c.flag;
      break;
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
    std::set<net::NodeId> distinct(st.backups.begin(), st.backups.end());
    if (distinct.size() != st.backups.size() || st.backups.size() > kMaxReplicas) {
      return Status::Corruption(SlotText(static_cast<uint16_t>(s)) + ": bad backups");
    }
    for (net::NodeId b : st.backups) {
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
  w.PutVarint64(members_.size());
  for (const TableMember& m : members_) PutMember(w, m);
  for (const SlotState& st : slots_) {
    w.PutVarint64(st.owner);
    w.PutVarint64(st.moving_to);
    w.PutVarint64(st.version);
    PutIds(w, st.backups);
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
  uint64_t n = 0;
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&n));
  // A member takes at least eight bytes.
  if (n > kMaxMembers || n > r.remaining() / 8) return Status::Corruption("bad member count");
  t.members_.resize(n);
  for (TableMember& m : t.members_) FLOE_RETURN_IF_ERROR(GetMember(r, &m));
  for (SlotState& st : t.slots_) {
    uint32_t owner = 0, moving_to = 0;
    FLOE_RETURN_IF_ERROR(r.GetVarint32(&owner));
    FLOE_RETURN_IF_ERROR(r.GetVarint32(&moving_to));
    st.owner = owner;
    st.moving_to = moving_to;
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&st.version));
    FLOE_RETURN_IF_ERROR(GetIds(r, &st.backups));
  }
  if (!r.empty()) return Status::Corruption("trailing bytes after a table");
  FLOE_RETURN_IF_ERROR(t.Check());
  return t;
}

}  // namespace floe::cluster
