#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "sketch/sketch.h"

namespace floe::sketch {

namespace {

constexpr int kSchemaVersion = 1;

uint64_t MaxValue(int regwidth) { return (uint64_t{1} << regwidth) - 1; }

// Big-endian bit packing, most significant bit first, as the storage specification lays out
// SPARSE and FULL data. Words (at most 39 bits) gather in a 64-bit accumulator and leave it a
// byte at a time; Finish() writes the last partial byte, zero-padded at the bottom.
class BitWriter {
 public:
  explicit BitWriter(std::string* out) : out_(out) {}
  void Put(uint64_t value, int bits) {
    acc_ = (acc_ << bits) | value;
    pending_ += bits;
    while (pending_ >= 8) {
      pending_ -= 8;
      out_->push_back(static_cast<char>(acc_ >> pending_));
    }
    acc_ &= (uint64_t{1} << pending_) - 1;
  }
  void Finish() {
    if (pending_ > 0) out_->push_back(static_cast<char>(acc_ << (8 - pending_)));
    pending_ = 0;
    acc_ = 0;
  }

 private:
  std::string* out_;
  uint64_t acc_ = 0;
  int pending_ = 0;  // bits in acc_ not yet written, always < 8 between calls
};

class BitReader {
 public:
  explicit BitReader(std::string_view in) : in_(in) {}
  // REQUIRES: the caller has checked that `bits` more bits exist.
  uint64_t Get(int bits) {
    while (have_ < bits) {
      acc_ = (acc_ << 8) | static_cast<uint8_t>(in_[next_++]);
      have_ += 8;
    }
    have_ -= bits;
    const uint64_t v = (acc_ >> have_) & ((uint64_t{1} << bits) - 1);
    acc_ &= (uint64_t{1} << have_) - 1;
    return v;
  }

 private:
  std::string_view in_;
  size_t next_ = 0;
  uint64_t acc_ = 0;
  int have_ = 0;
};

}  // namespace

Status HllParams::Validate() const {
  if (log2m < 4 || log2m > 31) return Status::InvalidArgument("log2m must be between 4 and 31");
  if (regwidth < 1 || regwidth > 8) {
    return Status::InvalidArgument("regwidth must be between 1 and 8");
  }
  if (expthresh < -1 || expthresh > 18) {
    return Status::InvalidArgument("expthresh must be -1, 0 or between 1 and 18");
  }
  return Status::OK();
}

Result<HyperLogLog> HyperLogLog::Create(const HllParams& params) {
  FLOE_RETURN_IF_ERROR(params.Validate());
  return HyperLogLog(params);
}

uint64_t HyperLogLog::HashInt64(int64_t v) {
  uint8_t le[8];
  for (int i = 0; i < 8; i++) le[i] = static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * i));
  return Murmur3x64_128(le, sizeof(le), 0).h1;
}

uint64_t HyperLogLog::HashBytes(std::string_view bytes) {
  return Murmur3x64_128(bytes.data(), bytes.size(), 0).h1;
}

// PostgreSQL's automatic threshold: as many 8-byte hashes as fit in the FULL body, at most
// 16383; otherwise 2^(expthresh-1).
size_t HyperLogLog::ExplicitThreshold() const {
  if (params_.expthresh == 0) return 0;
  if (params_.expthresh > 0) return size_t{1} << (params_.expthresh - 1);
  const uint64_t m = uint64_t{1} << params_.log2m;
  const uint64_t full_bytes = (m * static_cast<uint64_t>(params_.regwidth) + 7) / 8;
  return static_cast<size_t>(std::min<uint64_t>(full_bytes / 8, 16383));
}

bool HyperLogLog::SetRegisterFromHash(uint64_t hash) {
  const uint64_t index = hash & ((uint64_t{1} << params_.log2m) - 1);
  const uint64_t w = hash >> params_.log2m;
  if (w == 0) return false;
  const auto value = static_cast<uint8_t>(std::min<uint64_t>(
      static_cast<uint64_t>(std::countr_zero(w)) + 1, MaxValue(params_.regwidth)));
  if (registers_[index] >= value) return false;
  registers_[index] = value;
  return true;
}

