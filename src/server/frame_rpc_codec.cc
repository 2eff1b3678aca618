// The frame RPC messages (internal/frame_rpc.h; docs/frames_cluster.md, "RPC methods").

#include <algorithm>
#include <cmath>
#include <random>
#include <set>

#include "frame/frame.h"
#include "parse/parse.h"
#include "server/internal/frame_rpc.h"
#include "wire/wire.h"

namespace floe::server::internal {

namespace {

// Rule 3's caps cover what one node's import makes (docs/frames_cluster.md, D12).
static_assert(kMaxFrameColumns >= parse::ParseLimits{}.max_columns);
static_assert(kMaxHeaderDomainValues >=
              parse::ParseLimits{}.max_domain_bytes / frame::FrameBuilder::kDomainEntryBytes);

constexpr uint16_t kSlotCount = uint16_t{1} << kChunkSlotBits;

Status CheckSize(std::string_view bytes) {
  if (bytes.size() > kMaxFrameRpcBytes) return Status::Corruption("frame message over 1 GiB");
  return Status::OK();
}

Status Leftover(const wire::Reader& r) {
  return r.empty() ? Status::OK() : Status::Corruption("frame message has trailing bytes");
}

void PutColumns(wire::Writer& w, const std::vector<std::string_view>& columns) {
  for (std::string_view c : columns) w.PutLengthPrefixed(c);
}

// `n` columns, each at least a chunk header and at most kMaxChunkColumnBytes.
Status GetColumns(wire::Reader& r, uint64_t n, std::vector<std::string_view>* out) {
  // Each column takes at least a chunk header's bytes and its length: checked against the cap
  // and the bytes present before the vector is sized.
  if (n > kMaxFrameColumns || n > r.remaining() / (frame::kChunkHeaderBytes + 1)) {
    return Status::Corruption("frame message: more columns than its bytes hold");
  }
  out->reserve(static_cast<size_t>(n));  // at most 2^14, and 16 bytes for a column's 17
  for (uint64_t i = 0; i < n; i++) {
    std::string_view c;
    FLOE_RETURN_IF_ERROR(r.GetLengthPrefixed(&c, kMaxChunkColumnBytes));
    if (c.size() < frame::kChunkHeaderBytes) {
      return Status::Corruption("frame message: a column shorter than a chunk header");
    }
    out->push_back(c);
  }
  return Status::OK();
}

}  // namespace

uint16_t RandomChunkGroup() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  return static_cast<uint16_t>(rng() % kSlotCount);
}

std::string EncodePutChunks(const PutChunksRequest& r) {
  std::string out;
  wire::Writer w(&out);
  w.PutVarint64(r.map_version);
  w.PutVarint64(r.frame_id);
  w.PutFixed16(r.group);
  w.PutFixed16(r.header_slot);
  w.PutVarint64(r.columns);
  w.PutVarint64(r.chunks.size());
  for (const ChunkPut& c : r.chunks) {
    w.PutVarint64(c.index);
    PutColumns(w, c.columns);
  }
  return out;
}

Result<PutChunksRequest> DecodePutChunks(std::string_view bytes) {
  FLOE_RETURN_IF_ERROR(CheckSize(bytes));
  wire::Reader r(bytes);
  PutChunksRequest q;
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&q.map_version));
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&q.frame_id));
  FLOE_RETURN_IF_ERROR(r.GetFixed16(&q.group));
  if (q.group >= kSlotCount) return Status::Corruption("PUT_CHUNKS: group >= 16384");
  FLOE_RETURN_IF_ERROR(r.GetFixed16(&q.header_slot));
  if (q.header_slot >= kSlotCount) return Status::Corruption("PUT_CHUNKS: header slot >= 16384");
  FLOE_RETURN_IF_ERROR(r.GetVarint32(&q.columns));
  if (q.columns == 0 || q.columns > kMaxFrameColumns) {
    return Status::Corruption("PUT_CHUNKS: no column, or more than 16384");
  }
  uint64_t n = 0;
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&n));
  // A chunk takes at least its index and its columns' bytes.
  const uint64_t min_chunk = 1 + uint64_t{q.columns} * (frame::kChunkHeaderBytes + 1);
  if (n == 0 || n > kMaxFrameChunks || n > r.remaining() / min_chunk) {
    return Status::Corruption("PUT_CHUNKS: chunk count does not match its bytes");
  }
  // Grown as parsed: a chunk in memory (56 bytes and its columns' views) is under 4 times its
  // smallest encoding (18 bytes).
  for (uint64_t i = 0; i < n; i++) {
    ChunkPut& c = q.chunks.emplace_back();
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&c.index));
    FLOE_RETURN_IF_ERROR(GetColumns(r, q.columns, &c.columns));
  }
  FLOE_RETURN_IF_ERROR(Leftover(r));
  return q;
}

