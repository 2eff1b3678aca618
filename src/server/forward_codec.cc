// The forwarded-command codec (docs/wire.md, "Forwarded commands"): its own file so that its
// fuzz target (fuzz/forward_fuzz.cc) compiles it alone.

#include "server/internal/cluster_node.h"
#include "wire/wire.h"

namespace floe::server::internal {

bool ForwardFits(const std::vector<std::vector<std::string>>& commands) {
  if (commands.empty() || commands.size() > kMaxForwardCommands) return false;
  uint64_t args = 0;
  for (const auto& c : commands) {
    if (c.empty()) return false;
    args += c.size();
  }
  return args <= kMaxForwardArgs;
}

std::string EncodeForward(const ForwardRequest& request) {
  std::string out;
  wire::Writer w(&out);
  w.PutFixed64(request.origin);
  w.PutVarint64(request.client);
  w.PutVarint64(request.seq);
  w.PutVarint64(request.sent_us);
  w.PutU8(request.protocol);
  w.PutU8((request.watching ? 1 : 0) | (request.copies.empty() ? 0 : 2) |
          (request.continues.empty() ? 0 : 4));
  w.PutVarint64(request.commands.size());
  for (const auto& command : request.commands) {
    w.PutVarint64(command.size());
    for (const std::string& arg : command) w.PutLengthPrefixed(arg);
  }
  if (!request.copies.empty()) {
    w.PutVarint64(request.copies.size());
    for (uint32_t i : request.copies) w.PutVarint64(i);
  }
  if (!request.continues.empty()) {
    w.PutVarint64(request.continues.size());
    for (uint32_t i : request.continues) w.PutVarint64(i);
  }
  return out;
}

Result<ForwardRequest> DecodeForward(std::string_view bytes) {
  wire::Reader r(bytes);
  ForwardRequest req;
  uint64_t n = 0;
  FLOE_RETURN_IF_ERROR(r.GetFixed64(&req.origin));
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&req.client));
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&req.seq));
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&req.sent_us));
  uint8_t flags = 0;
  FLOE_RETURN_IF_ERROR(r.GetU8(&req.protocol));
  FLOE_RETURN_IF_ERROR(r.GetU8(&flags));
  FLOE_RETURN_IF_ERROR(r.GetVarint64(&n));
  if (req.protocol != 2 && req.protocol != 3) return Status::Corruption("forward: bad protocol");
  if ((flags & ~7u) != 0) return Status::Corruption("forward: unknown flags");
  req.watching = (flags & 1) != 0;
  // Each command takes at least two bytes, so a count beyond that is a lie: checked before
  // anything is sized by it.
  if (n == 0 || n > kMaxForwardCommands || n > r.remaining() / 2) {
    return Status::Corruption("forward: command count out of range");
  }
  req.commands.resize(n);
  uint64_t total_args = 0;
  for (auto& command : req.commands) {
    uint64_t argc = 0;
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&argc));
    total_args += argc;
    if (argc == 0 || total_args > kMaxForwardArgs || argc > r.remaining()) {
      return Status::Corruption("forward: argument count out of range");
    }
    command.reserve(argc);
    for (uint64_t i = 0; i < argc; i++) {
      std::string_view arg;
      // An argument is as large as the client may send (proto-max-bulk-len, up to 4 GiB), not
      // wire's default cap: the bytes it claims must be there, which bounds it.
      FLOE_RETURN_IF_ERROR(r.GetLengthPrefixed(&arg, r.remaining()));
      command.emplace_back(arg);
    }
  }
  if ((flags & 2) != 0) {
    uint64_t m = 0;
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&m));
    // Strictly increasing indices of commands: at most one per command, each a byte at least.
    if (m == 0 || m > n || m > r.remaining()) {
      return Status::Corruption("forward: copy count out of range");
    }
    req.copies.reserve(m);
    for (uint64_t j = 0; j < m; j++) {
      uint64_t i = 0;
      FLOE_RETURN_IF_ERROR(r.GetVarint64(&i));
      if (i >= n || (!req.copies.empty() && i <= req.copies.back())) {
        return Status::Corruption("forward: copy index out of order or range");
      }
      req.copies.push_back(static_cast<uint32_t>(i));
    }
  }
  if ((flags & 4) != 0) {
    uint64_t k = 0;
    FLOE_RETURN_IF_ERROR(r.GetVarint64(&k));
    // Strictly increasing indices from 1: fewer than the commands, each a byte at least.
    if (k == 0 || k >= n || k > r.remaining()) {
      return Status::Corruption("forward: continuation count out of range");
    }
    req.continues.reserve(k);
    for (uint64_t j = 0; j < k; j++) {
      uint64_t i = 0;
      FLOE_RETURN_IF_ERROR(r.GetVarint64(&i));
      if (i == 0 || i >= n || (!req.continues.empty() && i <= req.continues.back())) {
        return Status::Corruption("forward: continuation index out of order or range");
      }
      req.continues.push_back(static_cast<uint32_t>(i));
    }
  }
  if (r.remaining() != 0) return Status::Corruption("forward: trailing bytes");
  return req;
}

