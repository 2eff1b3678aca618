// Frames in a cluster: where a chunk lives and the RPC messages that move chunks between
// members (docs/frames_cluster.md, rules D1, D3, D4, D10, D12). Private to server/.
//
//   1. ChunkSlot(g, k) is chunk k's slot in a frame of group g: the 14-bit bit reversal of
//      (g + k) mod 16,384 (rule D1). A chunk's home is the owner of that slot; a frame's name
//      plays no part. A frame made from nothing draws its group at random (RandomChunkGroup).
//   2. Every request carries the sender's slot map version; a member whose version differs
//      refuses it (WrongHome, naming both), as the DKV does (rule D12).
//   3. The decoders are strict and bounded (rule D12, fuzz/frame_rpc_fuzz.cc): a message of at
//      most kMaxFrameRpcBytes, every count checked against an absolute cap (kMaxFrameIds,
//      kMaxFrameColumns, kMaxFrameChunks, kMaxHeaderDomainValues) and against the bytes
//      present at each element's smallest encoding before anything is sized, vectors grown as
//      elements are parsed (never sized from a peer's count), every column's bytes at least a
//      chunk header (frame::kChunkHeaderBytes) and at most kMaxChunkColumnBytes, nothing left
//      over. Corruption otherwise, never a crash. The decoded requests hold views into the
//      bytes they were decoded from.
//
// Thread rules: pure functions and values.

#ifndef FLOE_SERVER_INTERNAL_FRAME_RPC_H_
#define FLOE_SERVER_INTERNAL_FRAME_RPC_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/base.h"
#include "mr/mr.h"