std::string EncodeGetChunk(const GetChunkRequest& r) {
  std::string out;
  wire::Writer w(&out);
  w.PutVarint64(r.map_version);
  w.PutVarint64(r.frame_id);
  w.PutFixed16(r.group);
  w.PutVarint64(r.index);
  return out;
}

Result<GetChunkRequest> DecodeGetChunk(std::string_view bytes) {
  FLOE_RETURN_IF_ERROR(CheckSize(bytes));
  wire::Reader r(bytes);
  GetChunkRequest q;
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&q.map_version));
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&q.frame_id));
  FLOE_RETURN_IF_ERROR(r.GetFixed16(&q.group));
  if (q.group >= kSlotCount) return Status::Corruption("GET_CHUNK: group >= 16384");
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&q.index));
  FLOE_RETURN_IF_ERROR(Leftover(r));
  return q;
}

std::string EncodeChunkColumns(const std::vector<std::string_view>& columns) {
  std::string out;
  wire::Writer w(&out);
  w.PutVarint64(columns.size());
  PutColumns(w, columns);
  return out;
}

Result<std::vector<std::string_view>> DecodeChunkColumns(std::string_view bytes) {
  FLOE_RETURN_IF_ERROR(CheckSize(bytes));
  wire::Reader r(bytes);
  uint64_t n = 0;
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&n));
  if (n == 0) return Status::Corruption("GET_CHUNK answer: no column");
  std::vector<std::string_view> columns;
  FLOE_RETURN_IF_ERROR(GetColumns(r, n, &columns));
  FLOE_RETURN_IF_ERROR(Leftover(r));
  return columns;
}

std::string EncodeFrameIds(const FrameIdsRequest& r) {
  std::string out;
  wire::Writer w(&out);
  w.PutVarint64(r.map_version);
  w.PutVarint64(r.ids.size());
  for (uint64_t id : r.ids) w.PutVarint64(id);
  return out;
}

Result<FrameIdsRequest> DecodeFrameIds(std::string_view bytes) {
  FLOE_RETURN_IF_ERROR(CheckSize(bytes));
  wire::Reader r(bytes);
  FrameIdsRequest q;
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&q.map_version));
  uint64_t n = 0;
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&n));
  // At most kMaxFrameIds (512 KiB in memory), each at least a byte of the message.
  if (n > kMaxFrameIds || n > r.remaining()) {
    return Status::Corruption("frame ids: more than 65536, or more than its bytes hold");
  }
  q.ids.reserve(static_cast<size_t>(n));
  for (uint64_t i = 0; i < n; i++) {
    uint64_t id = 0;
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&id));
    q.ids.push_back(id);
  }
  FLOE_RETURN_IF_ERROR(Leftover(r));
  return q;
}

std::string EncodeFrameIdStates(const std::vector<FrameIdState>& states) {
  // An answer to at most kMaxFrameIds ids: at most 64 KiB.
  std::string out;
  out.reserve(states.size());
  for (FrameIdState s : states) out.push_back(static_cast<char>(s));
  return out;
}

Result<std::vector<FrameIdState>> DecodeFrameIdStates(std::string_view bytes, size_t n) {
  if (bytes.size() != n || n > kMaxFrameIds) {
    return Status::Corruption("FRAME_IDS_LIVE answer: wrong count");
  }
  std::vector<FrameIdState> out;
  out.reserve(n);
  for (char c : bytes) {
    const auto b = static_cast<uint8_t>(c);
    if (b > static_cast<uint8_t>(FrameIdState::kGone)) {
      return Status::Corruption("FRAME_IDS_LIVE answer: unknown state");
    }
    out.push_back(static_cast<FrameIdState>(b));
  }
  return out;
}