void AppendFramedReply(std::string_view reply, std::string* answer) {
  wire::Writer(answer).PutLengthPrefixed(reply);
}

Result<std::vector<std::string>> DecodeFramedReplies(std::string_view answer, size_t n) {
  wire::Reader r(answer);
  std::vector<std::string> out;
  // Each reply takes at least one byte: a count beyond the bytes is refused before sizing.
  if (n > answer.size()) return Status::Corruption("forward answer: too few replies");
  out.reserve(n);
  for (size_t i = 0; i < n; i++) {
    std::string_view one;
    // A reply holds a value as large as the store keeps, with its RESP framing around it.
    FLOE_RETURN_IF_ERROR(r.GetLengthPrefixed(&one, r.remaining()));
    out.emplace_back(one);
  }
  if (r.remaining() != 0) return Status::Corruption("forward answer: trailing bytes");
  return out;
}

std::string EncodeRemoveRequest(const RemoveRequest& request) {
  std::string out;
  wire::Writer w(&out);
  w.PutVarint64(request.id);
  w.PutVarint64(request.forwarded ? 1 : 0);
  return out;
}

Result<RemoveRequest> DecodeRemoveRequest(std::string_view bytes) {
  wire::Reader in(bytes);
  uint64_t id = 0, forwarded = 0;
  if (!in.GetVarint64(&id).ok() || !in.GetVarint64(&forwarded).ok() || !in.empty() ||
      forwarded > 1) {
    return Status::Corruption("not a member removal");
  }
  return RemoveRequest{.id = id, .forwarded = forwarded == 1};
}

std::string EncodeRecordLife(const RecordLifeRequest& request) {
  std::string out;
  wire::Writer w(&out);
  w.PutVarint64(request.id);
  w.PutVarint64(request.life);
  w.PutVarint64(request.forwarded ? 1 : 0);
  return out;
}

Result<RecordLifeRequest> DecodeRecordLife(std::string_view bytes) {
  wire::Reader in(bytes);
  RecordLifeRequest q;
  uint64_t forwarded = 0;
  if (!in.GetVarint64(&q.id).ok() || !in.GetVarint64(&q.life).ok() ||
      !in.GetVarint64(&forwarded).ok() || !in.empty() || forwarded > 1 || q.id == 0 ||
      q.life == 0) {
    return Status::Corruption("not a life to record");
  }
  q.forwarded = forwarded == 1;
  return q;
}

std::string EncodeLeaseRequest(const LeaseRequest& request) {
  std::string out;
  wire::Writer w(&out);
  w.PutVarint64(request.id);
  w.PutVarint64(request.life);
  w.PutVarint64(request.epoch);
  w.PutVarint64(request.forwarded ? 1 : 0);
  return out;
}

Result<LeaseRequest> DecodeLeaseRequest(std::string_view bytes) {
  wire::Reader in(bytes);
  LeaseRequest q;
  uint64_t forwarded = 0;
  if (!in.GetVarint64(&q.id).ok() || !in.GetVarint64(&q.life).ok() ||
      !in.GetVarint64(&q.epoch).ok() || !in.GetVarint64(&forwarded).ok() || !in.empty() ||
      forwarded > 1 || q.id == 0 || q.life == 0) {
    return Status::Corruption("not a lease request");
  }
  q.forwarded = forwarded == 1;
  return q;
}

