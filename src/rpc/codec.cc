// The RPC message codec (docs/wire.md, "RPC messages").

#include <lz4.h>

#include <cstring>

#include "rpc/rpc.h"
#include "wire/wire.h"

namespace floe::rpc {

namespace {
constexpr uint8_t kMagic[4] = {'F', 'L', 'R', 'P'};
constexpr uint8_t kVersion = 1;

inline uint64_t Rotl(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }

template <typename T>
void Put(std::string* out, size_t at, T v) {
  for (size_t i = 0; i < sizeof(T); i++) {
    (*out)[at + i] = static_cast<char>(static_cast<uint64_t>(v) >> (8 * i));
  }
}
template <typename T>
T Get(std::string_view in, size_t at) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(T); i++) {
    v |= static_cast<uint64_t>(static_cast<uint8_t>(in[at + i])) << (8 * i);
  }
  return static_cast<T>(v);
}

uint32_t MessageCrc(std::string_view header52, std::string_view payload) {
  return wire::Crc32c(payload, wire::Crc32c(header52));
}

// A large payload is compressed only if a 64 KiB sample from its middle shrinks by an eighth:
// random or already compressed data then costs one small trial, not a pass over megabytes.
bool WorthCompressing(std::string_view payload) {
  constexpr size_t kSample = 64 * 1024;
  if (payload.size() <= 4 * kSample) return true;
  const std::string_view sample = payload.substr(payload.size() / 2, kSample);
  std::string out(static_cast<size_t>(LZ4_compressBound(static_cast<int>(kSample))), '\0');
  const int n = LZ4_compress_default(sample.data(), out.data(), static_cast<int>(kSample),
                                     static_cast<int>(out.size()));
  return n > 0 && static_cast<size_t>(n) <= kSample - kSample / 8;
}
}  // namespace

// SipHash-2-4, 128-bit output (Aumasson and Bernstein's reference construction), over a + b.
void SipHash128(const MacKey& key, std::string_view a, std::string_view b, uint8_t out[16]) {
  FLOE_DCHECK(a.size() % 8 == 0);
  uint64_t v0 = 0x736f6d6570736575ULL ^ key.k0, v1 = 0x646f72616e646f6dULL ^ key.k1;
  uint64_t v2 = 0x6c7967656e657261ULL ^ key.k0, v3 = 0x7465646279746573ULL ^ key.k1;
  v1 ^= 0xee;
  auto round = [&] {
    v0 += v1, v1 = Rotl(v1, 13), v1 ^= v0, v0 = Rotl(v0, 32);
    v2 += v3, v3 = Rotl(v3, 16), v3 ^= v2;
    v0 += v3, v3 = Rotl(v3, 21), v3 ^= v0;
    v2 += v1, v1 = Rotl(v1, 17), v1 ^= v2, v2 = Rotl(v2, 32);
  };
  auto compress = [&](uint64_t m) {
    v3 ^= m;
    round();
    round();
    v0 ^= m;
  };
  for (size_t i = 0; i + 8 <= a.size(); i += 8) {
    uint64_t m;
    std::memcpy(&m, a.data() + i, 8);  // little-endian hosts (x86-64, aarch64)
    compress(m);
  }
  const size_t n = b.size();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t m;
    std::memcpy(&m, b.data() + i, 8);
    compress(m);
  }
  uint64_t last = static_cast<uint64_t>((a.size() + n) & 0xff) << 56;
  for (size_t j = 0; i + j < n; j++) {
    last |= static_cast<uint64_t>(static_cast<uint8_t>(b[i + j])) << (8 * j);
  }
  compress(last);
  v2 ^= 0xee;
  for (int r = 0; r < 4; r++) round();
  const uint64_t h0 = v0 ^ v1 ^ v2 ^ v3;
  v1 ^= 0xdd;
  for (int r = 0; r < 4; r++) round();
  const uint64_t h1 = v0 ^ v1 ^ v2 ^ v3;
  for (int k = 0; k < 8; k++) {
    out[k] = static_cast<uint8_t>(h0 >> (8 * k));
    out[8 + k] = static_cast<uint8_t>(h1 >> (8 * k));
  }
}

void SipHash128(const MacKey& key, std::string_view data, uint8_t out[16]) {
  SipHash128(key, std::string_view(), data, out);
}