uint64_t FrameHeader::rows() const {
  uint64_t n = 0;
  for (const Chunk& c : chunks) n += c.rows;
  return n;
}

std::string EncodeFrameHeader(const FrameHeader& h) {
  std::string out;
  wire::Writer w(&out);
  w.PutVarint64(h.id);
  w.PutFixed16(h.group);
  w.PutVarint64(h.columns.size());
  for (const FrameHeader::Column& c : h.columns) {
    w.PutLengthPrefixed(c.name);
    w.PutU8(c.type);
    w.PutVarint64(c.domain.size());
    for (const std::string& d : c.domain) w.PutLengthPrefixed(d);
    w.PutVarint64(c.na_count);
  }
  w.PutVarint64(h.chunks.size());
  for (const FrameHeader::Chunk& c : h.chunks) {
    w.PutVarint64(c.rows);
    w.PutVarint64(c.compressed_bytes);
    w.PutVarint64(c.raw_bytes);
  }
  return out;
}

Result<FrameHeader> DecodeFrameHeader(std::string_view bytes) {
  FLOE_RETURN_IF_ERROR(CheckSize(bytes));
  wire::Reader r(bytes);
  FrameHeader h;
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&h.id));
  FLOE_RETURN_IF_ERROR(r.GetFixed16(&h.group));
  if (h.group >= kSlotCount) return Status::Corruption("frame header: group >= 16384");
  uint64_t n = 0;
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&n));
  // A column takes at least 5 bytes (name length and byte, type, domain size, NA count).
  if (n == 0 || n > kMaxFrameColumns || n > r.remaining() / 5) {
    return Status::Corruption("frame header: column count does not match its bytes");
  }
  std::set<std::string_view> names;
  uint64_t domain_values = 0;  // every column's, at most kMaxHeaderDomainValues
  // Columns, domains and chunks are grown as parsed, never sized from a count: what they hold
  // in memory follows the bytes present.
  for (uint64_t i = 0; i < n; i++) {
    FrameHeader::Column& c = h.columns.emplace_back();
    std::string_view name;
    FLOE_RETURN_IF_ERROR(r.GetLengthPrefixed(&name));
    if (name.empty() || !names.insert(name).second) {
      return Status::Corruption("frame header: a column name empty or repeated");
    }
    c.name = std::string(name);
    FLOE_RETURN_IF_ERROR(r.GetU8(&c.type));
    if (c.type > static_cast<uint8_t>(frame::ColumnType::kTime)) {
      return Status::Corruption("frame header: unknown column type");
    }
    uint64_t d = 0;
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&d));
    if (d > r.remaining() || d > kMaxHeaderDomainValues - domain_values ||
        (d > 0 && c.type != static_cast<uint8_t>(frame::ColumnType::kCategorical))) {
      return Status::Corruption("frame header: a domain that does not fit its column or bytes");
    }
    domain_values += d;
    for (uint64_t j = 0; j < d; j++) {
      std::string_view s;
      FLOE_RETURN_IF_ERROR(r.GetLengthPrefixed(&s));
      c.domain.emplace_back(s);
    }
    // Distinct, as frame::Vec::Make takes a domain (an empty value is a level when the
    // import's NA tokens leave "" out).
    std::vector<std::string_view> sorted(c.domain.begin(), c.domain.end());
    std::sort(sorted.begin(), sorted.end());
    if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
      return Status::Corruption("frame header: a domain value repeated");
    }
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&c.na_count));
  }
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&n));
  if (n > kMaxFrameChunks || n > r.remaining() / 3) {
    return Status::Corruption("frame header: chunk count does not match its bytes");
  }
  uint64_t compressed = 0, raw = 0;  // every chunk's, at most kMaxFrameBytes each
  for (uint64_t i = 0; i < n; i++) {
    FrameHeader::Chunk& c = h.chunks.emplace_back();
    FLOE_RETURN_IF_ERROR(r.GetVarint32(&c.rows));
    if (c.rows > frame::kMaxChunkRows) return Status::Corruption("frame header: chunk too long");
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&c.compressed_bytes));
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&c.raw_bytes));
    // Checked before adding, so the sums never wrap.
    if (c.compressed_bytes > kMaxFrameBytes - compressed || c.raw_bytes > kMaxFrameBytes - raw) {
      return Status::Corruption("frame header: more bytes than a frame holds");
    }
    compressed += c.compressed_bytes;
    raw += c.raw_bytes;
  }
  FLOE_RETURN_IF_ERROR(Leftover(r));
  const uint64_t rows = h.rows();  // at most 2^26 a chunk, so no overflow below 2^38 chunks
  for (const FrameHeader::Column& c : h.columns) {
    if (c.na_count > rows) return Status::Corruption("frame header: more NAs than rows");
  }
  return h;
}