std::string EncodeBackupInSync(const BackupInSyncRequest& request) {
  std::string out;
  wire::Writer w(&out);
  w.PutVarint64(request.owner);
  w.PutVarint64(request.life);
  w.PutU8(request.forwarded ? 1 : 0);
  w.PutVarint64(request.items.size());
  for (const InSyncItem& item : request.items) {
    w.PutFixed16(item.slot);
    w.PutVarint64(item.version);
    w.PutVarint64(item.backup);
    w.PutVarint64(item.n);
  }
  return out;
}

Result<BackupInSyncRequest> DecodeBackupInSync(std::string_view bytes) {
  wire::Reader in(bytes);
  BackupInSyncRequest q;
  uint8_t forwarded = 0;
  uint64_t count = 0;
  const Status bad = Status::Corruption("not a request to make backups in sync");
  if (!in.GetVarint64(&q.owner).ok() || !in.GetVarint64(&q.life).ok() ||
      !in.GetU8(&forwarded).ok() || !in.GetVarint64(&count).ok() || forwarded > 1 || q.owner == 0 ||
      q.owner >= cluster::kFirstReservedId || q.life == 0 || count == 0 ||
      count > kMaxInSyncItems || count > in.remaining() / 5) {  // an item takes at least 5 bytes
    return bad;
  }
  q.forwarded = forwarded == 1;
  q.items.resize(count);
  std::vector<bool> seen(cluster::kSlots);
  for (InSyncItem& item : q.items) {
    if (!in.GetFixed16(&item.slot).ok() || !in.GetVarint64(&item.version).ok() ||
        !in.GetVarint64(&item.backup).ok() || !in.GetVarint64(&item.n).ok() ||
        item.slot >= cluster::kSlots || seen[item.slot] || item.backup == 0 ||
        item.backup >= cluster::kFirstReservedId) {
      return bad;
    }
    seen[item.slot] = true;
  }
  if (!in.empty()) return bad;
  return q;
}

std::string EncodeSlotList(const std::vector<uint16_t>& slots) {
  std::string out;
  wire::Writer w(&out);
  w.PutVarint64(slots.size());
  for (uint16_t s : slots) w.PutFixed16(s);
  return out;
}

Result<std::vector<uint16_t>> DecodeSlotList(std::string_view bytes) {
  wire::Reader in(bytes);
  uint64_t count = 0;
  const Status bad = Status::Corruption("not a list of slots");
  if (!in.GetVarint64(&count).ok() || count > kMaxInSyncItems || count > in.remaining() / 2) {
    return bad;
  }
  std::vector<uint16_t> slots(count);
  for (size_t i = 0; i < slots.size(); i++) {
    if (!in.GetFixed16(&slots[i]).ok() || slots[i] >= cluster::kSlots ||
        (i > 0 && slots[i] <= slots[i - 1])) {
      return bad;
    }
  }
  if (!in.empty()) return bad;
  return slots;
}

std::string EncodeRemovedNotice(const RemovedNotice& notice) {
  std::string out;
  wire::Writer w(&out);
  w.PutVarint64(notice.id);
  w.PutVarint64(notice.epoch);
  w.PutFixed64(notice.cluster_id.hi);
  w.PutFixed64(notice.cluster_id.lo);
  return out;
}

Result<RemovedNotice> DecodeRemovedNotice(std::string_view bytes) {
  wire::Reader in(bytes);
  RemovedNotice n;
  if (!in.GetVarint64(&n.id).ok() || !in.GetVarint64(&n.epoch).ok() ||
      !in.GetFixed64(&n.cluster_id.hi).ok() || !in.GetFixed64(&n.cluster_id.lo).ok() ||
      !in.empty()) {
    return Status::Corruption("not a removal notice");
  }
  return n;
}

}  // namespace floe::server::internal
