#include <cmath>

#include "sketch/sketch.h"
#include "wire/wire.h"

namespace floe::sketch {

namespace {
constexpr uint64_t kBloomMagic = 0x424c4d31;  // "BLM1"
constexpr double kTightening = 0.5;           // each new sub-filter halves the error rate
constexpr size_t kMaxLinks = 64;              // far beyond what kMaxBytes lets a chain reach

// Two 64-bit hashes of an item; probe i sets bit (h1 + i * h2) mod bits (double hashing).
std::pair<uint64_t, uint64_t> ItemHashes(std::string_view item) {
  const uint64_t h1 = HashBytes(item);
  return {h1, Mix64(h1 ^ 0x6a09e667f3bcc909ULL) | 1};
}
}  // namespace

Result<BloomFilter::Link> BloomFilter::MakeLink(uint64_t capacity, double error, bool allocate) {
  // RedisBloom's sizing: bits per entry = -ln(error) / ln(2)^2, the bit count rounded up to a
  // whole number of 64-bit words, ceil(ln(2) * bits per entry) hash probes.
  const double ln2 = std::log(2.0);
  const double bpe = -std::log(error) / (ln2 * ln2);
  const double raw_bits = std::floor(static_cast<double>(capacity) * bpe);
  if (!(raw_bits < static_cast<double>(kMaxBytes) * 8)) {
    return Status::ResourceExhausted("a Bloom filter may not exceed " +
                                     std::to_string(kMaxBytes >> 20) + " MiB");
  }
  Link l;
  l.capacity = capacity;
  l.error = error;
  l.bits = (static_cast<uint64_t>(raw_bits) + 63) / 64 * 64;
  if (l.bits == 0) l.bits = 64;
  l.hashes = static_cast<uint32_t>(std::ceil(ln2 * bpe));
  if (l.hashes == 0) l.hashes = 1;
  if (allocate) l.words = ZeroedVector<uint64_t>(l.bits / 64);
  return l;
}

Result<BloomFilter> BloomFilter::Create(double error_rate, uint64_t capacity, uint32_t expansion) {
  if (!(error_rate > 0 && error_rate < 1)) {
    return Status::InvalidArgument("error rate must be in the range (0, 1)");
  }
  if (capacity < 1 || capacity > kMaxCapacity) {
    return Status::InvalidArgument("capacity must be in the range [1, 1073741824]");
  }
  if (expansion > kMaxExpansion) {
    return Status::InvalidArgument("expansion must be in the range [0, 32768]");
  }
  BloomFilter f;
  f.error_rate_ = std::min(error_rate, kMaxErrorRate);
  f.initial_capacity_ = capacity;
  f.expansion_ = expansion;
  FLOE_ASSIGN_OR_RETURN(Link first,
                        MakeLink(capacity, f.error_rate_ * (expansion == 0 ? 1.0 : kTightening)));
  f.links_.push_back(std::move(first));
  return f;
}

uint64_t BloomFilter::FirstFilterBytes(double error_rate, uint64_t capacity, uint32_t expansion) {
  if (!(error_rate > 0 && error_rate < 1) || capacity < 1 || capacity > kMaxCapacity) return 0;
  const double error = std::min(error_rate, kMaxErrorRate) * (expansion == 0 ? 1.0 : kTightening);
  Result<Link> l = MakeLink(capacity, error, /*allocate=*/false);
  return l.ok() ? l->bits / 8 : 0;
}

uint64_t BloomFilter::GrowthBytes() const {
  if (expansion_ == 0 || links_.empty() || links_.size() >= kMaxLinks) return 0;
  const Link& last = links_.back();
  Result<Link> l = MakeLink(last.capacity * expansion_, last.error * kTightening, false);
  return l.ok() ? l->bits / 8 : 0;
}

bool BloomFilter::Test(const Link& l, uint64_t h1, uint64_t h2) {
  uint64_t x = h1;
  for (uint32_t i = 0; i < l.hashes; i++, x += h2) {
    const uint64_t bit = x % l.bits;
    if ((l.words[bit / 64] & (uint64_t{1} << (bit % 64))) == 0) return false;
  }
  return true;
}

bool BloomFilter::Set(Link& l, uint64_t h1, uint64_t h2) {
  bool changed = false;
  uint64_t x = h1;
  for (uint32_t i = 0; i < l.hashes; i++, x += h2) {
    const uint64_t bit = x % l.bits;
    const uint64_t mask = uint64_t{1} << (bit % 64);
    changed |= (l.words[bit / 64] & mask) == 0;
    l.words[bit / 64] |= mask;
  }
  return changed;
}

bool BloomFilter::Contains(std::string_view item) const {
  const auto [h1, h2] = ItemHashes(item);
  for (auto it = links_.rbegin(); it != links_.rend(); ++it) {
    if (Test(*it, h1, h2)) return true;
  }
  return false;
}

bool BloomFilter::AddWouldGrow(std::string_view item) const {
  return links_.back().items >= links_.back().capacity && !Contains(item);
}

Status BloomFilter::Grow() {
  if (expansion_ == 0) return Status::FailedPrecondition("non scaling filter is full");
  if (links_.size() >= kMaxLinks) {
    return Status::ResourceExhausted("Bloom filter has too many sub-filters");
  }
  const Link& last = links_.back();
  // Sized first and allocated only once it is known to fit.
  FLOE_ASSIGN_OR_RETURN(Link next, MakeLink(last.capacity * expansion_, last.error * kTightening,
                                            /*allocate=*/false));
  if (bytes() + next.bits / 8 > kMaxBytes) {
    return Status::ResourceExhausted("a Bloom filter may not exceed " +
                                     std::to_string(kMaxBytes >> 20) + " MiB");
  }
  next.words = ZeroedVector<uint64_t>(next.bits / 64);
  links_.push_back(std::move(next));
  return Status::OK();
}

Result<bool> BloomFilter::Add(std::string_view item) {
  const auto [h1, h2] = ItemHashes(item);
  for (auto it = links_.rbegin(); it != links_.rend(); ++it) {
    if (Test(*it, h1, h2)) return false;
  }
  if (links_.back().items >= links_.back().capacity) FLOE_RETURN_IF_ERROR(Grow());
  Link& cur = links_.back();
  if (!Set(cur, h1, h2)) return false;
  cur.items++;
  return true;
}

Status BloomFilter::Merge(const BloomFilter& other) {
  if (other.error_rate_ != error_rate_ || other.initial_capacity_ != initial_capacity_ ||
      other.expansion_ != expansion_) {
    return Status::InvalidArgument(
        "Bloom filters merge only when error rate, capacity and expansion are equal");
  }
  for (size_t i = 0; i < other.links_.size(); i++) {
    if (i == links_.size()) {
      links_.push_back(other.links_[i]);
      continue;
    }
    Link& mine = links_[i];
    const Link& theirs = other.links_[i];
    FLOE_CHECK(mine.bits == theirs.bits && mine.hashes == theirs.hashes);
    for (size_t w = 0; w < mine.words.size(); w++) mine.words[w] |= theirs.words[w];
    mine.items += theirs.items;
  }
  return Status::OK();
}

uint64_t BloomFilter::capacity() const {
  uint64_t sum = 0;
  for (const Link& l : links_) sum += l.capacity;
  return sum;
}

uint64_t BloomFilter::items() const {
  uint64_t sum = 0;
  for (const Link& l : links_) sum += l.items;
  return sum;
}

size_t BloomFilter::bytes() const {
  size_t sum = sizeof(*this);
  for (const Link& l : links_) sum += sizeof(Link) + l.bits / 8;
  return sum;
}

// Layout (docs/wire.md): varint magic | fixed64 error rate | varint capacity | varint expansion
// | varint links | per link: varint items | words of fixed64. A link's capacity, error rate,
// bit and hash counts follow from the header, so they are not stored and cannot disagree.
std::string BloomFilter::Serialize() const {
  std::string out;
  size_t total = 32;
  for (const Link& l : links_) total += 10 + l.bits / 8;
  out.reserve(total);
  wire::Writer w(&out);
  w.PutVarint64(kBloomMagic);
  w.PutDouble(error_rate_);
  w.PutVarint64(initial_capacity_);
  w.PutVarint64(expansion_);
  w.PutVarint64(links_.size());
  for (const Link& l : links_) {
    w.PutVarint64(l.items);
    for (uint64_t word : l.words) w.PutFixed64(word);
  }
  return out;
}

Result<BloomFilter> BloomFilter::Parse(std::string_view bytes) {
  wire::Reader r(bytes);
  uint64_t magic = 0, capacity = 0, expansion = 0, links = 0;
  double error = 0;
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&magic));
  if (magic != kBloomMagic) return Status::Corruption("not a Bloom filter");
  FLOE_RETURN_IF_ERROR(r.GetDouble(&error));
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&capacity));
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&expansion));
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&links));
  if (!(error > 0 && error <= kMaxErrorRate) || capacity < 1 || capacity > kMaxCapacity ||
      expansion > kMaxExpansion || links < 1 || links > kMaxLinks ||
      (expansion == 0 && links != 1)) {
    return Status::Corruption("bad Bloom filter header");
  }
  BloomFilter f;
  f.error_rate_ = error;
  f.initial_capacity_ = capacity;
  f.expansion_ = static_cast<uint32_t>(expansion);
  uint64_t link_capacity = capacity;
  double link_error = error * (expansion == 0 ? 1.0 : kTightening);
  for (uint64_t i = 0; i < links; i++) {
    if (i > 0) {
      if (link_capacity > kMaxCapacity * kMaxExpansion) {
        return Status::Corruption("Bloom filter truncated");
      }
      link_capacity *= expansion;
      link_error *= kTightening;
    }
    // Size the sub-filter and allocate it only if its bits are really there: a hostile header
    // allocates nothing.
    Result<Link> sized = MakeLink(link_capacity, link_error, /*allocate=*/false);
    if (!sized.ok()) return Status::Corruption("Bloom filter too large");
    Link l = std::move(sized).value();
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&l.items));
    if (l.bits / 8 > r.remaining()) return Status::Corruption("Bloom filter truncated");
    l.words.resize(l.bits / 64);
    for (uint64_t& word : l.words) FLOE_RETURN_IF_ERROR(r.GetFixed64(&word));
    f.links_.push_back(std::move(l));
  }
  if (!r.empty()) return Status::Corruption("trailing bytes after Bloom filter");
  if (f.bytes() > kMaxBytes + 4096) return Status::Corruption("Bloom filter too large");
  return f;
}

}  // namespace floe::sketch