std::string EncodePutHeader(const PutHeaderRequest& q) {
  std::string out;
  wire::Writer w(&out);
  w.PutVarint64(q.map_version);
  w.PutLengthPrefixed(q.key);
  w.PutU8(q.replace ? 1 : 0);
  w.PutRaw(q.header);
  return out;
}

Result<PutHeaderRequest> DecodePutHeader(std::string_view bytes) {
  FLOE_RETURN_IF_ERROR(CheckSize(bytes));
  wire::Reader r(bytes);
  PutHeaderRequest q;
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&q.map_version));
  FLOE_RETURN_IF_ERROR(r.GetLengthPrefixed(&q.key));
  if (q.key.empty()) return Status::Corruption("PUT_HEADER: empty key");
  uint8_t replace = 0;
  FLOE_RETURN_IF_ERROR(r.GetU8(&replace));
  if (replace > 1) return Status::Corruption("PUT_HEADER: replace is 0 or 1");
  q.replace = replace == 1;
  FLOE_RETURN_IF_ERROR(r.GetRaw(r.remaining(), &q.header));
  return q;
}

std::string EncodeMapTask(const MapTaskRequest& r) {
  std::string out;
  wire::Writer w(&out);
  w.PutVarint64(r.map_version);
  w.PutU8(static_cast<uint8_t>(r.op));
  w.PutVarint64(r.column);
  w.PutVarint64(r.bins);
  w.PutDouble(r.lo);
  w.PutDouble(r.hi);
  w.PutVarint64(r.budget_us);
  if (r.op == MapOp::kQuantileRadix) {
    w.PutVarint64(r.pass);
    w.PutVarint64(r.prefixes.size());
    for (uint64_t p : r.prefixes) w.PutVarint64(p);
  }
  if (r.op == MapOp::kGroupBy) {
    w.PutVarint64(r.group_keys.size());
    for (uint32_t c : r.group_keys) w.PutVarint64(c);
    w.PutVarint64(r.aggregates.size());
    for (const mr::Aggregate& a : r.aggregates) {
      w.PutU8(static_cast<uint8_t>(a.fn));
      w.PutVarint64(a.col);
    }
  }
  if (IsDeriveOp(r.op)) {
    w.PutVarint64(r.out_id);
    w.PutFixed16(r.out_header_slot);
    if (r.op == MapOp::kSelect) {
      w.PutVarint64(r.select.size());
      for (uint32_t c : r.select) w.PutVarint64(c);
    } else {
      w.PutVarint64(r.conditions.size());
      for (const mr::Condition& c : r.conditions) {
        w.PutVarint64(c.col);
        w.PutU8(static_cast<uint8_t>(c.op));
        w.PutDouble(c.number);
        w.PutLengthPrefixed(c.text);
      }
    }
  }
  w.PutVarint64(r.members.size());
  for (uint32_t m : r.members) w.PutVarint64(m);
  out.append(r.header);
  return out;
}

