// wire: bytes in and out.
//
//   Writer / Reader   little-endian fixed-width integers, LEB128 varints (zigzag for signed),
//                     doubles, length-prefixed bytes; every Reader call is bounds-checked and
//                     returns a Status, so truncated or corrupt input can never crash a decoder.
//   Crc32c            CRC-32C (Castagnoli), hardware-accelerated where the CPU has SSE4.2.
//   Iced types        a type lists its fields once (`FloeIcedFields`) and gets binary Encode,
//                     Decode and JSON rendering; `TypeRegistry` maps type ids to codecs.
//
// Binary form of an Iced value (docs/wire.md, "Typed values"):
//   varint type_id | varint body_length | body
// where the body is the fields in declaration order:
//   bool -> 1 byte (0 or 1); unsigned -> varint; signed -> zigzag varint; double -> 8 bytes LE;
//   string -> varint length + bytes; vector<T> -> varint count + elements; nested Iced -> its
//   body, length-prefixed. A body must be consumed exactly; anything left over is corruption.
//
// Thread rules: Writer and Reader are thread-compatible. TypeRegistry is thread-safe for
// lookups; registration happens during start-up (static initializers or main) before lookups.

#ifndef FLOE_WIRE_WIRE_H_
#define FLOE_WIRE_WIRE_H_

#include <cstdint>
#include <cstring>
#include <deque>
#include <limits>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <vector>

#include "base/base.h"

namespace floe::wire {

// Upper bound on any single length a decoder will accept before allocating: 512 MiB.
inline constexpr uint64_t kMaxLength = 512ull << 20;

// ---------------------------------------------------------------------------------------------
// Writer appends to a caller-owned std::string.
class Writer {
 public:
  explicit Writer(std::string* out) : out_(out) {}

  void PutU8(uint8_t v) { out_->push_back(static_cast<char>(v)); }
  void PutFixed16(uint16_t v) { PutLittleEndian(v); }
  void PutFixed32(uint32_t v) { PutLittleEndian(v); }
  void PutFixed64(uint64_t v) { PutLittleEndian(v); }
  void PutDouble(double v);
  void PutVarint64(uint64_t v);
  void PutVarintSigned(int64_t v) { PutVarint64(ZigZag(v)); }
  void PutRaw(std::string_view bytes) { out_->append(bytes); }
  // varint length, then the bytes.
  void PutLengthPrefixed(std::string_view bytes) {
    PutVarint64(bytes.size());
    PutRaw(bytes);
  }

  size_t size() const { return out_->size(); }
  std::string* buffer() { return out_; }

  static uint64_t ZigZag(int64_t v) {
    return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63);
  }

 private:
  template <typename T>
  void PutLittleEndian(T v) {
    char buf[sizeof(T)];
    for (size_t i = 0; i < sizeof(T); i++) buf[i] = static_cast<char>(v >> (8 * i));
    out_->append(buf, sizeof(T));
  }
  std::string* out_;
};

// Reader consumes a byte range it does not own; the bytes must outlive the Reader and every
// string_view it hands out.
class Reader {
 public:
  explicit Reader(std::string_view bytes) : p_(bytes.data()), end_(bytes.data() + bytes.size()) {}

  Status GetU8(uint8_t* v);
  Status GetFixed16(uint16_t* v) { return GetLittleEndian(v); }
  Status GetFixed32(uint32_t* v) { return GetLittleEndian(v); }
  Status GetFixed64(uint64_t* v) { return GetLittleEndian(v); }
  Status GetDouble(double* v);
  // At most 10 bytes; rejects overlong encodings that overflow 64 bits.
  Status GetVarint64(uint64_t* v);
  Status GetVarintSigned(int64_t* v);
  // A varint that must fit in 32 bits.
  Status GetVarint32(uint32_t* v);
  Status GetRaw(size_t n, std::string_view* out);
  // varint length (bounded by max_len and by the bytes that remain), then the bytes.
  Status GetLengthPrefixed(std::string_view* out, uint64_t max_len = kMaxLength);

  size_t remaining() const { return static_cast<size_t>(end_ - p_); }
  bool empty() const { return p_ == end_; }

  static int64_t UnZigZag(uint64_t v) {
    return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1);
  }

 private:
  template <typename T>
  Status GetLittleEndian(T* v) {
    if (remaining() < sizeof(T)) return Truncated(sizeof(T));
    T r = 0;
    for (size_t i = 0; i < sizeof(T); i++)
      r |= static_cast<T>(static_cast<uint8_t>(p_[i])) << (8 * i);
    p_ += sizeof(T);
    *v = r;
    return Status::OK();
  }
  Status Truncated(size_t wanted) const;

  const char* p_;
  const char* end_;
};

// ---------------------------------------------------------------------------------------------
// CRC-32C (Castagnoli polynomial 0x1EDC6F41, reflected), as iSCSI, ext4 and LevelDB use it.
// `init` chains computations: Crc32c(b, Crc32c(a)) == Crc32c(a + b).
uint32_t Crc32c(std::string_view bytes, uint32_t init = 0);

// ---------------------------------------------------------------------------------------------
// JSON text helpers shared by every renderer.