MacKey DeriveMacKey(std::string_view secret) {
  // A fixed public key turns any secret into 128 uniform bits.
  const MacKey fixed{0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL};
  uint8_t h[16];
  SipHash128(fixed, secret, h);
  MacKey k;
  std::memcpy(&k.k0, h, 8);
  std::memcpy(&k.k1, h + 8, 8);
  return k;
}

net::OutMessage EncodeParts(const Header& header, std::string payload,
                            const CodecOptions& options) {
  net::OutMessage out;
  uint8_t flags = 0;
  const size_t plain_len = payload.size();
  if (options.compress_min > 0 && payload.size() >= options.compress_min &&
      payload.size() <= static_cast<size_t>(LZ4_MAX_INPUT_SIZE) && WorthCompressing(payload)) {
    std::string compressed(static_cast<size_t>(LZ4_compressBound(static_cast<int>(payload.size()))),
                           '\0');
    const int n =
        LZ4_compress_default(payload.data(), compressed.data(), static_cast<int>(payload.size()),
                             static_cast<int>(compressed.size()));
    // Sent compressed only when that saves at least an eighth.
    if (n > 0 && static_cast<size_t>(n) <= payload.size() - payload.size() / 8) {
      compressed.resize(static_cast<size_t>(n));
      payload = std::move(compressed);
      flags |= kFlagLz4;
    }
  }
  if (options.key != nullptr) flags |= kFlagMac;
  const bool frame_crc = payload.size() >= kFrameCrcMin;
  if (frame_crc) flags |= kFlagFrameCrc;
  std::string& head = out.head;
  head.assign(kHeaderBytes, '\0');
  std::memcpy(head.data(), kMagic, 4);
  head[4] = static_cast<char>(kVersion);
  head[5] = static_cast<char>(header.kind);
  head[6] = static_cast<char>(flags);
  head[7] = static_cast<char>(header.priority);
  Put<uint32_t>(&head, 8, header.sender);
  Put<uint32_t>(&head, 12, header.receiver);
  Put<uint64_t>(&head, 16, header.incarnation);
  Put<uint64_t>(&head, 24, header.task);
  Put<uint64_t>(&head, 32, header.mark);
  Put<uint16_t>(&head, 40, header.code);
  Put<uint32_t>(&head, 44, static_cast<uint32_t>(payload.size()));
  Put<uint32_t>(&head, 48, static_cast<uint32_t>(plain_len));
  Put<uint32_t>(&head, 52,
                MessageCrc(std::string_view(head).substr(0, 52),
                           frame_crc ? std::string_view() : std::string_view(payload)));
  if (options.key != nullptr) {
    uint8_t mac[kMacBytes];
    SipHash128(*options.key, head, payload, mac);
    out.tail.assign(reinterpret_cast<const char*>(mac), kMacBytes);
  }
  out.body = std::move(payload);
  return out;
}

std::string Encode(const Header& header, std::string_view payload, const CodecOptions& options) {
  return EncodeParts(header, std::string(payload), options).Flatten();
}