Result<MapTaskRequest> DecodeMapTask(std::string_view bytes) {
  FLOE_RETURN_IF_ERROR(CheckSize(bytes));
  wire::Reader r(bytes);
  MapTaskRequest q;
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&q.map_version));
  uint8_t op = 0;
  FLOE_RETURN_IF_ERROR(r.GetU8(&op));
  if (op < static_cast<uint8_t>(MapOp::kSummaryMoments) ||
      op > static_cast<uint8_t>(MapOp::kGroupBy)) {
    return Status::Corruption("MAP_TASK: unknown operation");
  }
  q.op = static_cast<MapOp>(op);
  FLOE_RETURN_IF_ERROR(r.GetVarint32(&q.column));
  if (q.column >= kMaxFrameColumns) return Status::Corruption("MAP_TASK: column >= 16384");
  FLOE_RETURN_IF_ERROR(r.GetVarint32(&q.bins));
  if (q.bins < 1 || q.bins > mr::kMaxBins) return Status::Corruption("MAP_TASK: bins out of range");
  FLOE_RETURN_IF_ERROR(r.GetDouble(&q.lo));
  FLOE_RETURN_IF_ERROR(r.GetDouble(&q.hi));
  if (q.op == MapOp::kSummaryHistogram &&
      (!(q.lo <= q.hi) || !std::isfinite(q.lo) || !std::isfinite(q.hi))) {
    return Status::Corruption("MAP_TASK: a histogram's range must be finite and ordered");
  }
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&q.budget_us));
  if (q.op == MapOp::kQuantileRadix) {
    FLOE_RETURN_IF_ERROR(r.GetVarint32(&q.pass));
    if (q.pass >= 8) return Status::Corruption("MAP_TASK: a quantile pass past 7");
    uint64_t prefixes = 0;
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&prefixes));
    // A prefix takes a byte at least.
    if (prefixes == 0 || prefixes > mr::kMaxRadixPrefixes || prefixes > r.remaining()) {
      return Status::Corruption("MAP_TASK: prefix count does not match its bytes");
    }
    for (uint64_t i = 0; i < prefixes; i++) {
      FLOE_RETURN_IF_ERROR(r.GetVarint64(&q.prefixes.emplace_back()));
      if (i > 0 && q.prefixes[i] <= q.prefixes[i - 1]) {
        return Status::Corruption("MAP_TASK: prefixes not increasing");
      }
    }
  }
  if (q.op == MapOp::kGroupBy) {
    uint64_t keys = 0;
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&keys));
    // A key takes a byte at least; grown as parsed.
    if (keys == 0 || keys > kMaxMapGroupKeys || keys > r.remaining()) {
      return Status::Corruption("MAP_TASK: key count does not match its bytes");
    }
    for (uint64_t i = 0; i < keys; i++) {
      uint32_t c = 0;
      FLOE_RETURN_IF_ERROR(r.GetVarint32(&c));
      if (c >= kMaxFrameColumns) return Status::Corruption("MAP_TASK: column >= 16384");
      if (std::find(q.group_keys.begin(), q.group_keys.end(), c) != q.group_keys.end()) {
        return Status::Corruption("MAP_TASK: a key column given twice");
      }
      q.group_keys.push_back(c);
    }
    uint64_t aggs = 0;
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&aggs));
    // An aggregate takes two bytes at least.
    if (aggs == 0 || aggs > kMaxMapAggregates || aggs > r.remaining() / 2) {
      return Status::Corruption("MAP_TASK: aggregate count does not match its bytes");
    }
    for (uint64_t i = 0; i < aggs; i++) {
      uint8_t fn = 0;
      FLOE_RETURN_IF_ERROR(r.GetU8(&fn));
      if (fn > static_cast<uint8_t>(mr::AggFn::kDistinct)) {
        return Status::Corruption("MAP_TASK: unknown aggregate");
      }
      uint32_t c = 0;
      FLOE_RETURN_IF_ERROR(r.GetVarint32(&c));
      if (c >= kMaxFrameColumns) return Status::Corruption("MAP_TASK: column >= 16384");
      q.aggregates.push_back({.fn = static_cast<mr::AggFn>(fn), .col = c});
    }
  }
  if (IsDeriveOp(q.op)) {
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&q.out_id));
    FLOE_RETURN_IF_ERROR(r.GetFixed16(&q.out_header_slot));
    if (q.out_header_slot >= kChunkGroups) return Status::Corruption("MAP_TASK: slot >= 16384");
    uint64_t count = 0;
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&count));
    if (q.op == MapOp::kSelect) {
      // A column takes a byte at least; grown as parsed.
      if (count == 0 || count > kMaxFrameColumns || count > r.remaining()) {
        return Status::Corruption("MAP_TASK: column count does not match its bytes");
      }
      for (uint64_t i = 0; i < count; i++) {
        FLOE_RETURN_IF_ERROR(r.GetVarint32(&q.select.emplace_back()));
        if (q.select.back() >= kMaxFrameColumns) {
          return Status::Corruption("MAP_TASK: column >= 16384");
        }
      }
    } else {
      // A condition takes 11 bytes at least (column, op, number, an empty text's length).
      if (count == 0 || count > mr::kMaxFilterConditions || count > r.remaining() / 11) {
        return Status::Corruption("MAP_TASK: condition count does not match its bytes");
      }
      for (uint64_t i = 0; i < count; i++) {
        mr::Condition& c = q.conditions.emplace_back();
        uint32_t col = 0;
        FLOE_RETURN_IF_ERROR(r.GetVarint32(&col));
        if (col >= kMaxFrameColumns) return Status::Corruption("MAP_TASK: column >= 16384");
        c.col = col;
        uint8_t fop = 0;
        FLOE_RETURN_IF_ERROR(r.GetU8(&fop));
        if (fop > static_cast<uint8_t>(mr::FilterOp::kNotNA)) {
          return Status::Corruption("MAP_TASK: unknown filter operator");
        }
        c.op = static_cast<mr::FilterOp>(fop);
        FLOE_RETURN_IF_ERROR(r.GetDouble(&c.number));
        if (std::isnan(c.number)) return Status::Corruption("MAP_TASK: a NaN to compare with");
        std::string_view text;
        // The text is as long as the bytes present at most: copied once, never sized larger.
        FLOE_RETURN_IF_ERROR(r.GetLengthPrefixed(&text, r.remaining()));
        c.text = std::string(text);
      }
    }
  }
  uint64_t n = 0;
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&n));
  // A member id takes a byte at least.
  if (n == 0 || n > kMaxMapMembers || n > r.remaining()) {
    return Status::Corruption("MAP_TASK: member count does not match its bytes");
  }
  std::set<uint32_t> seen;
  for (uint64_t i = 0; i < n; i++) {
    uint32_t m = 0;
    FLOE_RETURN_IF_ERROR(r.GetVarint32(&m));
    if (!seen.insert(m).second) return Status::Corruption("MAP_TASK: a member given twice");
    q.members.push_back(m);
  }
  q.header = bytes.substr(bytes.size() - r.remaining());
  return q;
}

