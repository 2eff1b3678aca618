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

// Backups first. For each slot, with `want` the in-sync backups it should have: suspected or
// removed members are dropped at once (their copies are gone or unreachable); in-sync backups on
// active members are kept up to `want` (the busiest dropped beyond); while fewer than `want` are
// in sync, filling backups make up the difference, and in-sync backups on leaving members are
// kept until their replacements are in sync (rule J4). New filling backups go to the active
// member backing up the fewest slots, never to one the leader has not heard from lately (W17);
// ties rotate with the slot's rank among its owner's slots, so each owner's slots spread over all
// the others.
std::vector<Change::SlotItem> RepairBackups(const Table& t, const std::vector<net::NodeId>& active,
                                            size_t want, const std::vector<net::NodeId>& unheard) {
  std::map<net::NodeId, size_t> load;
  for (net::NodeId id : active) load[id] = 0;
  for (int s = 0; s < kSlots; s++) {
    const SlotState& st = t.slot(static_cast<uint16_t>(s));
    for (const auto* list : {&st.backups, &st.filling}) {
      for (net::NodeId b : *list) {
        if (auto it = load.find(b); it != load.end()) it->second++;
      }
    }
  }
  // Each owner's slots in turn (the first of every owner, then the second...).
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
  // Positions in id order; an owner that is not active counts as position 0.
  const size_t n = active.size();
  std::map<net::NodeId, size_t> pos;
  for (size_t i = 0; i < n; i++) pos[active[i]] = i;
  auto live = [&](net::NodeId id) {
    const TableMember* m = t.FindMember(id);
    return m != nullptr && !m->suspected;
  };

  std::vector<Change::SlotItem> items;
  for (uint16_t s : order) {
    const SlotState& st = t.slot(s);
    // A suspected owner's slots are failover's (O5): its in-sync backups are its heirs, which
    // the table keeps (W16), so the planner leaves the slot as it is.
    if (const TableMember* owner = t.FindMember(st.owner); owner != nullptr && owner->suspected) {
      continue;
    }
    // The slot's own backups are not counted while its sets are chosen.
    for (const auto* list : {&st.backups, &st.filling}) {
      for (net::NodeId b : *list) {
        if (auto it = load.find(b); it != load.end()) it->second--;
      }
    }
    auto busiest_first = [&](std::vector<net::NodeId>& v) {
      std::sort(v.begin(), v.end(), [&](net::NodeId a, net::NodeId b) {
        return load[a] != load[b] ? load[a] > load[b] : a > b;
      });
    };
    std::vector<net::NodeId> synced, leaving, filling;
    for (net::NodeId b : st.backups) {
      if (load.count(b) != 0) {
        synced.push_back(b);
      } else if (live(b)) {
        leaving.push_back(b);
      }
    }
    for (net::NodeId b : st.filling) {
      if (load.count(b) != 0) filling.push_back(b);
    }
    busiest_first(synced);
    if (synced.size() > want) synced.erase(synced.begin(), synced.end() - want);
    const size_t missing = want - synced.size();
    busiest_first(filling);
    if (filling.size() > missing) filling.erase(filling.begin(), filling.end() - missing);
    if (leaving.size() > missing) leaving.resize(missing);
    while (filling.size() < missing) {
      const size_t turn = rank[s];
      auto distance = [&](net::NodeId id) {
        return (pos[id] + n - pos[st.owner] - 1 + n - turn % n) % n;
      };
      net::NodeId best = 0;
      for (net::NodeId id : active) {
        if (id == st.owner || id == st.moving_to || std::count(synced.begin(), synced.end(), id) ||
            std::count(filling.begin(), filling.end(), id) || Contains(unheard, id)) {
          continue;
        }
        if (best == 0 || load[id] < load[best] ||
            (load[id] == load[best] && distance(id) < distance(best))) {
          best = id;
        }
      }
      if (best == 0) break;
      filling.push_back(best);
    }
    std::vector<net::NodeId> backups = synced;
    backups.insert(backups.end(), leaving.begin(), leaving.end());
    for (const auto* list : {&backups, &filling}) {
      for (net::NodeId b : *list) {
        if (auto it = load.find(b); it != load.end()) it->second++;
      }
    }
    // Keep the table's order when the sets did not change, so a balanced table plans nothing.
    auto same = [](std::vector<net::NodeId> a, std::vector<net::NodeId> b) {
      std::sort(a.begin(), a.end());
      std::sort(b.begin(), b.end());
      return a == b;
    };
    if (!same(backups, st.backups) || !same(filling, st.filling)) {
      items.push_back({.slot = s, .version = st.version, .backups = backups, .filling = filling});
    }
  }
  // A change lists its slots in ascending order.
  std::sort(items.begin(), items.end(),
            [](const Change::SlotItem& a, const Change::SlotItem& b) { return a.slot < b.slot; });
  return items;
}

// Owner moves: every slot of a leaving member, and the slots of members above their share, go
// to members below theirs.
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

  // A destination below its share; one of the slot's in-sync backups first (it has the data,
  // and the source takes its place as a backup), then the member owning the fewest.
  auto pick = [&](const SlotState& st) {
    net::NodeId best = 0;
    for (net::NodeId id : active) {
      if (id == st.owner || owned[id] >= share[id]) continue;
      if (best == 0) {
        best = id;
        continue;
      }
      const bool a = Contains(st.backups, id);
      const bool b = Contains(st.backups, best);
      if (a != b ? a : owned[id] < owned[best]) best = id;
    }
    return best;
  };
  for (int s = 0; s < kSlots && items.size() < budget; s++) {
    const SlotState& st = t.slot(static_cast<uint16_t>(s));
    if (st.moving_to != 0) continue;
    const TableMember* owner = t.FindMember(st.owner);
    if (owner == nullptr || owner->suspected) continue;  // failover's (rule O5)
    const bool leaving = owned.count(st.owner) == 0;
    if (!leaving && owned[st.owner] <= share[st.owner]) continue;
    const net::NodeId to = pick(st);
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
    if (!m.leaving && !m.suspected) active.push_back(m.id);
  }
  if (active.empty()) return out;
  // Each change is planned on the table as the ones before it leave it, so all apply in order.
  Table t = table;
  const size_t want = std::min<size_t>(t.replicas(), active.size() - 1);
  if (auto items = RepairBackups(t, active, want, options.unheard); !items.empty()) {
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
    if (!m.leaving || m.suspected) continue;
    bool holds = false;
    for (int s = 0; s < kSlots && !holds; s++) {
      const SlotState& st = t.slot(static_cast<uint16_t>(s));
      holds = st.owner == m.id || st.moving_to == m.id || Contains(st.backups, m.id) ||
              Contains(st.filling, m.id);
    }
    if (!holds) out.push_back(Change{.kind = Change::Kind::kRemoveMember, .node = m.id});
  }
  return out;
}

}  // namespace floe::cluster
