// libFuzzer target for the frame RPC decoders (docs/frames_cluster.md, rule D12): PUT_CHUNKS,
// GET_CHUNK and its answer, DROP_CHUNKS / FRAME_IDS_LIVE and the latter's answer, a frame's
// header, PUT_HEADER, and MAP_TASK and its answer (the second byte picks the answer's operation
// and its counts, and for a group-by the shape of its groups). The first byte
// picks the decoder; any input either fails with a Status or decodes within the bounds to a
// message that encodes and decodes back to the same meaning. The codec's source is compiled
// in, so it carries coverage and ASan.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "frame/frame.h"
#include "server/internal/frame_rpc.h"

namespace {

using namespace floe::server::internal;  // NOLINT: one short fuzz target

void CheckColumns(const std::vector<std::string_view>& columns) {
  for (std::string_view c : columns) {
    if (c.size() < floe::frame::kChunkHeaderBytes || c.size() > kMaxChunkColumnBytes) std::abort();
  }
}

bool SameChunks(const PutChunksRequest& a, const PutChunksRequest& b) {
  if (a.chunks.size() != b.chunks.size()) return false;
  for (size_t i = 0; i < a.chunks.size(); i++) {
    if (a.chunks[i].index != b.chunks[i].index || a.chunks[i].columns != b.chunks[i].columns) {
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 9) {
    case 0: {
      floe::Result<PutChunksRequest> r = DecodePutChunks(bytes);
      if (!r.ok()) return 0;
      if (r->columns == 0 || r->columns > kMaxFrameColumns || r->chunks.empty() ||
          r->chunks.size() > kMaxFrameChunks || r->header_slot >= 16384 || r->group >= 16384) {
        std::abort();
      }
      for (const ChunkPut& c : r->chunks) {
        if (c.columns.size() != r->columns) std::abort();
        CheckColumns(c.columns);
      }
      const std::string enc = EncodePutChunks(*r);
      floe::Result<PutChunksRequest> again = DecodePutChunks(enc);
      if (!again.ok() || again->map_version != r->map_version || again->frame_id != r->frame_id ||
          again->header_slot != r->header_slot || again->group != r->group ||
          again->columns != r->columns || !SameChunks(*r, *again)) {
        std::abort();
      }
      break;
    }
    case 1: {
      floe::Result<GetChunkRequest> r = DecodeGetChunk(bytes);
      if (!r.ok()) return 0;
      floe::Result<GetChunkRequest> again = DecodeGetChunk(EncodeGetChunk(*r));
      if (!again.ok() || again->map_version != r->map_version || again->frame_id != r->frame_id ||
          again->group != r->group || again->index != r->index) {
        std::abort();
      }
      break;
    }
    case 2: {
      floe::Result<std::vector<std::string_view>> r = DecodeChunkColumns(bytes);
      if (!r.ok()) return 0;
      if (r->empty() || r->size() > kMaxFrameColumns) std::abort();
      CheckColumns(*r);
      const std::string enc = EncodeChunkColumns(*r);
      floe::Result<std::vector<std::string_view>> again = DecodeChunkColumns(enc);
      if (!again.ok() || *again != *r) std::abort();
      break;
    }
    case 3: {
      floe::Result<FrameIdsRequest> r = DecodeFrameIds(bytes);
      if (!r.ok()) return 0;
      if (r->ids.size() > bytes.size() || r->ids.size() > kMaxFrameIds) std::abort();
      floe::Result<FrameIdsRequest> again = DecodeFrameIds(EncodeFrameIds(*r));
      if (!again.ok() || again->map_version != r->map_version || again->ids != r->ids) {
        std::abort();
      }
      break;
    }
    case 5: {
      floe::Result<FrameHeader> r = DecodeFrameHeader(bytes);
      if (!r.ok()) return 0;
      if (r->columns.empty() || r->columns.size() > kMaxFrameColumns ||
          r->chunks.size() > kMaxFrameChunks || r->group >= 16384) {
        std::abort();
      }
      uint64_t domain_values = 0;
      for (const FrameHeader::Column& c : r->columns) {
        if (c.name.empty() || c.na_count > r->rows()) std::abort();
        domain_values += c.domain.size();
      }
      if (domain_values > kMaxHeaderDomainValues) std::abort();
      const std::string enc = EncodeFrameHeader(*r);
      floe::Result<FrameHeader> again = DecodeFrameHeader(enc);
      if (!again.ok() || EncodeFrameHeader(*again) != enc) std::abort();
      break;
    }
    case 6: {
      floe::Result<PutHeaderRequest> r = DecodePutHeader(bytes);
      if (!r.ok()) return 0;
      if (r->key.empty()) std::abort();
      const std::string enc = EncodePutHeader(*r);  // `again` views it
      floe::Result<PutHeaderRequest> again = DecodePutHeader(enc);
      if (!again.ok() || again->key != r->key || again->replace != r->replace ||
          again->header != r->header || again->map_version != r->map_version) {
        std::abort();
      }
      break;
    }
    case 7: {
      floe::Result<MapTaskRequest> r = DecodeMapTask(bytes);
      if (!r.ok()) return 0;
      if (r->members.empty() || r->members.size() > kMaxMapMembers || r->bins < 1 ||
          r->bins > floe::mr::kMaxBins || r->column >= kMaxFrameColumns) {
        std::abort();
      }
      const std::string enc = EncodeMapTask(*r);  // `again` views it
      floe::Result<MapTaskRequest> again = DecodeMapTask(enc);
      if (!again.ok() || again->members != r->members || again->header != r->header ||
          again->op != r->op || again->column != r->column || again->bins != r->bins ||
          again->budget_us != r->budget_us || again->map_version != r->map_version ||
          again->pass != r->pass || again->prefixes != r->prefixes ||
          r->prefixes.size() > floe::mr::kMaxRadixPrefixes || again->out_id != r->out_id ||
          again->out_header_slot != r->out_header_slot || again->select != r->select ||
          again->conditions.size() != r->conditions.size() || r->select.size() > kMaxFrameColumns ||
          r->conditions.size() > floe::mr::kMaxFilterConditions ||
          again->group_keys != r->group_keys || again->aggregates.size() != r->aggregates.size() ||
          r->group_keys.size() > kMaxMapGroupKeys || r->aggregates.size() > kMaxMapAggregates) {
        std::abort();
      }
      for (size_t i = 0; i < r->aggregates.size(); i++) {
        if (again->aggregates[i].fn != r->aggregates[i].fn ||
            again->aggregates[i].col != r->aggregates[i].col ||
            r->aggregates[i].col >= kMaxFrameColumns) {
          std::abort();
        }
      }
      for (size_t i = 0; i < r->conditions.size(); i++) {
        if (again->conditions[i].text != r->conditions[i].text ||
            again->conditions[i].col != r->conditions[i].col ||
            r->conditions[i].col >= kMaxFrameColumns) {
          std::abort();
        }
      }
      break;
    }
    case 8: {
      if (bytes.empty()) return 0;
      // The first byte: the operation (1 to 6) and the counts the answer holds; for kGroupBy
      // (6) the shape of its groups: one or two keys, and one of two aggregate lists.
      const uint8_t b = static_cast<uint8_t>(bytes[0]);
      const auto op = static_cast<MapOp>(1 + b % 6);
      const uint32_t bins = 1 + b / 6;
      GroupShape shape;
      if (op == MapOp::kGroupBy) {
        using floe::mr::AggFn;
        shape.keys = 1 + (b / 6) % 2;
        if ((b / 12) % 2 == 0) {
          shape.aggregates = {{.fn = AggFn::kCount, .col = 0},
                              {.fn = AggFn::kSd, .col = 1},
                              {.fn = AggFn::kDistinct, .col = 2}};
        } else {
          shape.aggregates = {{.fn = AggFn::kMean, .col = 0}};
        }
      }
      floe::Result<MapTaskAnswer> r = DecodeMapTaskAnswer(op, bins, bytes.substr(1), shape);
      if (!r.ok()) return 0;
      if (r->mapped.size() > kMaxFrameChunks ||
          (op != MapOp::kSummaryMoments && op != MapOp::kGroupBy && r->histogram.size() != bins) ||
          r->made.size() != (IsDeriveOp(op) ? r->mapped.size() : 0)) {
        std::abort();
      }
      if (op == MapOp::kGroupBy) {
        const floe::mr::GroupTable& t = r->groups;
        const size_t width = shape.aggregates.size();
        const size_t distinct = floe::mr::DistinctCount(shape.aggregates);
        if (t.groups() > floe::mr::MaxGroups(shape.keys, shape.aggregates) ||
            t.rows.size() != t.groups() || t.moments.size() != t.groups() * width ||
            t.sums.size() != t.groups() * width || t.sketches.size() != t.groups() * distinct) {
          std::abort();
        }
        for (const std::vector<double>& k : t.keys) {
          if (k.size() != shape.keys) std::abort();
        }
      }
      for (size_t i = 0; i < r->made.size(); i++) {
        if (r->made[i].rows > r->mapped[i].rows) std::abort();
      }
      const std::string enc = EncodeMapTaskAnswer(op, *r);
      floe::Result<MapTaskAnswer> again = DecodeMapTaskAnswer(op, bins, enc, shape);
      if (!again.ok() || again->mapped != r->mapped || again->histogram != r->histogram ||
          again->made.size() != r->made.size() || again->groups.groups() != r->groups.groups() ||
          EncodeMapTaskAnswer(op, *again) != enc) {
        std::abort();
      }
      break;
    }
    default: {
      floe::Result<std::vector<FrameIdState>> r = DecodeFrameIdStates(bytes, bytes.size());
      if (!r.ok()) return 0;
      if (EncodeFrameIdStates(*r) != bytes) std::abort();
      break;
    }
  }
  return 0;
}