namespace {
// Bounds the sketch an answer may hold: mr::SummaryHllParams' 2^14 registers of 5 bits serialize
// to about 10 KiB.
constexpr uint64_t kMaxAnswerHllBytes = 64 * 1024;
}  // namespace

std::string EncodeMapTaskAnswer(MapOp op, const MapTaskAnswer& a) {
  std::string out;
  wire::Writer w(&out);
  w.PutVarint64(a.mapped.size());
  for (const MappedChunk& c : a.mapped) {
    w.PutVarint64(c.index);
    w.PutVarint64(c.rows);
  }
  if (op == MapOp::kSummaryMoments) {
    const mr::Moments& m = a.moments.m;
    w.PutVarint64(m.count);
    w.PutVarint64(m.na);
    w.PutVarint64(m.pos_inf);
    w.PutVarint64(m.neg_inf);
    for (double d : {m.min, m.max, m.mean, m.m2, a.moments.lo, a.moments.hi}) w.PutDouble(d);
    w.PutLengthPrefixed(a.moments.hll.Serialize());
  } else if (op == MapOp::kGroupBy) {
    const mr::GroupTable& t = a.groups;
    w.PutVarint64(t.groups());
    const size_t width = t.groups() == 0 ? 0 : t.moments.size() / t.groups();
    const size_t distinct = t.groups() == 0 ? 0 : t.sketches.size() / t.groups();
    for (size_t g = 0; g < t.groups(); g++) {
      for (double k : t.keys[g]) w.PutDouble(k);
      w.PutVarint64(t.rows[g]);
      for (size_t x = g * width; x < (g + 1) * width; x++) {
        const mr::Moments& m = t.moments[x];
        w.PutVarint64(m.count);
        w.PutVarint64(m.na);
        w.PutVarint64(m.pos_inf);
        w.PutVarint64(m.neg_inf);
        for (double d : {m.min, m.max, m.mean, m.m2, t.sums[x]}) w.PutDouble(d);
      }
      for (size_t d = g * distinct; d < (g + 1) * distinct; d++) {
        w.PutLengthPrefixed(t.sketches[d].Serialize());
      }
    }
  } else {
    if (IsDeriveOp(op)) {
      for (const FrameHeader::Chunk& c : a.made) {
        w.PutVarint64(c.rows);
        w.PutVarint64(c.compressed_bytes);
        w.PutVarint64(c.raw_bytes);
      }
    }
    for (uint64_t c : a.histogram) w.PutVarint64(c);
  }
  return out;
}

