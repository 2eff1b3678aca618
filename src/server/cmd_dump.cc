// DUMP and RESTORE: a key's value as opaque bytes, and back (docs/wire.md, "DUMP payload").
// Redis 7.0's options, checks and error texts; the payload is Floe's own format (a Redis RDB
// payload is refused as "version or checksum are wrong", never half-read).

#include "server/internal/command.h"
#include "server/internal/sketch_cell.h"
#include "server/internal/string_cell.h"
#include "sketch/sketch.h"
#include "wire/wire.h"

namespace floe::server::internal {

namespace {

using sketch::BloomFilter;
using sketch::CountMin;
using sketch::HyperLogLog;
using sketch::RangeCountMin;
using store::Mutation;
using store::Value;
using store::ValuePtr;

// body | u16 value type | u16 format version | u32 CRC32C of everything before (all LE).
constexpr uint16_t kDumpVersion = 1;
constexpr size_t kTrailerBytes = 8;

template <typename T>
Result<std::string> SerializeCell(const Value& v) {
  FLOE_ASSIGN_OR_RETURN(const SketchCell<T>* cell, CellOf<T>(v));
  return cell->Read([](const T& object) { return object.Serialize(); });
}

}  // namespace

Result<std::string> DumpBody(const Value& v) {
  switch (static_cast<ValueType>(v.type())) {
    case ValueType::kString:
      return StringBytes(v);
    case ValueType::kHll:
      return SerializeCell<HyperLogLog>(v);
    case ValueType::kCountMin:
      return SerializeCell<CountMin>(v);
    case ValueType::kRangeCountMin:
      return SerializeCell<RangeCountMin>(v);
    case ValueType::kBloom:
      return SerializeCell<BloomFilter>(v);
    case ValueType::kFrame:  // gigabytes in one reply: frames move by FRAME.IMPORT / EXPORT
      return ClientError("ERR DUMP does not support frames");
  }
  return Status::Corruption("a value of unknown type " + std::to_string(v.type()));
}

namespace {

void PutLe(std::string* out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; i++) out->push_back(static_cast<char>(v >> (8 * i)));
}

uint64_t GetLe(std::string_view in, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; i++) v |= uint64_t{static_cast<uint8_t>(in[at + i])} << (8 * i);
  return v;
}

// A sketch read from a payload, its memory checked before it is allocated: the payload's own
// size for the sketches whose bytes hold every counter (Parse refuses a size that does not
// match), the registers for a HyperLogLog (a sparse one is small on the wire).
template <typename T>
Result<ValuePtr> RestoreCell(const ValueBuild& b, std::string_view key, uint16_t type,
                             std::string_view body, int64_t expire_at_ms) {
  // A HyperLogLog's registers were reserved by RestoreValue; its payload may be far smaller.
  if constexpr (!std::is_same_v<T, HyperLogLog>) {
    FLOE_RETURN_IF_ERROR(CheckAllocation(b.engine, b.reserved, body.size()));
  }
  Result<T> object = [&] {
    if constexpr (std::is_same_v<T, HyperLogLog>) {
      // RestoreValue bounded the registers (proto-max-bulk-len, maxmemory).
      return HyperLogLog::Parse(body, static_cast<uint64_t>(b.engine.proto_max_bulk_len()));
    } else {
      return T::Parse(body);
    }
  }();
  if (!object.ok()) return ClientError("ERR Bad data format");
  return MakeCellValue(b.account, key, type, std::move(object).value(), expire_at_ms);
}

}  // namespace

Result<ValuePtr> BuildValue(const ValueBuild& b, std::string_view key, uint16_t type,
                            std::string_view body, int64_t expire_at_ms) {
  switch (static_cast<ValueType>(type)) {
    case ValueType::kString:
      if (body.size() > static_cast<uint64_t>(b.engine.proto_max_bulk_len())) {
        return ClientError("ERR string exceeds maximum allowed size");
      }
      FLOE_RETURN_IF_ERROR(CheckAllocation(b.engine, b.reserved, body.size()));
      return MakeString(key, body, expire_at_ms);
    case ValueType::kHll: {
      if (body.size() < 3) return ClientError("ERR Bad data format");
      // The header's log2m (byte 1, low 5 bits) sizes the registers; checked as HLL.IMPORT does.
      sketch::HllParams p;
      p.log2m = static_cast<uint8_t>(body[1]) & 0x1f;
      const uint64_t registers = HyperLogLog::RegisterBytes(p);
      if (registers > static_cast<uint64_t>(b.engine.proto_max_bulk_len())) {
        return ClientError("ERR log2m " + std::to_string(p.log2m) +
                           " needs more register bytes than proto-max-bulk-len");
      }
      FLOE_RETURN_IF_ERROR(CheckAllocation(b.engine, b.reserved, registers));
      return RestoreCell<HyperLogLog>(b, key, type, body, expire_at_ms);
    }
    case ValueType::kCountMin:
      return RestoreCell<CountMin>(b, key, type, body, expire_at_ms);
    case ValueType::kRangeCountMin:
      return RestoreCell<RangeCountMin>(b, key, type, body, expire_at_ms);
    case ValueType::kBloom:
      return RestoreCell<BloomFilter>(b, key, type, body, expire_at_ms);
    case ValueType::kFrame:  // never made by DUMP
      break;
  }
  return ClientError("ERR Bad data format");
}