namespace floe::server::internal {

// RPC method ids 310-315 (docs/frames_cluster.md, "RPC methods"; docs/cluster.md, "Reserved RPC
// method ids").
inline constexpr uint16_t kPutChunksMethod = 310;
inline constexpr uint16_t kGetChunkMethod = 311;
inline constexpr uint16_t kMapTaskMethod = 312;
inline constexpr uint16_t kDropChunksMethod = 313;
inline constexpr uint16_t kPutHeaderMethod = 314;
// PUT_HEADER's margin (D14): the home stores a header no later than its receipt plus
// ChangeTimeoutUs less this, and its caller waits ChangeTimeoutUs plus this.
inline constexpr uint64_t kPutHeaderMarginUs = 250'000;
inline constexpr uint16_t kFrameIdsLiveMethod = 315;

// Rule 3's bounds.
inline constexpr uint64_t kMaxFrameRpcBytes = uint64_t{1} << 30;
inline constexpr uint64_t kMaxChunkColumnBytes = uint64_t{1} << 30;
// Per message: ids of one DROP_CHUNKS or FRAME_IDS_LIVE (the sweep asks in batches of at most
// this many), columns of a header, a PUT_CHUNKS or a GET_CHUNK answer (an import makes at most
// parse::ParseLimits::max_columns, 10,000), chunks of a header or a PUT_CHUNKS (an import makes
// at most 2^18 files' chunks plus a chunk per range and per 4 MiB cut: far fewer), and domain
// values of a header, every column's together (an import holds at most max_domain_bytes, 4 GiB,
// of domains at FrameBuilder::kDomainEntryBytes, 96, a value at least: under 2^26).
inline constexpr uint64_t kMaxFrameIds = uint64_t{1} << 16;
inline constexpr uint64_t kMaxFrameColumns = uint64_t{1} << 14;
inline constexpr uint64_t kMaxFrameChunks = uint64_t{1} << 20;
inline constexpr uint64_t kMaxHeaderDomainValues = uint64_t{1} << 26;
// A header's compressed bytes, and its raw bytes, every chunk's together (2^53: 8 PiB, far above
// any frame, and exact as a double and as an int64 sum).
inline constexpr uint64_t kMaxFrameBytes = uint64_t{1} << 53;
// The slot count ChunkSlot maps onto (cluster::kSlots).
inline constexpr uint32_t kChunkSlotBits = 14;

inline constexpr uint16_t kChunkGroups = uint16_t{1} << kChunkSlotBits;
// Rule 1.
constexpr uint16_t ChunkSlot(uint16_t group, uint64_t k) {
  uint32_t v = static_cast<uint32_t>((group + k) & ((uint64_t{1} << kChunkSlotBits) - 1));
  uint32_t r = 0;
  for (uint32_t i = 0; i < kChunkSlotBits; i++) {
    r = (r << 1) | (v & 1);
    v >>= 1;
  }
  return static_cast<uint16_t>(r);
}

// What the allocator holds for a block of `n` bytes: its size class (at most an eighth more)
// and its bookkeeping. The charges of chunks (chunk_store.h) and headers (HeaderCharge) add it
// per block they hold, so that what they charge is what they use.
constexpr uint64_t AllocatedBytes(uint64_t n) { return n == 0 ? 0 : n + n / 8 + 16; }

// A group drawn at random (rule 1), below kChunkGroups.
uint16_t RandomChunkGroup();

// One chunk of a PUT_CHUNKS request: every column's chunk `index`, in column order.
struct ChunkPut {
  uint64_t index = 0;
  std::vector<std::string_view> columns;
};
// 310: varint map version, varint frame id, u16 group, u16 header slot, varint column count (>= 1),
// varint chunk count, then per chunk: varint index, and each column's bytes length-prefixed.
// Every chunk has the column count's columns.
struct PutChunksRequest {
  uint64_t map_version = 0;
  uint64_t frame_id = 0;
  uint16_t group = 0;
  uint16_t header_slot = 0;
  uint32_t columns = 0;
  std::vector<ChunkPut> chunks;
};
std::string EncodePutChunks(const PutChunksRequest& r);
Result<PutChunksRequest> DecodePutChunks(std::string_view bytes);

// 311: varint map version, varint frame id, u16 group, varint index. The answer: varint column
// count, each column's bytes length-prefixed (EncodeChunkColumns).
struct GetChunkRequest {
  uint64_t map_version = 0;
  uint64_t frame_id = 0;
  uint16_t group = 0;
  uint64_t index = 0;
};
std::string EncodeGetChunk(const GetChunkRequest& r);
Result<GetChunkRequest> DecodeGetChunk(std::string_view bytes);
std::string EncodeChunkColumns(const std::vector<std::string_view>& columns);
Result<std::vector<std::string_view>> DecodeChunkColumns(std::string_view bytes);

// 313 (DROP_CHUNKS) and 315 (FRAME_IDS_LIVE): varint map version, varint id count, each id a
// varint. 313 answers a varint, the chunk sets dropped; 315 one byte per id (FrameIdState).
struct FrameIdsRequest {
  uint64_t map_version = 0;
  std::vector<uint64_t> ids;
};
std::string EncodeFrameIds(const FrameIdsRequest& r);
Result<FrameIdsRequest> DecodeFrameIds(std::string_view bytes);
enum class FrameIdState : uint8_t { kLive = 0, kImporting = 1, kGone = 2 };
std::string EncodeFrameIdStates(const std::vector<FrameIdState>& states);
// Corruption unless exactly `n` states, each one of the three.
Result<std::vector<FrameIdState>> DecodeFrameIdStates(std::string_view bytes, size_t n);

// A frame's header (D2): what the value at its name holds in a cluster, every figure FRAME.INFO
// shows without reading a chunk. Encoded: varint id, u16 group, varint column count, per column
// (lp name, u8 type, varint domain size, each domain value lp, varint NA count), varint chunk
// count, per chunk (varint rows, varint compressed bytes, varint raw bytes). Decoding checks
// every count against the bytes left, names non-empty and distinct, types known, a domain for
// categorical columns only and its values distinct, chunk rows at most frame::kMaxChunkRows, NA
// counts at most the rows, compressed and raw bytes each at most kMaxFrameBytes in all.
struct FrameHeader {
  uint64_t id = 0;
  uint16_t group = 0;
  struct Column {
    std::string name;
    uint8_t type = 0;  // frame::ColumnType
    std::vector<std::string> domain;
    uint64_t na_count = 0;
  };
  std::vector<Column> columns;
  struct Chunk {
    uint32_t rows = 0;
    uint64_t compressed_bytes = 0;  // every column's
    uint64_t raw_bytes = 0;
  };
  std::vector<Chunk> chunks;
  uint64_t rows() const;
};
std::string EncodeFrameHeader(const FrameHeader& h);
Result<FrameHeader> DecodeFrameHeader(std::string_view bytes);

// 314: varint map version, lp key, u8 replace (0 or 1), then the header's encoding.
struct PutHeaderRequest {
  uint64_t map_version = 0;
  std::string_view key;
  bool replace = false;
  std::string_view header;  // EncodeFrameHeader's bytes, decoded by the handler
};
std::string EncodePutHeader(const PutHeaderRequest& r);
Result<PutHeaderRequest> DecodePutHeader(std::string_view bytes);

// 312 MAP_TASK (D8): varint map version, u8 op (MapOp), varint column, varint bins (1 to
// mr::kMaxBins), f64 lo, f64 hi (the histogram's range: finite, lo <= hi, for kSummaryHistogram),
// varint budget (µs: how long the receiver waits for its subtree), for kQuantileRadix varint
// pass (0 to 7) and varint prefix count (1 to mr::kMaxRadixPrefixes) and each prefix (varint,
// increasing), then varint member count (1 to kMaxMapMembers) and each member's id (varint,
// distinct, the receiver first), then the frame's header (EncodeFrameHeader's bytes, the rest
// of the message, decoded by the handler). The derived frames' operations (D6), kSelect and
// kFilter, carry after the budget varint output frame id and u16 output header slot, then for
// kSelect varint column count (1 to kMaxFrameColumns) and each source column (varint, below
// kMaxFrameColumns), for kFilter varint condition count (1 to mr::kMaxFilterConditions) and each
// condition (varint column below kMaxFrameColumns, u8 mr::FilterOp, f64 number, lp text).
// kGroupBy carries after the budget varint key count (1 to kMaxMapGroupKeys) and each key column
// (varint, below kMaxFrameColumns, distinct), then varint aggregate count (1 to
// kMaxMapAggregates) and each aggregate (u8 mr::AggFn, varint column below kMaxFrameColumns).
enum class MapOp : uint8_t {
  kSummaryMoments = 1,
  kSummaryHistogram = 2,
  kQuantileRadix = 3,
  kSelect = 4,
  kFilter = 5,
  kGroupBy = 6,
};
// FRAME.GROUPBY's limits (server.h's kMaxGroupByKeys, kMaxGroupByAggregates).
inline constexpr uint64_t kMaxMapGroupKeys = 32;
inline constexpr uint64_t kMaxMapAggregates = 100;
constexpr bool IsDeriveOp(MapOp op) { return op == MapOp::kSelect || op == MapOp::kFilter; }
inline constexpr uint64_t kMaxMapMembers = 1024;
struct MapTaskRequest {
  uint64_t map_version = 0;
  MapOp op = MapOp::kSummaryMoments;
  uint32_t column = 0;
  uint32_t bins = 1;
  double lo = 0, hi = 0;
  uint64_t budget_us = 0;
  uint32_t pass = 0;                      // kQuantileRadix
  std::vector<uint64_t> prefixes;         // kQuantileRadix
  uint64_t out_id = 0;                    // kSelect, kFilter: the output frame's id
  uint16_t out_header_slot = 0;           // ... and its header's slot (D10's sweep)
  std::vector<uint32_t> select;           // kSelect: the source columns, in output order
  std::vector<mr::Condition> conditions;  // kFilter
  std::vector<uint32_t> group_keys;       // kGroupBy: the key columns
  std::vector<mr::Aggregate> aggregates;  // kGroupBy
  std::vector<uint32_t> members;
  std::string_view header;
  // The counts a histogram answer holds: bins, or 256 a prefix; for kSelect and kFilter the
  // output frame's columns given the source's `source_columns`.
  size_t Counts(size_t source_columns = 0) const;
};
std::string EncodeMapTask(const MapTaskRequest& r);
Result<MapTaskRequest> DecodeMapTask(std::string_view bytes);
// Its answer: varint count of the chunks mapped (at most kMaxFrameChunks), each (varint index,
// varint rows), then the accumulator: for kSummaryMoments varint count, na, pos_inf, neg_inf
// (pos_inf + neg_inf <= count), f64 min, max, mean, m2, lo, hi, and the HyperLogLog's
// serialization length-prefixed (at most 64 KiB, with mr::SummaryHllParams); for
// kSummaryHistogram and kQuantileRadix the request's Counts() counts, each a varint; for kSelect
// and kFilter, per chunk mapped (in the same order) the output chunk's varint rows (at most the
// source chunk's), compressed and raw bytes, then each output column's NA count over those
// chunks (Counts() varints: the output header's NA counts are their sums); for kGroupBy the
// member's partial table (mr::GroupTable, docs/wire.md): varint group count (at most
// mr::MaxGroups of the request's keys and aggregates), then per group each key value (f64, NA as
// NaN), varint rows, per aggregate its moments (varint count, na, pos_inf, neg_inf; f64 min, max,
// mean, m2) and f64 sum, and per distinct aggregate its HyperLogLog's serialization
// length-prefixed (at most 64 KiB, default parameters).
struct MappedChunk {
  uint64_t index = 0;
  uint64_t rows = 0;
  bool operator==(const MappedChunk&) const = default;
};
struct MapTaskAnswer {
  std::vector<MappedChunk> mapped;
  mr::SummaryMoments moments;            // kSummaryMoments
  std::vector<uint64_t> histogram;       // kSummaryHistogram, kQuantileRadix; kSelect, kFilter: NAs
  std::vector<FrameHeader::Chunk> made;  // kSelect, kFilter: the output chunk of each mapped
  mr::GroupTable groups;                 // kGroupBy
};
// What a kGroupBy answer's table holds a group: its keys and aggregates (the request's).
struct GroupShape {
  size_t keys = 0;
  std::vector<mr::Aggregate> aggregates;
};
std::string EncodeMapTaskAnswer(MapOp op, const MapTaskAnswer& a);
// `counts`: the request's Counts() (at most mr::kMaxRadixPrefixes x 256).
// `group`: for kGroupBy, the request's keys and aggregates.
Result<MapTaskAnswer> DecodeMapTaskAnswer(MapOp op, size_t counts, std::string_view bytes,
                                          const GroupShape& group = {});

}  // namespace floe::server::internal

#endif  // FLOE_SERVER_INTERNAL_FRAME_RPC_H_
