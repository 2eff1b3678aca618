// The DKV's message payloads (docs/coherence.md, "Messages"). Decoders take untrusted bytes:
// every length is bounded before it sizes anything, and malformed input is a Corruption status
// (fuzzed by fuzz/dkv_fuzz.cc).

#ifndef FLOE_DKV_INTERNAL_MESSAGES_H_
#define FLOE_DKV_INTERNAL_MESSAGES_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "base/base.h"
#include "dkv/dkv.h"

namespace floe::dkv::internal {

struct GetRequest {
  uint64_t map_version = 0;
  std::string_view key;
  uint64_t sent_us = 0;  // the asker's monotonic clock (rule W3)
};
// Stamps on the wire stay below kMaxStamp (UINT64_MAX marks a writer's own pending copy).
inline constexpr uint64_t kMaxStamp = UINT64_MAX - 1;

struct GetAnswer {
  uint64_t stamp = 0;  // the committed value's; 0 when absent
  bool cacheable = false;
  std::optional<Entry> entry;  // nullopt: absent
};
struct WriteRequest {
  uint64_t map_version = 0;
  std::string_view key;
  uint16_t op = 0;
  std::string_view args;
  uint64_t sent_us = 0;  // the writer's monotonic clock (rule W3)
};
struct WriteAnswer {
  uint64_t stamp = 0;  // the committed stamp after the write (0: none)
  std::string result;
  std::optional<Entry> entry;  // the new value, for the writer to cache
};
struct InvalidateRequest {
  std::string_view key;
  uint64_t stamp = 0;
};

std::string EncodeGetRequest(const GetRequest& r);
Result<GetRequest> DecodeGetRequest(std::string_view bytes);
std::string EncodeGetAnswer(const GetAnswer& a);
Result<GetAnswer> DecodeGetAnswer(std::string_view bytes);
std::string EncodeWriteRequest(const WriteRequest& r);
Result<WriteRequest> DecodeWriteRequest(std::string_view bytes);
std::string EncodeWriteAnswer(const WriteAnswer& a);
Result<WriteAnswer> DecodeWriteAnswer(std::string_view bytes);
std::string EncodeInvalidate(const InvalidateRequest& r);
Result<InvalidateRequest> DecodeInvalidate(std::string_view bytes);

// Arguments of the built-in operations.
std::string EncodeEntry(const Entry& e);
Result<Entry> DecodeEntry(std::string_view bytes);
std::string EncodeCompareAndPut(const std::optional<Entry>& expected, const Entry& entry);
struct CompareAndPutArgs {
  std::optional<Entry> expected;
  Entry entry;
};
Result<CompareAndPutArgs> DecodeCompareAndPut(std::string_view bytes);

}  // namespace floe::dkv::internal

#endif  // FLOE_DKV_INTERNAL_MESSAGES_H_
