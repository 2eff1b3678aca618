#include <algorithm>
#include <cmath>
#include <limits>

#include "sketch/sketch.h"
#include "wire/wire.h"

namespace floe::sketch {

namespace {
// Weighted merges need headroom beyond 64 bits: counters times weights, summed.
__extension__ typedef __int128 Wide;

constexpr uint64_t kCountMinMagic = 0x434d5331;  // "CMS1"
constexpr uint64_t kRangeMagic = 0x434d5231;     // "CMR1"

// Two independent 64-bit hashes per key; row i uses h1 + i * h2 (double hashing).
std::pair<uint64_t, uint64_t> KeyHashes(uint64_t key) {
  const uint64_t h1 = Mix64(key);
  return {h1, Mix64(h1 ^ 0x9e3779b97f4a7c15ULL) | 1};
}
}  // namespace

Result<CountMin> CountMin::Create(uint32_t width, uint32_t depth) {
  if (width == 0) return Status::InvalidArgument("invalid width");
  if (depth == 0) return Status::InvalidArgument("invalid depth");
  if (static_cast<uint64_t>(width) * depth > kMaxCells) {
    return Status::ResourceExhausted("width * depth exceeds " + std::to_string(kMaxCells));
  }
  CountMin c;
  c.width_ = width;
  c.depth_ = depth;
  c.counters_ = ZeroedVector<uint32_t>(static_cast<size_t>(width) * depth);
  return c;
}

Result<CountMin> CountMin::CreateForError(double error, double probability) {
  if (!(error > 0 && error < 1)) return Status::InvalidArgument("invalid overestimation value");
  if (!(probability > 0 && probability < 1)) return Status::InvalidArgument("invalid prob value");
  const double width = std::ceil(2.0 / error);
  // RedisBloom computes this in float: ceil(log10f(prob) / log10f(0.5)). A probability that
  // rounds to 1 as a float gives 0; a sketch needs at least one row.
  const double depth =
      std::max(1.0, std::ceil(static_cast<double>(std::log10(static_cast<float>(probability)) /
                                                  std::log10(0.5f))));
  if (width > std::numeric_limits<uint32_t>::max() || depth < 1) {
    return Status::InvalidArgument("invalid init arguments");
  }
  return Create(static_cast<uint32_t>(width), static_cast<uint32_t>(depth));
}

size_t CountMin::Cell(uint32_t row, uint64_t h1, uint64_t h2) const {
  return static_cast<size_t>(row) * width_ + static_cast<size_t>((h1 + row * h2) % width_);
}

bool CountMin::WouldOverflow(uint64_t key, uint32_t incr) const {
  // The total is replied as a RESP integer: it stays within int64.
  if (incr > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) - total_) return true;
  const auto [h1, h2] = KeyHashes(key);
  for (uint32_t r = 0; r < depth_; r++) {
    if (counters_[Cell(r, h1, h2)] > std::numeric_limits<uint32_t>::max() - incr) return true;
  }
  return false;
}

Result<uint32_t> CountMin::AddKey(uint64_t key, uint32_t incr) {
  if (WouldOverflow(key, incr)) return Status::OutOfRange("INCRBY overflow");
  const auto [h1, h2] = KeyHashes(key);
  uint32_t estimate = std::numeric_limits<uint32_t>::max();
  for (uint32_t r = 0; r < depth_; r++) {
    uint32_t& c = counters_[Cell(r, h1, h2)];
    c += incr;
    estimate = std::min(estimate, c);
  }
  total_ += incr;
  return estimate;
}

uint32_t CountMin::QueryKey(uint64_t key) const {
  const auto [h1, h2] = KeyHashes(key);
  uint32_t estimate = std::numeric_limits<uint32_t>::max();
  for (uint32_t r = 0; r < depth_; r++) estimate = std::min(estimate, counters_[Cell(r, h1, h2)]);
  return estimate;
}

Result<uint32_t> CountMin::Add(std::string_view item, uint32_t incr) {
  return AddKey(HashBytes(item), incr);
}

uint32_t CountMin::Query(std::string_view item) const { return QueryKey(HashBytes(item)); }

Status CountMin::MergeWeighted(const std::vector<std::pair<const CountMin*, int64_t>>& sources) {
  ZeroedVector<uint32_t> out(counters_.size());
  Wide total = 0;
  for (const auto& [src, weight] : sources) {
    if (src->width_ != width_ || src->depth_ != depth_) {
      return Status::InvalidArgument("width/depth is not equal");
    }
    total += static_cast<Wide>(src->total_) * weight;
  }
  for (size_t i = 0; i < out.size(); i++) {
    Wide v = 0;
    for (const auto& [src, weight] : sources) v += static_cast<Wide>(src->counters_[i]) * weight;
    if (v < 0 || v > std::numeric_limits<uint32_t>::max()) {
      return Status::OutOfRange("MERGE overflow");
    }
    out[i] = static_cast<uint32_t>(v);
  }
  counters_ = std::move(out);
  total_ = total < 0 ? 0 : static_cast<uint64_t>(total);
  return Status::OK();
}

std::string CountMin::Serialize() const {
  std::string out;
  wire::Writer w(&out);
  w.PutVarint64(kCountMinMagic);
  w.PutVarint64(width_);
  w.PutVarint64(depth_);
  w.PutVarint64(total_);
  for (uint32_t c : counters_) w.PutFixed32(c);
  return out;
}

