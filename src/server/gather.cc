// Combining the replies of a command's parts (internal/gather.h).

#include "server/internal/gather.h"

#include <algorithm>
#include <random>

#include "cluster/cluster.h"
#include "resp/resp.h"
#include "server/internal/command.h"

namespace floe::server::internal {
namespace {

// Every reply of `bytes` (a part may hold several, one per command it ran).
Result<std::vector<resp::Reply>> ParseReplies(std::string_view bytes) {
  std::vector<resp::Reply> out;
  while (!bytes.empty()) {
    size_t used = 0;
    FLOE_ASSIGN_OR_RETURN(resp::Reply r, resp::ParseReply(bytes, &used));
    out.push_back(std::move(r));
    bytes.remove_prefix(used);
  }
  return out;
}

void WriteBulkOrNull(resp::ReplyWriter& w, const resp::Reply& r) {
  if (r.type == resp::Reply::Type::kBulk) {
    w.Bulk(r.str);
  } else {
    w.Null();
  }
}

}  // namespace

// SCAN cursors of a cluster: the member's index (0-based, 10 bits: kMaxMembers is 1024) in the
// low bits, the member's own cursor above it. A store cursor is its shard (8 bits) over a
// position below 2^36 (a table of 2^36 slots per shard would need terabytes).
constexpr int kScanIndexBits = 10;
constexpr int kScanPositionBits = 36;
constexpr int kStoreShardShift = 56;
static_assert(cluster::kMaxMembers <= (size_t{1} << kScanIndexBits));

bool EncodeScanCursor(uint64_t local, uint64_t index, uint64_t* out) {
  const uint64_t shard = local >> kStoreShardShift;
  const uint64_t position = local & ((uint64_t{1} << kStoreShardShift) - 1);
  if (position >= (uint64_t{1} << kScanPositionBits)) return false;
  *out = (shard << (kScanPositionBits + kScanIndexBits)) | (position << kScanIndexBits) | index;
  return true;
}

void DecodeScanCursor(uint64_t cursor, uint64_t* local, uint64_t* index) {
  *index = cursor & ((uint64_t{1} << kScanIndexBits) - 1);
  const uint64_t position = (cursor >> kScanIndexBits) & ((uint64_t{1} << kScanPositionBits) - 1);
  const uint64_t shard = cursor >> (kScanPositionBits + kScanIndexBits);
  *local = (shard << kStoreShardShift) | position;
}

std::string ErrorBytes(std::string_view text) {
  std::string out;
  resp::ReplyWriter(&out).Error(text);
  return out;
}

// Rule C4's answer when a node does not answer.
std::string Unreachable(const std::string& address, const Status& why) {
  const StatusCode code = why.code();
  if (code == StatusCode::kTimeout || code == StatusCode::kUnavailable ||
      code == StatusCode::kCancelled) {
    return ErrorBytes("CLUSTERDOWN The node " + address + " is unreachable (" +
                      std::string(why.message()) + ")");
  }
  // It answered, with an error of the RPC or of its handler (a request it could not take).
  return ErrorBytes("ERR the node " + address + " refused the request (" + why.ToString() + ")");
}

std::string FinishGather(Gather& g) {
  if (g.how == Combine::kAsIs) return std::move(g.replies[0]);
  std::vector<std::vector<resp::Reply>> parts;
  for (const std::string& bytes : g.replies) {
    Result<std::vector<resp::Reply>> r = ParseReplies(bytes);
    if (!r.ok()) return ErrorBytes("ERR a node sent a malformed reply: " + r.status().ToString());
    for (const resp::Reply& one : *r) {
      // PFCOUNT's parts are TYPE and HLL.EXPORT of each key, judged together below.
      if (one.type == resp::Reply::Type::kError && g.how != Combine::kPfCount) {
        return ErrorBytes(one.str);
      }
    }
    parts.push_back(std::move(*r));
  }
  std::string out;
  resp::ReplyWriter w(&out, g.protocol);
  switch (g.how) {
    case Combine::kAsIs:
      break;
    case Combine::kSum: {
      int64_t sum = 0;
      for (const auto& p : parts) {
        for (const resp::Reply& r : p) sum += r.integer;
      }
      w.Integer(sum);
      break;
    }
    case Combine::kConcat: {
      size_t n = 0;
      for (const auto& p : parts) {
        for (const resp::Reply& r : p) n += r.elements.size();
      }
      w.ArrayHeader(n);
      for (const auto& p : parts) {
        for (const resp::Reply& r : p) {
          for (const resp::Reply& e : r.elements) w.Bulk(e.str);
        }
      }
      break;
    }
    case Combine::kSorted: {
      std::vector<std::string_view> names;
      for (const auto& p : parts) {
        for (const resp::Reply& r : p) {
          for (const resp::Reply& e : r.elements) names.push_back(e.str);
        }
      }
      std::sort(names.begin(), names.end());
      w.ArrayHeader(names.size());
      for (std::string_view n : names) w.Bulk(n);
      break;
    }
    case Combine::kJoined: {
      // Each part is one array reply: its header line, then its elements' bytes as they are.
      size_t n = 0;
      std::string elements;
      for (size_t i = 0; i < parts.size(); i++) {
        if (parts[i].size() != 1 || parts[i][0].type != resp::Reply::Type::kArray) {
          return ErrorBytes("ERR a node sent a reply of the wrong shape");
        }
        n += parts[i][0].elements.size();
        const std::string& bytes = g.replies[i];
        elements.append(bytes, bytes.find('\n') + 1);
      }
      w.ArrayHeader(n);
      out += elements;
      break;
    }
    case Combine::kMGet: {
      std::vector<const resp::Reply*> values(g.keys, nullptr);
      for (size_t i = 0; i < parts.size(); i++) {
        if (parts[i].size() != 1 || parts[i][0].elements.size() != g.positions[i].size()) {
          return ErrorBytes("ERR a node sent a reply of the wrong shape");
        }
        for (size_t j = 0; j < g.positions[i].size(); j++) {
          values[g.positions[i][j]] = &parts[i][0].elements[j];
        }
      }
      w.ArrayHeader(values.size());
      for (const resp::Reply* v : values) WriteBulkOrNull(w, *v);
      break;
    }
    case Combine::kAllOk:
      w.Ok();
      break;
    case Combine::kRandom: {
      std::vector<const resp::Reply*> found;
      for (const auto& p : parts) {
        for (const resp::Reply& r : p) {
          if (r.type == resp::Reply::Type::kBulk) found.push_back(&r);
        }
      }
      if (found.empty()) {
        w.Null();
      } else {
        thread_local std::minstd_rand rng(std::random_device{}());
        w.Bulk(found[rng() % found.size()]->str);
      }
      break;
    }
    case Combine::kScan: {
      const resp::Reply& r = parts[0].at(0);
      uint64_t local = 0, next = 0;
      if (r.elements.size() != 2 || !internal::ParseCursor(r.elements[0].str, &local)) {
        return ErrorBytes("ERR a node sent a reply of the wrong shape");
      }
      if (local != 0) {
        if (!EncodeScanCursor(local, g.scan_index, &next)) {
          return ErrorBytes("ERR the SCAN cursor of a node does not fit a cluster cursor");
        }
      } else if (g.scan_index + 1 < g.members) {
        next = g.scan_index + 1;  // the next member, from its start
      }
      w.ArrayHeader(2);
      w.Bulk(std::to_string(next));
      w.ArrayHeader(r.elements[1].elements.size());
      for (const resp::Reply& e : r.elements[1].elements) w.Bulk(e.str);
      break;
    }
    case Combine::kPfCount: {
      std::vector<internal::TypedExport> exports(g.keys);
      for (size_t i = 0; i < parts.size(); i++) {
        if (parts[i].size() != 2 * g.positions[i].size()) {
          return ErrorBytes("ERR a node sent a reply of the wrong shape");
        }
        // TYPE fails only when the home did not run it (CLUSTERDOWN, rule C4): the answer.
        for (size_t j = 0; j < parts[i].size(); j += 2) {
          if (parts[i][j].type == resp::Reply::Type::kError) return ErrorBytes(parts[i][j].str);
        }
        for (size_t j = 0; j < g.positions[i].size(); j++) {
          exports[g.positions[i][j]] = {&parts[i][2 * j], &parts[i][2 * j + 1]};
        }
      }
      Result<int64_t> n = internal::PfCountOfExports(exports);
      if (!n.ok()) return ErrorBytes(internal::ErrorReplyText(n.status()));
      w.Integer(*n);
      break;
    }
  }
  return out;
}

// Records part `i`'s reply; the last one to arrive finishes the whole.
// This runs on an RPC thread, outside the command boundary's safety net: an exception while
// combining (out of memory) becomes the client's error reply, never the end of the process or a
// reply that never comes.
void PartDone(const std::shared_ptr<Gather>& g, size_t i, std::string reply) {
  g->replies[i] = std::move(reply);
  // acq_rel: the last part sees every other part's reply.
  if (g->remaining.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  std::string combined;
  try {
    combined = FinishGather(*g);
  } catch (const std::exception& e) {
    FLOE_LOG_ERROR("combining the replies of a command split across nodes failed: {}", e.what());
    combined = "-ERR internal error: combining the nodes' replies failed\r\n";
  }
  g->done(std::move(combined));
}

}  // namespace floe::server::internal