// Appends `bytes` as a JSON string literal. Valid UTF-8 passes through; control characters are
// escaped; bytes that are not valid UTF-8 become U+FFFD, so the output is always valid JSON.
void AppendJsonString(std::string* out, std::string_view bytes);
// Shortest text that reads back as the same double; NaN and infinities render as null.
void AppendJsonDouble(std::string* out, double v);

// ---------------------------------------------------------------------------------------------
// Iced types. A type opts in with a static member listing its fields:
//
//   struct Point {
//     int64_t x = 0;
//     std::string label;
//     static constexpr uint16_t kTypeId = 100;
//     static constexpr std::string_view kTypeName = "Point";
//     static constexpr auto FloeIcedFields() {
//       return std::make_tuple(wire::Field("x", &Point::x), wire::Field("label", &Point::label));
//     }
//   };
//
// and then wire::Encode(point), wire::Decode<Point>(bytes) and wire::ToJson(point) work.

template <typename T, typename M>
struct FieldDesc {
  std::string_view name;
  M T::*member;
};
template <typename T, typename M>
constexpr FieldDesc<T, M> Field(std::string_view name, M T::*member) {
  return {name, member};
}

template <typename T>
concept IcedType = requires {
  { T::kTypeId } -> std::convertible_to<uint16_t>;
  T::FloeIcedFields();
};

namespace internal {

template <typename T>
struct IsVector : std::false_type {};
template <typename E, typename A>
struct IsVector<std::vector<E, A>> : std::true_type {};

template <typename M>
void EncodeField(Writer& w, const M& v);
template <typename M>
Status DecodeField(Reader& r, M* v, int depth);
template <typename M>
void FieldJson(std::string* out, const M& v);

template <IcedType T>
void EncodeBody(Writer& w, const T& value) {
  std::apply([&](const auto&... f) { (EncodeField(w, value.*(f.member)), ...); },
             T::FloeIcedFields());
}

template <IcedType T>
Status DecodeBody(Reader& r, T* value, int depth) {
  Status s;
  std::apply(
      [&](const auto&... f) {
        ((s.ok() ? (s = DecodeField(r, &(value->*(f.member)), depth).WithContext(f.name), 0) : 0),
         ...);
      },
      T::FloeIcedFields());
  return s;
}

template <IcedType T>
void BodyJson(std::string* out, const T& value) {
  out->push_back('{');
  bool first = true;
  std::apply(
      [&](const auto&... f) {
        ((out->append(first ? "" : ","), first = false, AppendJsonString(out, f.name),
          out->push_back(':'), FieldJson(out, value.*(f.member))),
         ...);
      },
      T::FloeIcedFields());
  out->push_back('}');
}

// Nesting bound, so hostile input cannot exhaust the stack through nested vectors.
inline constexpr int kMaxDepth = 32;

template <typename M>
void EncodeField(Writer& w, const M& v) {
  if constexpr (std::is_same_v<M, bool>) {
    w.PutU8(v ? 1 : 0);
  } else if constexpr (std::is_integral_v<M> && std::is_signed_v<M>) {
    w.PutVarintSigned(v);
  } else if constexpr (std::is_integral_v<M>) {
    w.PutVarint64(v);
  } else if constexpr (std::is_same_v<M, double>) {
    w.PutDouble(v);
  } else if constexpr (std::is_same_v<M, std::string>) {
    w.PutLengthPrefixed(v);
  } else if constexpr (IsVector<M>::value) {
    w.PutVarint64(v.size());
    for (const auto& e : v) EncodeField(w, e);
  } else if constexpr (IcedType<M>) {
    std::string body;
    Writer bw(&body);
    EncodeBody(bw, v);
    w.PutLengthPrefixed(body);
  } else {
    static_assert(sizeof(M) == 0, "field type has no wire encoding");
  }
}

template <typename M>
Status DecodeField(Reader& r, M* v, int depth) {
  if (depth > kMaxDepth) return Status::Corruption("nesting too deep");
  if constexpr (std::is_same_v<M, bool>) {
    uint8_t b = 0;
    FLOE_RETURN_IF_ERROR(r.GetU8(&b));
    if (b > 1) return Status::Corruption("bool byte is not 0 or 1");
    *v = b == 1;
  } else if constexpr (std::is_integral_v<M> && std::is_signed_v<M>) {
    int64_t x = 0;
    FLOE_RETURN_IF_ERROR(r.GetVarintSigned(&x));
    if (x < std::numeric_limits<M>::min() || x > std::numeric_limits<M>::max()) {
      return Status::Corruption("integer out of range for its field");
    }
    *v = static_cast<M>(x);
  } else if constexpr (std::is_integral_v<M>) {
    uint64_t x = 0;
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&x));
    if (x > std::numeric_limits<M>::max()) {
      return Status::Corruption("integer out of range for its field");
    }
    *v = static_cast<M>(x);
  } else if constexpr (std::is_same_v<M, double>) {
    FLOE_RETURN_IF_ERROR(r.GetDouble(v));
  } else if constexpr (std::is_same_v<M, std::string>) {
    std::string_view s;
    FLOE_RETURN_IF_ERROR(r.GetLengthPrefixed(&s));
    v->assign(s);
  } else if constexpr (IsVector<M>::value) {
    uint64_t n = 0;
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&n));
    // Every element takes at least one byte, so a count beyond the remaining bytes is a lie;
    // checking before reserve() keeps hostile counts from allocating.
    if (n > r.remaining()) return Status::Corruption("element count exceeds the input");
    v->clear();
    v->reserve(n);
    for (uint64_t i = 0; i < n; i++) {
      typename M::value_type e{};
      FLOE_RETURN_IF_ERROR(DecodeField(r, &e, depth + 1));
      v->push_back(std::move(e));
    }
  } else if constexpr (IcedType<M>) {
    std::string_view body;
    FLOE_RETURN_IF_ERROR(r.GetLengthPrefixed(&body));
    Reader br(body);
    FLOE_RETURN_IF_ERROR(DecodeBody(br, v, depth + 1));
    if (!br.empty()) return Status::Corruption("trailing bytes in nested value");
  } else {
    static_assert(sizeof(M) == 0, "field type has no wire decoding");
  }
  return Status::OK();
}