namespace {
// Checks `in` and fills the header; the payload is left to the caller.
Result<Message> DecodeHeader(std::string_view in, const CodecOptions& options,
                             bool transport_checked) {
  if (in.size() < kHeaderBytes) return Status::Corruption("message shorter than its header");
  if (std::memcmp(in.data(), kMagic, 4) != 0) return Status::Corruption("bad magic");
  if (static_cast<uint8_t>(in[4]) != kVersion) return Status::Corruption("unknown version");
  const auto kind = static_cast<uint8_t>(in[5]);
  if (kind < 1 || kind > 5) return Status::Corruption("unknown kind");
  const auto flags = static_cast<uint8_t>(in[6]);
  if ((flags & ~(kFlagLz4 | kFlagMac | kFlagFrameCrc)) != 0) {
    return Status::Corruption("unknown flags");
  }
  if ((flags & kFlagLz4) != 0 && !options.accept_lz4) {
    return Status::Corruption("compressed payload from a sender that may not compress");
  }
  const uint32_t body_len = Get<uint32_t>(in, 44);
  const uint32_t plain_len = Get<uint32_t>(in, 48);
  if (body_len > options.max_message || plain_len > options.max_message) {
    return Status::ResourceExhausted("message above the size limit");
  }
  if ((flags & kFlagLz4) == 0 && body_len != plain_len) {
    return Status::Corruption("lengths of an uncompressed payload differ");
  }
  // LZ4 expands at most 255-fold, so a larger claim is a lie and allocates nothing.
  if ((flags & kFlagLz4) != 0 && plain_len > uint64_t{body_len} * 255 + 16) {
    return Status::Corruption("compressed length claims an impossible ratio");
  }
  const size_t mac_len = (flags & kFlagMac) != 0 ? kMacBytes : 0;
  if (in.size() != kHeaderBytes + body_len + mac_len) {
    return Status::Corruption("message length does not match its header");
  }
  const std::string_view body = in.substr(kHeaderBytes, body_len);
  const bool frame_crc = (flags & kFlagFrameCrc) != 0;
  if (frame_crc && (!transport_checked || body_len < kFrameCrcMin)) {
    return Status::Corruption("payload checksum was not verified by the transport");
  }
  if (Get<uint32_t>(in, 52) !=
      MessageCrc(in.substr(0, 52), frame_crc ? std::string_view() : body)) {
    return Status::Corruption("CRC32C mismatch");
  }
  if (options.key != nullptr) {
    if (mac_len == 0) return Status::PermissionDenied("message is not authenticated");
    uint8_t mac[kMacBytes];
    SipHash128(*options.key, in.substr(0, kHeaderBytes + body_len), mac);
    // Constant time: the comparison does not stop at the first difference.
    uint8_t diff = 0;
    for (size_t i = 0; i < kMacBytes; i++) {
      diff |= static_cast<uint8_t>(mac[i] ^ static_cast<uint8_t>(in[kHeaderBytes + body_len + i]));
    }
    if (diff != 0) return Status::PermissionDenied("bad MAC");
  } else if (mac_len != 0) {
    return Status::PermissionDenied("unexpected MAC: this node has no cluster secret");
  }
  Message m;
  m.header.kind = static_cast<Kind>(kind);
  m.header.flags = flags;
  m.header.priority = static_cast<uint8_t>(in[7]);
  m.header.sender = Get<uint32_t>(in, 8);
  m.header.receiver = Get<uint32_t>(in, 12);
  m.header.incarnation = Get<uint64_t>(in, 16);
  m.header.task = Get<uint64_t>(in, 24);
  m.header.mark = Get<uint64_t>(in, 32);
  m.header.code = Get<uint16_t>(in, 40);
  if ((flags & kFlagLz4) != 0) {
    if (plain_len > static_cast<uint32_t>(LZ4_MAX_INPUT_SIZE)) {
      return Status::Corruption("bad compressed length");
    }
    m.buffer.resize(plain_len);
    const int n = LZ4_decompress_safe(body.data(), m.buffer.data(), static_cast<int>(body_len),
                                      static_cast<int>(plain_len));
    if (n < 0 || static_cast<uint32_t>(n) != plain_len) {
      return Status::Corruption("bad LZ4 payload");
    }
    m.size = plain_len;
  } else {
    m.offset = kHeaderBytes;  // the payload stays where it arrived
    m.size = body_len;
  }
  return m;
}
}  // namespace

Result<Message> Decode(std::string&& bytes, const CodecOptions& options, bool transport_checked) {
  FLOE_ASSIGN_OR_RETURN(Message m, DecodeHeader(bytes, options, transport_checked));
  if ((m.header.flags & kFlagLz4) == 0) m.buffer = std::move(bytes);
  return m;
}

Result<Message> Decode(std::string_view bytes, const CodecOptions& options,
                       bool transport_checked) {
  FLOE_ASSIGN_OR_RETURN(Message m, DecodeHeader(bytes, options, transport_checked));
  if ((m.header.flags & kFlagLz4) == 0) m.buffer.assign(bytes);
  return m;
}

std::string Message::TakePayload() {
  std::string out = std::move(buffer);
  if (offset == 0 && size == out.size()) return out;
  if (size < out.size() / 2) return out.substr(offset, size);
  out.erase(0, offset);
  out.resize(size);
  return out;
}

}  // namespace floe::rpc
