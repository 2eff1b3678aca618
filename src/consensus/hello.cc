// The Raft transport's hello (internal/transport.h; docs/wire.md, "The Raft transport's hello"):
// pure functions, so that the decoder is fuzzed alone (fuzz/raft_hello_fuzz.cc).

#include <array>
#include <cstring>
#include <string>

#include "consensus/internal/transport.h"

namespace floe::consensus::internal {
namespace {

constexpr char kMagic[4] = {'F', 'L', 'R', 'T'};
constexpr uint8_t kVersion = 2;

uint64_t Load64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

std::array<uint8_t, 16> MacOf(const Mac& mac, std::string_view nonce, uint64_t target,
                              std::string_view signed_part) {
  std::string bytes;
  bytes.reserve(kHelloDomain.size() + nonce.size() + 8 + signed_part.size());
  bytes.append(kHelloDomain).append(nonce);
  for (int i = 0; i < 8; i++) bytes.push_back(static_cast<char>(target >> (8 * i)));
  bytes.append(signed_part);
  if (mac) return mac(bytes);
  const Hash128 h = Murmur3x64_128(bytes.data(), bytes.size(), 0);
  std::array<uint8_t, 16> out{};
  for (int i = 0; i < 8; i++) {
    out[i] = static_cast<uint8_t>(h.h1 >> (8 * i));
    out[8 + i] = static_cast<uint8_t>(h.h2 >> (8 * i));
  }
  return out;
}

}  // namespace

size_t HelloLength(std::string_view fixed) {
  if (fixed.size() < kHelloFixed) return 0;
  if (std::memcmp(fixed.data(), kMagic, 4) != 0) return 0;
  if (static_cast<uint8_t>(fixed[4]) != kVersion) return 0;
  const size_t n = static_cast<uint8_t>(fixed[5]);
  if (n == 0 || n > kMaxHelloAddress || fixed[6] != 0 || fixed[7] != 0) return 0;
  if (Load64(fixed.data() + 8) == 0) return 0;
  return kHelloFixed + n + kHelloMacBytes;
}

std::string EncodeHello(uint64_t id, std::string_view address, uint64_t target,
                        std::string_view nonce, const Mac& mac) {
  std::string out(kMagic, 4);
  out.push_back(static_cast<char>(kVersion));
  out.push_back(static_cast<char>(address.size()));
  out.append(2, '\0');
  for (int i = 0; i < 8; i++) out.push_back(static_cast<char>(id >> (8 * i)));
  out.append(address);
  const std::array<uint8_t, 16> m = MacOf(mac, nonce, target, out);
  out.append(reinterpret_cast<const char*>(m.data()), m.size());
  return out;
}

bool DecodeHello(std::string_view hello, std::string_view nonce, uint64_t target, const Mac& mac,
                 Hello* out) {
  const size_t length = HelloLength(hello);
  if (length == 0 || hello.size() != length || nonce.size() != kNonceBytes) return false;
  const std::string_view address = hello.substr(kHelloFixed, length - kHelloFixed - kHelloMacBytes);
  if (address.find('\0') != std::string_view::npos) return false;
  const std::array<uint8_t, 16> want =
      MacOf(mac, nonce, target, hello.substr(0, length - kHelloMacBytes));
  uint8_t diff = 0;
  for (size_t i = 0; i < kHelloMacBytes; i++) {
    diff |= want[i] ^ static_cast<uint8_t>(hello[length - kHelloMacBytes + i]);
  }
  if (diff != 0) return false;
  out->id = Load64(hello.data() + 8);
  out->address.assign(address);
  return true;
}

}  // namespace floe::consensus::internal