void HyperLogLog::PromoteToRegisters() {
  registers_ = ZeroedVector<uint8_t>(size_t{1} << params_.log2m);
  state_ = State::kRegisters;
  for (int64_t h : explicit_) SetRegisterFromHash(static_cast<uint64_t>(h));
  explicit_.clear();
  explicit_.shrink_to_fit();
}

bool HyperLogLog::AddHash(uint64_t hash) {
  if (state_ == State::kRegisters) return SetRegisterFromHash(hash);
  const size_t threshold = ExplicitThreshold();
  if (threshold == 0) {
    PromoteToRegisters();
    SetRegisterFromHash(hash);
    return true;  // EMPTY became registers: the bytes changed even if no register did
  }
  const auto signed_hash = static_cast<int64_t>(hash);
  auto it = std::lower_bound(explicit_.begin(), explicit_.end(), signed_hash);
  if (it != explicit_.end() && *it == signed_hash) return false;
  explicit_.insert(it, signed_hash);
  state_ = State::kExplicit;
  if (explicit_.size() > threshold) PromoteToRegisters();
  return true;
}

size_t HyperLogLog::filled() const {
  if (state_ != State::kRegisters) return explicit_.size();
  return static_cast<size_t>(
      std::count_if(registers_.begin(), registers_.end(), [](uint8_t r) { return r != 0; }));
}

double HyperLogLog::Cardinality(bool raw_when_saturated) const {
  if (state_ == State::kEmpty) return 0;
  if (state_ == State::kExplicit) return static_cast<double>(explicit_.size());
  const double m = std::ldexp(1.0, params_.log2m);
  double alpha_mm;
  switch (params_.log2m) {
    case 4:
      alpha_mm = 0.673 * m * m;
      break;
    case 5:
      alpha_mm = 0.697 * m * m;
      break;
    case 6:
      alpha_mm = 0.709 * m * m;
      break;
    default:
      alpha_mm = (0.7213 / (1.0 + 1.079 / m)) * m * m;
  }
  double sum = 0;
  size_t zeros = 0;
  for (uint8_t r : registers_) {
    sum += std::ldexp(1.0, -static_cast<int>(r));  // 2^-r, for any register a decoder accepts
    if (r == 0) zeros++;
  }
  const double estimate = alpha_mm / sum;
  const double large =
      std::ldexp(1.0, static_cast<int>(MaxValue(params_.regwidth)) - 1 + params_.log2m);
  if (zeros != 0 && estimate < 5.0 * m / 2.0) {
    return m * std::log(m / static_cast<double>(zeros));
  }
  if (estimate <= large / 30.0) return estimate;
  // The large-range correction is defined below `large` (PostgreSQL's gives NaN above).
  if (estimate >= large && raw_when_saturated) return estimate;
  return -large * std::log(1.0 - estimate / large);
}

Status HyperLogLog::Merge(const HyperLogLog& other) {
  if (other.params_.log2m != params_.log2m) {
    return Status::InvalidArgument("register count does not match: source uses " +
                                   std::to_string(uint64_t{1} << other.params_.log2m) +
                                   " and dest uses " +
                                   std::to_string(uint64_t{1} << params_.log2m));
  }
  if (other.params_.regwidth != params_.regwidth) {
    return Status::InvalidArgument("register width does not match: source uses " +
                                   std::to_string(other.params_.regwidth) + " and dest uses " +
                                   std::to_string(params_.regwidth));
  }
  if (other.state_ == State::kExplicit) {
    for (int64_t h : other.explicit_) AddHash(static_cast<uint64_t>(h));
  } else if (other.state_ == State::kRegisters) {
    if (state_ != State::kRegisters) PromoteToRegisters();
    for (size_t i = 0; i < registers_.size(); i++) {
      registers_[i] = std::max(registers_[i], other.registers_[i]);
    }
  }
  return Status::OK();
}