size_t MapTaskRequest::Counts(size_t source_columns) const {
  switch (op) {
    case MapOp::kQuantileRadix:
      return prefixes.size() * mr::kRadixCells;
    case MapOp::kSelect:
      return select.size();
    case MapOp::kFilter:
      return source_columns;
    default:
      return bins;
  }
}

namespace {

// Moments as an answer carries them (its infinities at most its values).
Status GetMoments(wire::Reader& r, mr::Moments* m) {
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&m->count));
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&m->na));
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&m->pos_inf));
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&m->neg_inf));
  if (m->pos_inf > m->count || m->neg_inf > m->count - m->pos_inf) {
    return Status::Corruption("MAP_TASK answer: more infinities than values");
  }
  for (double* d : {&m->min, &m->max, &m->mean, &m->m2}) FLOE_RETURN_IF_ERROR(r.GetDouble(d));
  return Status::OK();
}

Result<sketch::HyperLogLog> GetSketch(wire::Reader& r, const sketch::HllParams& params) {
  std::string_view hll;
  FLOE_RETURN_IF_ERROR(r.GetLengthPrefixed(&hll, kMaxAnswerHllBytes));
  Result<sketch::HyperLogLog> parsed = sketch::HyperLogLog::Parse(hll, kMaxAnswerHllBytes);
  if (!parsed.ok()) return Status::Corruption("MAP_TASK answer: " + parsed.status().ToString());
  if (!(parsed->params() == params)) {
    return Status::Corruption("MAP_TASK answer: a sketch of other parameters");
  }
  return parsed;
}

// kGroupBy's table: every count checked against the bytes left at a group's smallest encoding
// and against the request's group limit before anything is sized; grown as parsed.
Status GetGroupTable(wire::Reader& r, const GroupShape& shape, mr::GroupTable* t) {
  const size_t width = shape.aggregates.size();
  const size_t distinct = mr::DistinctCount(shape.aggregates);
  if (shape.keys == 0 || shape.keys > kMaxMapGroupKeys || width == 0 || width > kMaxMapAggregates) {
    return Status::Corruption("MAP_TASK answer: a group-by of no keys or aggregates");
  }
  uint64_t n = 0;
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&n));
  // A group: 8 bytes a key, a byte of rows, 44 an aggregate (4 varints, 5 doubles), and 2 a
  // sketch (its length and a byte).
  const uint64_t smallest = 8 * shape.keys + 1 + 44 * width + 2 * distinct;
  const uint64_t most = mr::MaxGroups(shape.keys, shape.aggregates);
  if (n > most) {
    return Status::Corruption("MAP_TASK answer: more than " + std::to_string(most) + " groups");
  }
  if (n > r.remaining() / smallest) {
    return Status::Corruption("MAP_TASK answer: group count does not match its bytes");
  }
  for (uint64_t g = 0; g < n; g++) {
    std::vector<double>& key = t->keys.emplace_back(shape.keys);
    for (double& v : key) {
      FLOE_RETURN_IF_ERROR(r.GetDouble(&v));
      if (std::isnan(v)) v = frame::kNA;
      if (v == 0) v = 0;  // -0 is 0
    }
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&t->rows.emplace_back()));
    for (size_t x = 0; x < width; x++) {
      FLOE_RETURN_IF_ERROR(GetMoments(r, &t->moments.emplace_back()));
      FLOE_RETURN_IF_ERROR(r.GetDouble(&t->sums.emplace_back()));
    }
    for (size_t d = 0; d < distinct; d++) {
      FLOE_ASSIGN_OR_RETURN(sketch::HyperLogLog h, GetSketch(r, sketch::HllParams()));
      t->sketches.push_back(std::move(h));
    }
  }
  return Status::OK();
}

}  // namespace

