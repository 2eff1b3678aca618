// The Raft transport: Floe's own raft_uv_transport, whose handshake authenticates the caller
// before libraft reads a byte from it (docs/consensus.md, "The transport", rules T1-T6).
//
// Wire (little endian), on a fresh TCP connection from the caller C to the listener L:
//   L -> C  nonce    16 random bytes, fresh per connection
//   C -> L  hello    [4] "FLRT"  [1] version (2)  [1] address length n (1-255)  [2] zero
//                    [8] C's raft id (>= 1)  [n] C's address (no NUL)
//                    [16] MAC(kHelloDomain || nonce || L's raft id [8] || the hello's first
//                         16 + n bytes): the id C dialled, so a hello made for one server is
//                         refused by another (a relay through a stopped member's port)
// then libraft's own protocol, unchanged, in both directions.
//
// Thread rules: everything runs on the loop's thread, except the refused counter (atomic).

#ifndef FLOE_CONSENSUS_INTERNAL_TRANSPORT_H_
#define FLOE_CONSENSUS_INTERNAL_TRANSPORT_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "consensus/consensus.h"

struct raft_io;
struct raft_uv_transport;
struct uv_loop_s;

namespace floe::consensus::internal {

inline constexpr size_t kNonceBytes = 16;
inline constexpr size_t kHelloFixed = 16;  // magic, version, length, zero, id
inline constexpr size_t kHelloMacBytes = 16;
inline constexpr size_t kMaxHelloAddress = 255;
inline constexpr size_t kMaxHello = kHelloFixed + kMaxHelloAddress + kHelloMacBytes;
inline constexpr std::string_view kHelloDomain = "floe raft transport v2";
// T3: a connection that has not completed its handshake by then is closed.
inline constexpr uint64_t kHandshakeDeadlineMs = 2000;
// T4: incoming handshakes in progress at once on a listener; one more ends the oldest.
inline constexpr size_t kMaxPendingHandshakes = 64;

struct Hello {
  uint64_t id = 0;
  std::string address;
};

// T1: the whole hello's length from its first kHelloFixed bytes, or 0 when they are not a
// hello (magic, version, zero bytes, address length 1-255, id >= 1). Sizes nothing.
size_t HelloLength(std::string_view fixed);
// The hello of `id` at `address` to the server `target` (the id it dialled), answering `nonce`
// (kNonceBytes). REQUIRES: address is 1-255 bytes without NUL, id >= 1.
std::string EncodeHello(uint64_t id, std::string_view address, uint64_t target,
                        std::string_view nonce, const Mac& mac);
// T2: checks a whole hello against `nonce` and this server's id `target`; false (nothing set)
// unless every byte is right.
bool DecodeHello(std::string_view hello, std::string_view nonce, uint64_t target, const Mac& mac,
                 Hello* out);

// Initializes `t` as the transport on `loop`. `refused` counts handshakes refused by the
// listener (it must outlive the transport). Release frees what Init allocated, after close's
// callback ran (or when listen never ran and close was not called).
int InitTransport(raft_uv_transport* t, uv_loop_s* loop, Mac mac, std::atomic<uint64_t>* refused);
void ReleaseTransport(raft_uv_transport* t);

// T6: a message raft asks to send with no destination (server id 0 or a null address) is refused
// with RAFT_NOCONNECTION, which raft takes as a failed send, instead of reaching raft_uv's send.
// libraft 0.15 makes such a message when a follower's disk write of entries completes after it
// lost its leader (a campaign in between), and raft_uv's send reads the address with strlen: a
// segfault of the whole process. Wraps io->send; call once after raft_uv_init on `io`.
void GuardSends(raft_io* io);

}  // namespace floe::consensus::internal

#endif  // FLOE_CONSENSUS_INTERNAL_TRANSPORT_H_