Result<HyperLogLog> HyperLogLog::Fold(int log2m, int regwidth) const {
  if (log2m > params_.log2m) {
    return Status::InvalidArgument("cannot fold to more registers (" + std::to_string(log2m) +
                                   " > " + std::to_string(params_.log2m) + ")");
  }
  if (regwidth == 0) regwidth = params_.regwidth;
  if (regwidth > params_.regwidth) {
    return Status::InvalidArgument("cannot fold to wider registers");
  }
  HllParams p = params_;
  p.log2m = log2m;
  p.regwidth = regwidth;
  FLOE_ASSIGN_OR_RETURN(HyperLogLog out, Create(p));
  if (state_ == State::kExplicit) {
    for (int64_t h : explicit_) out.AddHash(static_cast<uint64_t>(h));
    return out;
  }
  if (state_ == State::kEmpty) return out;
  out.registers_ = ZeroedVector<uint8_t>(size_t{1} << log2m);
  out.state_ = State::kRegisters;
  const int dropped = params_.log2m - log2m;
  const uint64_t low_mask = (uint64_t{1} << log2m) - 1;
  const uint64_t cap = MaxValue(regwidth);
  for (size_t j = 0; j < registers_.size(); j++) {
    const uint8_t v = registers_[j];
    if (v == 0) continue;
    // The dropped index bits become the lowest bits of the new value word.
    const uint64_t hi = j >> log2m;
    const uint64_t nv = hi != 0 ? static_cast<uint64_t>(std::countr_zero(hi)) + 1
                                : std::min<uint64_t>(v + static_cast<uint64_t>(dropped), cap);
    uint8_t& r = out.registers_[j & low_mask];
    r = std::max(r, static_cast<uint8_t>(std::min(nv, cap)));
  }
  return out;
}

HyperLogLog::Representation HyperLogLog::representation() const {
  switch (state_) {
    case State::kEmpty:
      return Representation::kEmpty;
    case State::kExplicit:
      return Representation::kExplicit;
    case State::kRegisters:
      break;
  }
  const uint64_t m = uint64_t{1} << params_.log2m;
  const uint64_t word = static_cast<uint64_t>(params_.log2m + params_.regwidth);
  const bool sparse =
      params_.sparseon && filled() * word < m * static_cast<uint64_t>(params_.regwidth);
  return sparse ? Representation::kSparse : Representation::kFull;
}

std::string HyperLogLog::Serialize() const {
  const Representation rep = representation();
  std::string out;
  out.push_back(static_cast<char>((kSchemaVersion << 4) | static_cast<int>(rep)));
  out.push_back(static_cast<char>(((params_.regwidth - 1) << 5) | params_.log2m));
  const int cutoff = params_.expthresh == -1 ? 63 : params_.expthresh;
  out.push_back(static_cast<char>((params_.sparseon ? 0x40 : 0) | cutoff));
  switch (rep) {
    case Representation::kEmpty:
      break;
    case Representation::kExplicit:
      for (int64_t h : explicit_) {
        for (int b = 7; b >= 0; b--)
          out.push_back(static_cast<char>(static_cast<uint64_t>(h) >> (8 * b)));
      }
      break;
    case Representation::kSparse: {
      BitWriter w(&out);
      for (size_t i = 0; i < registers_.size(); i++) {
        if (registers_[i] != 0) {
          w.Put((static_cast<uint64_t>(i) << params_.regwidth) | registers_[i],
                params_.log2m + params_.regwidth);
        }
      }
      w.Finish();
      break;
    }
    case Representation::kFull: {
      out.reserve(3 + (registers_.size() * static_cast<size_t>(params_.regwidth) + 7) / 8);
      BitWriter w(&out);
      for (uint8_t r : registers_) w.Put(r, params_.regwidth);
      w.Finish();
      break;
    }
  }
  return out;
}

