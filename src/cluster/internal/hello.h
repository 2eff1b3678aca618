// The HELLO message (docs/wire.md, "Cluster HELLO") and the comparison that explains a
// disagreement. Private to src/cluster (and its fuzzer and tests).

#ifndef FLOE_CLUSTER_INTERNAL_HELLO_H_
#define FLOE_CLUSTER_INTERNAL_HELLO_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "base/base.h"
#include "cluster/cluster.h"
#include "wire/wire.h"

namespace floe::cluster::internal {

inline constexpr size_t kMaxNameBytes = 64;
// Bound on a HELLO's bytes, checked before anything is decoded: 1,024 members of at most 53
// bytes ("[" + 45-byte IPv6 text + "]:65535") with their length prefixes, 1,024 founder tokens
// of at most 10 bytes, plus the rest (about 65 KiB), fit well inside it.
inline constexpr size_t kMaxHelloBytes = 128 * 1024;
// At most this many nodes outside our list are remembered for the waiting reasons.
inline constexpr size_t kMaxStrangers = 16;

// A node's view of the cluster, sent as a HELLO request and as its answer.
// Payload: varint protocol_version | (version 2:) the Iced value of the fields below. Every
// version of the protocol begins with the varint, so a node can always say which version a
// peer speaks even when it cannot read the rest.
struct Hello {
  uint32_t protocol_version = 0;  // the leading varint, not an Iced field
  bool complete = false;          // decoded: the version is ours and the fields were read

  std::string cluster_name;
  uint32_t slots = 0;
  uint64_t map_version = 0;
  uint64_t fingerprint = 0;
  uint32_t self_id = 0;              // the sender's id in its own list
  std::string self;                  // the sender's address
  std::vector<std::string> members;  // addresses in id order (ids 1..n)
  bool formed = false;
  uint32_t client_port = 0;  // the sender's RESP port (what CLUSTER SLOTS tells clients)
  // The sender's cluster id (rule M5): from its directory or its applied table; 0 when it has
  // none yet (a new cluster forming, or no agreed metadata).
  uint64_t cluster_id_hi = 0;
  uint64_t cluster_id_lo = 0;
  // Whether the sender's directory holds a Raft log (rule M5): a member with no id and no log is
  // new or wiped, and must join a cluster that has an id rather than form with it.
  bool holds_log = false;
  // Rule M5 (7): a random number drawn when the sender's process started (never 0), and, once
  // the sender formed, the start tokens of the members it counted as agreeing (index id - 1, its
  // own included; 0 for one it did not count). A founder that heard no answer before the others
  // had bootstrapped the log is still the process they counted, which never started Raft, so
  // it may form with them; a wiped member is another process and must still --join.
  uint64_t start_token = 0;
  std::vector<uint64_t> founder_tokens;  // empty, or one per member

  static constexpr uint16_t kTypeId = 110;
  static constexpr std::string_view kTypeName = "ClusterHello";
  static constexpr auto FloeIcedFields() {
    return std::make_tuple(
        wire::Field("cluster_name", &Hello::cluster_name), wire::Field("slots", &Hello::slots),
        wire::Field("map_version", &Hello::map_version),
        wire::Field("fingerprint", &Hello::fingerprint), wire::Field("self_id", &Hello::self_id),
        wire::Field("self", &Hello::self), wire::Field("members", &Hello::members),
        wire::Field("formed", &Hello::formed), wire::Field("client_port", &Hello::client_port),
        wire::Field("cluster_id_hi", &Hello::cluster_id_hi),
        wire::Field("cluster_id_lo", &Hello::cluster_id_lo),
        wire::Field("holds_log", &Hello::holds_log),
        wire::Field("start_token", &Hello::start_token),
        wire::Field("founder_tokens", &Hello::founder_tokens));
  }
};

// Whether `name` is a valid cluster name: 1-64 bytes of [A-Za-z0-9._-].
bool ValidClusterName(std::string_view name);

std::string EncodeHello(const Hello& hello);
// Corruption for bytes that are not a HELLO: more than kMaxHelloBytes, truncated, trailing
// bytes, a bad cluster name, an address that is not canonical, duplicate members, more than
// kMaxMembers, a self that is not its list's entry self_id, founder tokens that are not one per
// member. A protocol version other than ours decodes to complete == false with only
// protocol_version set.
Result<Hello> DecodeHello(std::string_view bytes);

// Our view as a HELLO.
Hello MakeHello(const Options& options, const SlotMap& map, bool formed);

// Rule M5 (7): whether `counter` counted `founder`'s process (its start token) as agreeing when
// it formed.
bool CountedAsFounder(const Hello& counter, const Hello& founder);

// Why `theirs` (the answer of the member we know as `expected`) disagrees with `ours`; empty
// when it agrees. The texts of docs/cluster.md, without the address prefix.
std::string Disagreement(const Hello& ours, const Hello& theirs, const Member& expected);
// Rule M5 (3): whether the only disagreement is that `theirs` holds neither a log nor an id while
// ours holds the cluster's id (a new or wiped directory: it must --join). Such a member, as a
// silent one, does not keep a restarted member from forming with a majority; every other
// disagreement (another build, name, slot count, cluster id, member list) does.
bool DisagreesOnlyAsWiped(const Hello& ours, const Hello& theirs);

}  // namespace floe::cluster::internal

#endif  // FLOE_CLUSTER_INTERNAL_HELLO_H_