Result<MapTaskAnswer> DecodeMapTaskAnswer(MapOp op, size_t counts, std::string_view bytes,
                                          const GroupShape& group) {
  FLOE_RETURN_IF_ERROR(CheckSize(bytes));
  wire::Reader r(bytes);
  MapTaskAnswer a;
  uint64_t n = 0;
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&n));
  // A chunk mapped takes two bytes at least; grown as parsed.
  if (n > kMaxFrameChunks || n > r.remaining() / 2) {
    return Status::Corruption("MAP_TASK answer: chunk count does not match its bytes");
  }
  for (uint64_t i = 0; i < n; i++) {
    MappedChunk& c = a.mapped.emplace_back();
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&c.index));
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&c.rows));
  }
  if (op == MapOp::kSummaryMoments) {
    mr::Moments& m = a.moments.m;
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&m.count));
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&m.na));
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&m.pos_inf));
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&m.neg_inf));
    if (m.pos_inf > m.count || m.neg_inf > m.count - m.pos_inf) {
      return Status::Corruption("MAP_TASK answer: more infinities than values");
    }
    for (double* d : {&m.min, &m.max, &m.mean, &m.m2, &a.moments.lo, &a.moments.hi}) {
      FLOE_RETURN_IF_ERROR(r.GetDouble(d));
    }
    std::string_view hll;
    FLOE_RETURN_IF_ERROR(r.GetLengthPrefixed(&hll, kMaxAnswerHllBytes));
    Result<sketch::HyperLogLog> parsed = sketch::HyperLogLog::Parse(hll, kMaxAnswerHllBytes);
    if (!parsed.ok()) return Status::Corruption("MAP_TASK answer: " + parsed.status().ToString());
    if (!(parsed->params() == mr::SummaryHllParams())) {
      return Status::Corruption("MAP_TASK answer: a sketch of other parameters");
    }
    a.moments.hll = *std::move(parsed);
  } else if (op == MapOp::kGroupBy) {
    FLOE_RETURN_IF_ERROR(GetGroupTable(r, group, &a.groups));
  } else {
    if (IsDeriveOp(op)) {
      // Three varints a chunk mapped (checked against the bytes left); grown as parsed.
      if (n > r.remaining() / 3) {
        return Status::Corruption("MAP_TASK answer: output chunks do not match their bytes");
      }
      for (uint64_t i = 0; i < n; i++) {
        FrameHeader::Chunk& c = a.made.emplace_back();
        uint64_t rows = 0;
        FLOE_RETURN_IF_ERROR(r.GetVarint64(&rows));
        if (rows > a.mapped[i].rows) {
          return Status::Corruption("MAP_TASK answer: an output chunk longer than its source");
        }
        c.rows = static_cast<uint32_t>(rows);
        FLOE_RETURN_IF_ERROR(r.GetVarint64(&c.compressed_bytes));
        FLOE_RETURN_IF_ERROR(r.GetVarint64(&c.raw_bytes));
      }
    }
    const size_t most = IsDeriveOp(op) ? kMaxFrameColumns : mr::kMaxRadixPrefixes * mr::kRadixCells;
    if (counts < 1 || counts > most || counts > r.remaining()) {
      return Status::Corruption("MAP_TASK answer: bin count does not match its bytes");
    }
    a.histogram.reserve(counts);  // at most 51,200, a byte each at least
    for (size_t i = 0; i < counts; i++) {
      FLOE_RETURN_IF_ERROR(r.GetVarint64(&a.histogram.emplace_back()));
    }
  }
  FLOE_RETURN_IF_ERROR(Leftover(r));
  return a;
}

}  // namespace floe::server::internal