Result<HyperLogLog> HyperLogLog::Parse(std::string_view bytes, uint64_t max_register_bytes) {
  if (bytes.size() < 3) return Status::Corruption("hll shorter than its 3-byte header");
  const auto v = static_cast<uint8_t>(bytes[0]);
  if ((v >> 4) != kSchemaVersion) {
    return Status::Corruption("unknown schema version " + std::to_string(v >> 4));
  }
  const int type = v & 0x0f;
  const auto p = static_cast<uint8_t>(bytes[1]);
  const auto c = static_cast<uint8_t>(bytes[2]);
  HllParams params;
  params.regwidth = (p >> 5) + 1;
  params.log2m = p & 0x1f;
  params.sparseon = (c & 0x40) != 0;
  const int cutoff = c & 0x3f;
  if ((c & 0x80) != 0) return Status::Corruption("hll header padding bit is set");
  params.expthresh = cutoff == 63 ? -1 : cutoff;
  if (Status s = params.Validate(); !s.ok()) return Status::Corruption(s.message());
  HyperLogLog h(params);
  const std::string_view data = bytes.substr(3);
  const uint64_t m = uint64_t{1} << params.log2m;
  switch (type) {
    case 1:
      if (!data.empty()) return Status::Corruption("inconsistently sized empty multiset");
      return h;
    case 2: {
      if (data.size() % 8 != 0) return Status::Corruption("inconsistently sized explicit multiset");
      for (size_t i = 0; i < data.size(); i += 8) {
        uint64_t u = 0;
        for (int b = 0; b < 8; b++)
          u = (u << 8) | static_cast<uint8_t>(data[i + static_cast<size_t>(b)]);
        const auto s = static_cast<int64_t>(u);
        if (!h.explicit_.empty() && s <= h.explicit_.back()) {
          return Status::Corruption("duplicate or descending explicit elements");
        }
        h.explicit_.push_back(s);
      }
      h.state_ = h.explicit_.empty() ? State::kEmpty : State::kExplicit;
      return h;
    }
    case 3: {
      const int word = params.log2m + params.regwidth;
      const uint64_t words = data.size() * 8 / static_cast<uint64_t>(word);
      // Registers are allocated in full; a few bytes must not make us allocate gigabytes.
      if (max_register_bytes != 0) {
        if (RegisterBytes(params) > max_register_bytes) {
          return Status::Corruption("sparse multiset for 2^" + std::to_string(params.log2m) +
                                    " registers, more than allowed");
        }
      } else if (params.log2m > 20 && m > 64 * static_cast<uint64_t>(data.size())) {
        return Status::Corruption("sparse multiset too small for 2^" +
                                  std::to_string(params.log2m) + " registers");
      }
      if (words > m) return Status::Corruption("sparse multiset has more words than registers");
      h.registers_.assign(m, 0);
      h.state_ = State::kRegisters;
      BitReader r(data);
      for (uint64_t i = 0; i < words; i++) {
        const uint64_t w = r.Get(word);
        const uint64_t index = w >> params.regwidth;
        const auto value = static_cast<uint8_t>(w & MaxValue(params.regwidth));
        // A zero value can only be padding-made words at the end; PostgreSQL skips them.
        if (value != 0) h.registers_[index] = std::max(h.registers_[index], value);
      }
      return h;
    }
    case 4: {
      if (data.size() != (m * static_cast<uint64_t>(params.regwidth) + 7) / 8) {
        return Status::Corruption("inconsistently sized compressed multiset");
      }
      h.registers_.assign(m, 0);
      h.state_ = State::kRegisters;
      BitReader r(data);
      for (uint64_t i = 0; i < m; i++)
        h.registers_[i] = static_cast<uint8_t>(r.Get(params.regwidth));
      return h;
    }
    case 0:
      return Status::Corruption("undefined multiset is not supported");
    default:
      return Status::Corruption("undefined multiset type " + std::to_string(type));
  }
}

}  // namespace floe::sketch