Result<CountMin> CountMin::Parse(std::string_view bytes) {
  wire::Reader r(bytes);
  uint64_t magic = 0, total = 0;
  uint32_t width = 0, depth = 0;
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&magic));
  if (magic != kCountMinMagic) return Status::Corruption("not a Count-Min sketch");
  FLOE_RETURN_IF_ERROR(r.GetVarint32(&width));
  FLOE_RETURN_IF_ERROR(r.GetVarint32(&depth));
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&total));
  if (width == 0 || depth == 0 || static_cast<uint64_t>(width) * depth > kMaxCells ||
      static_cast<uint64_t>(width) * depth * 4 != r.remaining()) {
    return Status::Corruption("Count-Min dimensions do not match its size");
  }
  FLOE_ASSIGN_OR_RETURN(CountMin c, Create(width, depth));
  c.total_ = total;
  for (uint32_t& v : c.counters_) FLOE_RETURN_IF_ERROR(r.GetFixed32(&v));
  return c;
}

// ---------------------------------------------------------------------------------------------
Result<RangeCountMin> RangeCountMin::Create(uint32_t width, uint32_t depth, int bits) {
  if (bits < 1 || bits > 32) return Status::InvalidArgument("bits must be between 1 and 32");
  if (static_cast<uint64_t>(width) * depth * static_cast<uint64_t>(bits + 1) >
      CountMin::kMaxCells) {
    return Status::ResourceExhausted("width * depth * (bits + 1) exceeds " +
                                     std::to_string(CountMin::kMaxCells));
  }
  RangeCountMin r;
  r.bits_ = bits;
  for (int l = 0; l <= bits; l++) {
    FLOE_ASSIGN_OR_RETURN(CountMin c, CountMin::Create(width, depth));
    r.levels_.push_back(std::move(c));
  }
  return r;
}

Status RangeCountMin::Add(uint64_t value, uint32_t incr) {
  if (value >> bits_ != 0) {
    return Status::InvalidArgument("value " + std::to_string(value) + " is outside [0, 2^" +
                                   std::to_string(bits_) + ")");
  }
  // Level l counts the prefix value >> l; the level number is mixed in so levels differ. All
  // levels or none: a level that would overflow leaves every level as it was.
  auto key = [value](int l) { return (value >> l) * 64 + static_cast<uint64_t>(l); };
  for (int l = 0; l <= bits_; l++) {
    if (levels_[static_cast<size_t>(l)].WouldOverflow(key(l), incr)) {
      return Status::OutOfRange("INCRBY overflow");
    }
  }
  for (int l = 0; l <= bits_; l++) {
    FLOE_RETURN_IF_ERROR(levels_[static_cast<size_t>(l)].AddKey(key(l), incr).status());
  }
  return Status::OK();
}

uint64_t RangeCountMin::RangeCount(uint64_t lo, uint64_t hi) const {
  const uint64_t max = (uint64_t{1} << bits_) - 1;
  if (hi > max) hi = max;
  if (lo > hi) return 0;
  // Cover [lo, hi] with maximal aligned blocks, the way a segment tree does.
  uint64_t sum = 0;
  uint64_t x = lo;
  while (x <= hi) {
    int l = 0;
    while (l < bits_ && (x & ((uint64_t{1} << (l + 1)) - 1)) == 0 &&
           x + (uint64_t{1} << (l + 1)) - 1 <= hi) {
      l++;
    }
    sum += levels_[static_cast<size_t>(l)].QueryKey((x >> l) * 64 + static_cast<uint64_t>(l));
    const uint64_t next = x + (uint64_t{1} << l);
    if (next == 0 || next > hi) break;  // wrapped past the domain or done
    x = next;
  }
  return sum;
}

uint64_t RangeCountMin::Quantile(double q) const {
  const uint64_t max = (uint64_t{1} << bits_) - 1;
  if (q <= 0) q = 0;
  if (q > 1) q = 1;
  const double target = q * static_cast<double>(total());
  uint64_t lo = 0, hi = max;
  while (lo < hi) {
    const uint64_t mid = lo + (hi - lo) / 2;
    if (static_cast<double>(RangeCount(0, mid)) >= target) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  return lo;
}

std::string RangeCountMin::Serialize() const {
  std::string out;
  wire::Writer w(&out);
  w.PutVarint64(kRangeMagic);
  w.PutVarint64(static_cast<uint64_t>(bits_));
  for (const CountMin& c : levels_) w.PutLengthPrefixed(c.Serialize());
  return out;
}

Result<RangeCountMin> RangeCountMin::Parse(std::string_view bytes) {
  wire::Reader r(bytes);
  uint64_t magic = 0, bits = 0;
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&magic));
  if (magic != kRangeMagic) return Status::Corruption("not a range Count-Min sketch");
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&bits));
  if (bits < 1 || bits > 32) return Status::Corruption("bad bits");
  RangeCountMin out;
  out.bits_ = static_cast<int>(bits);
  for (uint64_t l = 0; l <= bits; l++) {
    std::string_view level;
    FLOE_RETURN_IF_ERROR(r.GetLengthPrefixed(&level));
    FLOE_ASSIGN_OR_RETURN(CountMin c, CountMin::Parse(level));
    if (!out.levels_.empty() &&
        (c.width() != out.levels_[0].width() || c.depth() != out.levels_[0].depth())) {
      return Status::Corruption("levels differ in size");
    }
    out.levels_.push_back(std::move(c));
  }
  if (!r.empty()) return Status::Corruption("trailing bytes after range Count-Min");
  return out;
}

}  // namespace floe::sketch