std::string DumpPayload(std::string body, uint16_t type) {
  std::string out = std::move(body);  // framed in place: a large value is not copied again
  PutLe(&out, type, 2);
  PutLe(&out, kDumpVersion, 2);
  PutLe(&out, wire::Crc32c(out), 4);
  return out;
}

Result<std::pair<uint16_t, std::string_view>> ParseDumpPayload(std::string_view payload) {
  if (payload.size() < kTrailerBytes) {
    return ClientError("ERR DUMP payload version or checksum are wrong");
  }
  const size_t crc_at = payload.size() - 4;
  const uint64_t version = GetLe(payload, crc_at - 2, 2);
  const uint64_t crc = GetLe(payload, crc_at, 4);
  if (version != kDumpVersion || crc != wire::Crc32c(payload.substr(0, crc_at))) {
    return ClientError("ERR DUMP payload version or checksum are wrong");
  }
  const uint16_t type = static_cast<uint16_t>(GetLe(payload, crc_at - 4, 2));
  return std::make_pair(type, payload.substr(0, payload.size() - kTrailerBytes));
}

void CmdDump(CommandContext& ctx) {
  ValuePtr v = Lookup(ctx, ctx.args[1]);
  if (!v) return ctx.out.Null();
  // The payload is a copy of the value on top of the reply's: charged to maxmemory before it is
  // made, so concurrent DUMPs of a large value cannot take the node far past its limit.
  const size_t held = v->decoded() != nullptr ? v->decoded()->HeldBytes() : v->payload().size();
  if (Status room = CheckAllocation(ctx, held); !room.ok()) return ctx.Error(room);
  Result<std::string> body = DumpBody(*v);
  if (!body.ok()) return ctx.Error(body.status());
  ctx.out.Bulk(DumpPayload(std::move(body).value(), v->type()));
}

void CmdRestore(CommandContext& ctx) {
  bool replace = false, absttl = false, idle = false, freq = false;
  for (size_t j = 4; j < ctx.args.size(); j++) {
    const std::string_view opt = ctx.args[j];
    const bool more = j + 1 < ctx.args.size();
    int64_t n = 0;
    if (EqualsIgnoreCase(opt, "REPLACE")) {
      replace = true;
    } else if (EqualsIgnoreCase(opt, "ABSTTL")) {
      absttl = true;
    } else if (EqualsIgnoreCase(opt, "IDLETIME") && more && !freq) {
      // Floe evicts nothing (maxmemory-policy noeviction): the hints are checked, then unused.
      if (!ParseInt64(ctx.args[++j], &n)) return ctx.NotInteger();
      if (n < 0) return ctx.Error("ERR Invalid IDLETIME value, must be >= 0");
      idle = true;
    } else if (EqualsIgnoreCase(opt, "FREQ") && more && !idle) {
      if (!ParseInt64(ctx.args[++j], &n)) return ctx.NotInteger();
      if (n < 0 || n > 255) return ctx.Error("ERR Invalid FREQ value, must be >= 0 and <= 255");
      freq = true;
    } else {
      return ctx.SyntaxError();
    }
  }
  const std::string_view key = ctx.args[1];
  if (!replace && Lookup(ctx, key, /*count_stats=*/false)) {
    return ctx.Error("BUSYKEY Target key name already exists.");
  }
  int64_t ttl = 0;
  if (!ParseInt64(ctx.args[2], &ttl)) return ctx.NotInteger();
  if (ttl < 0) return ctx.Error("ERR Invalid TTL value, must be >= 0");
  Result<std::pair<uint16_t, std::string_view>> parsed = ParseDumpPayload(ctx.args[3]);
  if (!parsed.ok()) return ctx.Error(parsed.status());
  int64_t expire_at_ms = ttl;
  if (ttl != 0 && !absttl && __builtin_add_overflow(ttl, ctx.now_ms, &expire_at_ms)) {
    return ctx.Error("ERR invalid expire time in 'restore' command");
  }
  const bool expired = expire_at_ms != 0 && expire_at_ms <= ctx.now_ms;
  // Decoded even when it is already expired, as Redis does: a bad body is refused, and changes
  // nothing, whatever its TTL.
  Result<ValuePtr> made = BuildValue({ctx.engine, ctx.store().memory_account(), ctx.reserved}, key,
                                     parsed->first, parsed->second, expire_at_ms);
  if (!made.ok()) return ctx.Error(made.status());
  // Atomic with the BUSYKEY check: a key created meanwhile by another client is refused too.
  bool busy = false;
  Result<ValuePtr> r = ctx.store().Update(key, [&](const Value* cur) -> Result<Mutation> {
    busy = !replace && Live(cur, ctx.now_ms) != nullptr;
    if (busy) return Mutation::Keep();
    // Already expired (an ABSTTL in the past): nothing is created, and REPLACE removes the key.
    if (expired) return cur != nullptr ? Mutation::Remove() : Mutation::Keep();
    return Mutation::Put(*made);
  });
  if (!r.ok()) return ctx.Error(r.status());
  if (busy) return ctx.Error("BUSYKEY Target key name already exists.");
  ctx.out.Ok();
}

}  // namespace floe::server::internal
