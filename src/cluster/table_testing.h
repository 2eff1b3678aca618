// Helpers of the agreed table's tests (table_test.cc, join_test.cc): changes built field by
// field, and member lists.

#ifndef FLOE_CLUSTER_TABLE_TESTING_H_
#define FLOE_CLUSTER_TABLE_TESTING_H_

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "cluster/cluster.h"

namespace floe::cluster::table_testing {

using Kind = Change::Kind;

inline Change Of(Kind k) {
  Change c;
  c.kind = k;
  return c;
}
inline Change AddMember(TableMember m) {
  Change c = Of(Kind::kAddMember);
  c.member = std::move(m);
  return c;
}
inline Change ForNode(Kind k, net::NodeId id, bool flag = false) {
  Change c = Of(k);
  c.node = id;
  c.flag = flag;
  return c;
}
inline Change WithCount(Kind k, uint32_t n) {
  Change c = Of(k);
  c.count = n;
  return c;
}
inline Change ForSlots(Kind k, std::vector<Change::SlotItem> items) {
  Change c = Of(k);
  c.slots = std::move(items);
  return c;
}
inline Change WithBackups(uint16_t slot, uint64_t version, std::vector<net::NodeId> backups) {
  Change::SlotItem it;
  it.slot = slot;
  it.version = version;
  it.backups = std::move(backups);
  return ForSlots(Kind::kSetBackups, {it});
}
inline Change::SlotItem Item(uint16_t slot, uint64_t version, net::NodeId node = 0) {
  Change::SlotItem it;
  it.slot = slot;
  it.version = version;
  it.node = node;
  return it;
}

// kInitialize of a three-member cluster on 127.0.0.1-3 (cluster port 7100, Raft 7101) with
// `replicas` backups per slot and a new cluster id: a cluster's first log entry.
inline Change ThreeMemberInit(uint32_t replicas) {
  Change init = WithCount(Kind::kInitialize, replicas);
  for (int i = 1; i <= 3; i++) {
    init.members.push_back(TableMember{.id = static_cast<net::NodeId>(i),
                                       .host = "127.0.0." + std::to_string(i),
                                       .port = 7100,
                                       .raft_port = 7101});
  }
  init.cluster_id = ClusterId::Random();
  return init;
}
inline std::vector<Member> Members(int n) {
  std::string list;
  for (int i = 1; i <= n; i++) {
    if (i > 1) list += ",";
    list += "127.0.0." + std::to_string(i) + ":7100";
  }
  return ParseMembers(list).value();
}

inline TableMember Joiner(int i) {
  return TableMember{.host = "127.0.1." + std::to_string(i), .port = 7100, .raft_port = 7101};
}

inline std::map<net::NodeId, size_t> Owned(const Table& t) {
  std::map<net::NodeId, size_t> owned;
  for (int s = 0; s < kSlots; s++) owned[t.slot(static_cast<uint16_t>(s)).owner]++;
  return owned;
}

}  // namespace floe::cluster::table_testing

#endif  // FLOE_CLUSTER_TABLE_TESTING_H_
