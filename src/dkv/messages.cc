// Encodings of the DKV's messages (layouts in docs/coherence.md, "Messages").

#include "dkv/internal/messages.h"

#include "store/store.h"
#include "wire/wire.h"

namespace floe::dkv::internal {
namespace {

void PutEntry(wire::Writer& w, const Entry& e) {
  w.PutFixed16(e.type);
  w.PutVarintSigned(e.expire_at_ms);
  w.PutLengthPrefixed(e.payload);
}

Status GetEntry(wire::Reader& r, Entry* e) {
  FLOE_RETURN_IF_ERROR(r.GetFixed16(&e->type));
  FLOE_RETURN_IF_ERROR(r.GetVarintSigned(&e->expire_at_ms));
  if (e->expire_at_ms < 0) return Status::Corruption("negative expiry");
  std::string_view payload;
  FLOE_RETURN_IF_ERROR(r.GetLengthPrefixed(&payload, store::kMaxPayloadBytes));
  e->payload.assign(payload);
  return Status::OK();
}

Status GetKey(wire::Reader& r, std::string_view* key) {
  return r.GetLengthPrefixed(key, store::kMaxKeyBytes);
}

Status Done(const wire::Reader& r) {
  return r.empty() ? Status::OK() : Status::Corruption("trailing bytes");
}

}  // namespace

std::string EncodeGetRequest(const GetRequest& q) {
  std::string out;
  wire::Writer w(&out);
  w.PutVarint64(q.map_version);
  w.PutLengthPrefixed(q.key);
  w.PutVarint64(q.sent_us);
  return out;
}

Result<GetRequest> DecodeGetRequest(std::string_view bytes) {
  wire::Reader r(bytes);
  GetRequest q;
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&q.map_version));
  FLOE_RETURN_IF_ERROR(GetKey(r, &q.key));
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&q.sent_us));
  FLOE_RETURN_IF_ERROR(Done(r));
  return q;
}

std::string EncodeGetAnswer(const GetAnswer& a) {
  std::string out;
  wire::Writer w(&out);
  w.PutU8(static_cast<uint8_t>((a.entry ? 1 : 0) | (a.cacheable ? 2 : 0)));
  w.PutVarint64(a.stamp);
  if (a.entry) PutEntry(w, *a.entry);
  return out;
}

Result<GetAnswer> DecodeGetAnswer(std::string_view bytes) {
  wire::Reader r(bytes);
  GetAnswer a;
  uint8_t flags;
  FLOE_RETURN_IF_ERROR(r.GetU8(&flags));
  if (flags > 3) return Status::Corruption("bad GET answer flags");
  a.cacheable = (flags & 2) != 0;
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&a.stamp));
  if (a.stamp > kMaxStamp) return Status::Corruption("stamp out of range");
  if ((flags & 1) != 0) {
    a.entry.emplace();
    FLOE_RETURN_IF_ERROR(GetEntry(r, &*a.entry));
  }
  FLOE_RETURN_IF_ERROR(Done(r));
  return a;
}

std::string EncodeWriteRequest(const WriteRequest& q) {
  std::string out;
  wire::Writer w(&out);
  w.PutVarint64(q.map_version);
  w.PutLengthPrefixed(q.key);
  w.PutFixed16(q.op);
  w.PutLengthPrefixed(q.args);
  w.PutVarint64(q.sent_us);
  return out;
}

Result<WriteRequest> DecodeWriteRequest(std::string_view bytes) {
  wire::Reader r(bytes);
  WriteRequest q;
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&q.map_version));
  FLOE_RETURN_IF_ERROR(GetKey(r, &q.key));
  FLOE_RETURN_IF_ERROR(r.GetFixed16(&q.op));
  FLOE_RETURN_IF_ERROR(r.GetLengthPrefixed(&q.args, store::kMaxPayloadBytes + 1024));
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&q.sent_us));
  FLOE_RETURN_IF_ERROR(Done(r));
  return q;
}

std::string EncodeWriteAnswer(const WriteAnswer& a) {
  std::string out;
  wire::Writer w(&out);
  w.PutVarint64(a.stamp);
  w.PutLengthPrefixed(a.result);
  w.PutU8(a.entry ? 1 : 0);
  if (a.entry) PutEntry(w, *a.entry);
  return out;
}

Result<WriteAnswer> DecodeWriteAnswer(std::string_view bytes) {
  wire::Reader r(bytes);
  WriteAnswer a;
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&a.stamp));
  if (a.stamp > kMaxStamp) return Status::Corruption("stamp out of range");
  std::string_view result;
  FLOE_RETURN_IF_ERROR(r.GetLengthPrefixed(&result, store::kMaxPayloadBytes));
  a.result.assign(result);
  uint8_t has;
  FLOE_RETURN_IF_ERROR(r.GetU8(&has));
  if (has > 1) return Status::Corruption("bad WRITE answer flag");
  if (has == 1) {
    a.entry.emplace();
    FLOE_RETURN_IF_ERROR(GetEntry(r, &*a.entry));
  }
  FLOE_RETURN_IF_ERROR(Done(r));
  return a;
}

std::string EncodeInvalidate(const InvalidateRequest& q) {
  std::string out;
  wire::Writer w(&out);
  w.PutLengthPrefixed(q.key);
  w.PutVarint64(q.stamp);
  return out;
}

Result<InvalidateRequest> DecodeInvalidate(std::string_view bytes) {
  wire::Reader r(bytes);
  InvalidateRequest q;
  FLOE_RETURN_IF_ERROR(GetKey(r, &q.key));
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&q.stamp));
  if (q.stamp > kMaxStamp) return Status::Corruption("stamp out of range");
  FLOE_RETURN_IF_ERROR(Done(r));
  return q;
}

std::string EncodeEntry(const Entry& e) {
  std::string out;
  wire::Writer w(&out);
  PutEntry(w, e);
  return out;
}

Result<Entry> DecodeEntry(std::string_view bytes) {
  wire::Reader r(bytes);
  Entry e;
  FLOE_RETURN_IF_ERROR(GetEntry(r, &e));
  FLOE_RETURN_IF_ERROR(Done(r));
  return e;
}

std::string EncodeCompareAndPut(const std::optional<Entry>& expected, const Entry& entry) {
  std::string out;
  wire::Writer w(&out);
  w.PutU8(expected ? 1 : 0);
  if (expected) PutEntry(w, *expected);
  PutEntry(w, entry);
  return out;
}

Result<CompareAndPutArgs> DecodeCompareAndPut(std::string_view bytes) {
  wire::Reader r(bytes);
  CompareAndPutArgs a;
  uint8_t has;
  FLOE_RETURN_IF_ERROR(r.GetU8(&has));
  if (has > 1) return Status::Corruption("bad compare-and-put flag");
  if (has == 1) {
    a.expected.emplace();
    FLOE_RETURN_IF_ERROR(GetEntry(r, &*a.expected));
  }
  FLOE_RETURN_IF_ERROR(GetEntry(r, &a.entry));
  FLOE_RETURN_IF_ERROR(Done(r));
  return a;
}

}  // namespace floe::dkv::internal