template <typename M>
void FieldJson(std::string* out, const M& v) {
  if constexpr (std::is_same_v<M, bool>) {
    out->append(v ? "true" : "false");
  } else if constexpr (std::is_integral_v<M>) {
    out->append(std::to_string(v));
  } else if constexpr (std::is_same_v<M, double>) {
    AppendJsonDouble(out, v);
  } else if constexpr (std::is_same_v<M, std::string>) {
    AppendJsonString(out, v);
  } else if constexpr (IsVector<M>::value) {
    out->push_back('[');
    for (size_t i = 0; i < v.size(); i++) {
      if (i > 0) out->push_back(',');
      FieldJson(out, v[i]);
    }
    out->push_back(']');
  } else if constexpr (IcedType<M>) {
    BodyJson(out, v);
  }
}

}  // namespace internal

// Appends the typed binary form (type id, body length, body) to `out`.
template <IcedType T>
void Encode(const T& value, std::string* out) {
  std::string body;
  Writer bw(&body);
  internal::EncodeBody(bw, value);
  Writer w(out);
  w.PutVarint64(T::kTypeId);
  w.PutLengthPrefixed(body);
}

template <IcedType T>
std::string Encode(const T& value) {
  std::string out;
  Encode(value, &out);
  return out;
}

// Decodes the typed binary form; the type id must be T's and every byte must be used.
template <IcedType T>
Result<T> Decode(std::string_view bytes) {
  Reader r(bytes);
  uint64_t id = 0;
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&id));
  if (id != T::kTypeId) {
    return Status::Corruption("type id " + std::to_string(id) + " is not " +
                              std::string(T::kTypeName));
  }
  std::string_view body;
  FLOE_RETURN_IF_ERROR(r.GetLengthPrefixed(&body));
  if (!r.empty()) return Status::Corruption("trailing bytes after value");
  Reader br(body);
  T value{};
  FLOE_RETURN_IF_ERROR(internal::DecodeBody(br, &value, 0).WithContext(T::kTypeName));
  if (!br.empty()) return Status::Corruption("trailing bytes in " + std::string(T::kTypeName));
  return value;
}

// {"type":"<name>","<field>":...}
template <IcedType T>
std::string ToJson(const T& value) {
  std::string fields;
  internal::BodyJson(&fields, value);
  std::string out = "{\"type\":";
  AppendJsonString(&out, T::kTypeName);
  if (fields.size() > 2) {
    out.push_back(',');
    out.append(fields, 1, std::string::npos);
  } else {
    out.push_back('}');
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// TypeRegistry: type id -> codec, for code that holds bytes of a type it does not know
// statically (the store, INFO and REST renderers, the fuzzer).
struct TypeCodec {
  uint16_t id = 0;
  std::string_view name;
  // Checks that `bytes` (the full typed form) decode; renders them as JSON.
  Result<std::string> (*to_json)(std::string_view bytes) = nullptr;
};

class TypeRegistry {
 public:
  static TypeRegistry& Global();

  // Fails with AlreadyExists if the id is taken by a different name.
  Status Register(const TypeCodec& codec);
  template <IcedType T>
  Status Register() {
    return Register(
        TypeCodec{T::kTypeId, T::kTypeName, [](std::string_view b) -> Result<std::string> {
                    FLOE_ASSIGN_OR_RETURN(T v, Decode<T>(b));
                    return wire::ToJson(v);
                  }});
  }
  // nullptr when the id is unknown.
  const TypeCodec* Find(uint16_t id) const;
  // Reads the leading type id of `bytes` and renders through its codec.
  Result<std::string> RenderJson(std::string_view bytes) const;

 private:
  TypeRegistry() = default;
  mutable Mutex mu_;
  // A deque, so pointers returned by Find() stay valid as types are added.
  std::deque<TypeCodec> codecs_ FLOE_GUARDED_BY(mu_);
};

}  // namespace floe::wire

#endif  // FLOE_WIRE_WIRE_H_
