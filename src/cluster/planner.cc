// The planner (docs/membership.md, rules J3 and J4): the next changes that bring the agreed
// table toward a balanced one while moving as few slots as possible.

#include <algorithm>
#include <map>

#include "cluster/cluster.h"

namespace floe::cluster {

namespace {

bool Contains(const std::vector<net::NodeId>& v, net::NodeId id) {
  return std::find(v.begin(), v.end(), id) != v.end();
}

// Backups first: members that left the table or are leaving are replaced, sets trimmed to or
// filled up to `want`, each fill from the member backing up the fewest slots (ties: lowest id).
std::vector<Change::SlotItem> RepairBackups(const Table& t, const std::vector<net::NodeId>& active,
                                            size_t want) {
  std::map<net::NodeId, size_t> load;
  for (net::NodeId id : active) load[id] = 0;
  for (int s = 0; s < kSlots; s++) {
    for (net::NodeId b : t.slot(static_cast<uint16_t>(s)).backups) {
      if (auto it = load.find(b); it != load.end()) it->second++;
    }
  }
  // Slots in an order that takes each owner's slots in turn (the first of every owner, then
  // the second...), so that the least-loaded choice spreads every owner's slots over all the
  // others instead of filling one member with the first owner's range.
  std::map<net::NodeId, std::vector<uint16_t>> by_owner;
  for (int s = 0; s < kSlots; s++) {
    by_owner[t.slot(static_cast<uint16_t>(s)).owner].push_back(static_cast<uint16_t>(s));
  }
  std::vector<uint16_t> order;
  std::vector<size_t> rank(kSlots);
  order.reserve(kSlots);
  for (size_t k = 0; order.size() < static_cast<size_t>(kSlots); k++) {
    for (const auto& [owner, slots] : by_owner) {
      if (k < slots.size()) {
        order.push_back(slots[k]);
        rank[slots[k]] = k;
      }
    }
  }
  // Positions in id order; an owner that is leaving or gone counts as position 0.
  const size_t n = active.size();
  std::map<net::NodeId, size_t> pos;
  for (size_t i = 0; i < n; i++) pos[active[i]] = i;
  std::vector<Change::SlotItem> items;
  for (uint16_t s : order) {
    const SlotState& st = t.slot(s);
    // The slot's own backups are not counted while its set is chosen.
    for (net::NodeId b : st.backups) {
      if (auto it = load.find(b); it != load.end()) it->second--;
    }
    std::vector<net::NodeId> keep;
    for (net::NodeId b : st.backups) {
      if (load.count(b) != 0 && b != st.owner && b != st.moving_to) keep.push_back(b);
    }
    while (keep.size() > want) {
      // Drop the busiest.
      keep.erase(std::max_element(keep.begin(), keep.end(), [&](net::NodeId a, net::NodeId b) {
        return load[a] != load[b] ? load[a] < load[b] : a < b;
      }));
    }
    while (keep.size() < want) {
      // Ties go to the member `turn` places after the owner in id order, `turn` being the
      // slot's rank among its owner's slots, so each owner's slots rotate over all the others.
      const size_t turn = rank[s];
      auto distance = [&](net::NodeId id) {
        return (pos[id] + n - pos[st.owner] - 1 + n - turn % n) % n;
      };
      net::NodeId best = 0;
      for (net::NodeId id : active) {
        if (id == st.owner || id == st.moving_to || Contains(keep, id)) continue;
        if (best == 0 || load[id] < load[best] ||
            (load[id] == load[best] && distance(id) < distance(best))) {
          best = id;
        }
      }
      if (best == 0) break;
      keep.push_back(best);
    }
    for (net::NodeId b : keep) load[b]++;
    if (keep != st.backups) items.push_back({.slot = s, .version = st.version, .backups = keep});
  }
  // A change lists its slots in ascending order.
  std::sort(items.begin(), items.end(),
            [](const Change::SlotItem& a, const Change::SlotItem& b) { return a.slot < b.slot; });
  return items;
}

// Owner moves: every slot of a leaving member, and the slots of members above their share, go
// to members below theirs; a destination that already backs the slot up is preferred (no data to
// stream) unless the owner is leaving (then its place as a backup would be lost, rule J4).
std::vector<Change::SlotItem> PlanMoves(const Table& t, const std::vector<net::NodeId>& active,
                                        size_t budget) {
  std::vector<Change::SlotItem> items;
  if (budget == 0 || active.empty()) return items;
  // What each active member owns, counting a slot in motion for its destination.
  std::map<net::NodeId, size_t> owned;
  for (net::NodeId id : active) owned[id] = 0;
  for (int s = 0; s < kSlots; s++) {
    const SlotState& st = t.slot(static_cast<uint16_t>(s));
    const net::NodeId future = st.moving_to != 0 ? st.moving_to : st.owner;
    if (auto it = owned.find(future); it != owned.end()) it->second++;
  }
  // Shares: kSlots / n each, one more for the kSlots % n members that own the most already (so
  // the members that must shed are as few as possible).
  std::vector<net::NodeId> by_owned = active;
  std::sort(by_owned.begin(), by_owned.end(), [&](net::NodeId a, net::NodeId b) {
    return owned[a] != owned[b] ? owned[a] > owned[b] : a < b;
  });
  std::map<net::NodeId, size_t> share;
  const size_t n = active.size();
  for (size_t i = 0; i < n; i++) share[by_owned[i]] = kSlots / n + (i < kSlots % n ? 1 : 0);

  auto pick = [&](const SlotState& st, bool prefer_backup) {
    net::NodeId best = 0;
    for (net::NodeId id : active) {
      if (id == st.owner || owned[id] >= share[id]) continue;
      if (best == 0) {
        best = id;
        continue;
      }
      // Preferred: a backup of the slot for a balance move, anyone else for a leaving owner.
      const bool a = Contains(st.backups, id) == prefer_backup;
      const bool b = Contains(st.backups, best) == prefer_backup;
      if (a != b ? a : owned[id] < owned[best]) best = id;
    }
    return best;
  };
  for (int s = 0; s < kSlots && items.size() < budget; s++) {
    const SlotState& st = t.slot(static_cast<uint16_t>(s));
    if (st.moving_to != 0) continue;
    const bool leaving = owned.count(st.owner) == 0;
    if (!leaving && owned[st.owner] <= share[st.owner]) continue;
    const net::NodeId to = pick(st, /*prefer_backup=*/!leaving);
    if (to == 0) continue;
    owned[to]++;
    if (!leaving) owned[st.owner]--;
    items.push_back({.slot = static_cast<uint16_t>(s), .version = st.version, .node = to});
  }
  return items;
}

}  // namespace

std::vector<Change> Plan(const Table& table, const PlanOptions& options) {
  std::vector<Change> out;
  if (table.planner_paused()) return out;
  std::vector<net::NodeId> active;
  for (const TableMember& m : table.members()) {
    if (!m.leaving) active.push_back(m.id);
  }
  if (active.empty()) return out;
  // Each change is planned on the table as the ones before it leave it, so all apply in order.
  Table t = table;
  const size_t want = std::min<size_t>(t.replicas(), active.size() - 1);
  if (auto items = RepairBackups(t, active, want); !items.empty()) {
    Change c{.kind = Change::Kind::kSetBackups, .slots = std::move(items)};
    FLOE_CHECK(t.Apply(c).ok());
    out.push_back(std::move(c));
  }
  size_t in_motion = 0;
  for (int s = 0; s < kSlots; s++) in_motion += t.slot(static_cast<uint16_t>(s)).moving_to != 0;
  if (in_motion < options.max_moves) {
    if (auto items = PlanMoves(t, active, options.max_moves - in_motion); !items.empty()) {
      Change c{.kind = Change::Kind::kBeginMove, .slots = std::move(items)};
      FLOE_CHECK(t.Apply(c).ok());
      out.push_back(std::move(c));
    }
  }
  for (const TableMember& m : t.members()) {
    if (!m.leaving) continue;
    bool holds = false;
    for (int s = 0; s < kSlots && !holds; s++) {
      const SlotState& st = t.slot(static_cast<uint16_t>(s));
      holds = st.owner == m.id || st.moving_to == m.id || Contains(st.backups, m.id);
    }
    if (!holds) out.push_back(Change{.kind = Change::Kind::kRemoveMember, .node = m.id});
  }
  return out;
}

}  // namespace floe::cluster
