// Reading a server's directory without running a server (docs/consensus.md, "Reading a
// directory"): raft_uv's own loader on a loop of our own, so the on-disk layout stays raft's.

#include <filesystem>

#include "consensus/consensus.h"
#include "consensus/internal/fsm.h"
#include "consensus/internal/transport.h"

extern "C" {
#include <raft.h>
#include <raft/uv.h>
}

#include <uv.h>

namespace floe::consensus {

namespace {

// Frees what raft_io's load handed out.
void FreeLoaded(struct raft_snapshot* snapshot, struct raft_entry* entries, size_t n) {
  if (snapshot != nullptr) {
    raft_configuration_close(&snapshot->configuration);
    for (unsigned i = 0; i < snapshot->n_bufs; i++) raft_free(snapshot->bufs[i].base);
    raft_free(snapshot->bufs);
    raft_free(snapshot);
  }
  if (entries != nullptr) {
    void* batch = nullptr;
    for (size_t i = 0; i < n; i++) {
      if (entries[i].batch == nullptr) {
        raft_free(entries[i].buf.base);
      } else if (entries[i].batch != batch) {
        batch = entries[i].batch;
        raft_free(batch);
      }
    }
    raft_free(entries);
  }
}

}  // namespace

Result<StoredLog> ReadStoredLog(const Options& options) {
  FLOE_RETURN_IF_ERROR(Validate(options));
  std::error_code ec;
  bool any = false;
  for (const auto& e : std::filesystem::directory_iterator(options.dir, ec)) {
    const std::string name = e.path().filename().string();
    any = any || name.starts_with("metadata") || name.starts_with("open-") ||
          name.starts_with("snapshot-") || (!name.empty() && name[0] >= '0' && name[0] <= '9');
  }
  if (ec || !any) return Status::NotFound("no log in " + options.dir);

  uv_loop_t loop;
  if (int rv = uv_loop_init(&loop); rv != 0) {
    return Status::Unavailable(std::string("uv_loop_init: ") + uv_strerror(rv));
  }
  struct raft_uv_transport transport {};
  struct raft_io io {};
  Status st;
  StoredLog out;
  std::atomic<uint64_t> refused{0};
  if (int rv = internal::InitTransport(&transport, &loop, options.mac, &refused); rv != 0) {
    uv_loop_close(&loop);
    return Status::Unavailable(std::string("transport: ") + raft_strerror(rv));
  }
  if (int rv = raft_uv_init(&io, &loop, options.dir.c_str(), &transport); rv != 0) {
    st = Status::Unavailable("raft_uv_init " + options.dir + ": " + io.errmsg);
    internal::ReleaseTransport(&transport);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return st;
  }
  bool initialized = false;
  if (int rv = io.init(&io, options.id, options.address.c_str()); rv != 0) {
    st = Status::Unavailable("reading " + options.dir + ": " + io.errmsg);
  } else {
    initialized = true;
    raft_term term = 0;
    raft_id voted_for = 0;
    struct raft_snapshot* snapshot = nullptr;
    raft_index start = 0;
    struct raft_entry* entries = nullptr;
    size_t n = 0;
    if (io.load(&io, &term, &voted_for, &snapshot, &start, &entries, &n) != 0) {
      st = Status::Unavailable("reading " + options.dir + ": " + io.errmsg);
    } else {
      if (snapshot != nullptr) {
        std::string whole;
        for (unsigned i = 0; i < snapshot->n_bufs; i++) {
          whole.append(static_cast<const char*>(snapshot->bufs[i].base), snapshot->bufs[i].len);
        }
        std::string_view bytes;
        if (!internal::Unframe(whole, &bytes) || bytes.empty() ||
            bytes[0] != internal::kSnapshotFormat) {
          st = Status::Corruption("a snapshot in " + options.dir + " is not this module's");
        } else {
          out.snapshot_index = snapshot->index;
          out.snapshot.assign(bytes.substr(1));
        }
      }
      for (size_t i = 0; st.ok() && i < n; i++) {
        if (entries[i].type != RAFT_COMMAND) continue;
        std::string_view bytes;
        if (!internal::Unframe(
                std::string_view(static_cast<const char*>(entries[i].buf.base), entries[i].buf.len),
                &bytes)) {
          st = Status::Corruption("entry " + std::to_string(start + i) + " in " + options.dir +
                                  " is not framed");
          break;
        }
        out.entries.emplace_back(start + i, std::string(bytes));
      }
      FreeLoaded(snapshot, entries, n);
    }
  }
  if (initialized) {
    bool closed = false;
    io.data = &closed;
    io.close(&io, [](struct raft_io* closing) { *static_cast<bool*>(closing->data) = true; });
    while (!closed && uv_run(&loop, UV_RUN_ONCE) != 0) {
    }
  }
  raft_uv_close(&io);
  internal::ReleaseTransport(&transport);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  if (!st.ok()) return st;
  return out;
}

}  // namespace floe::consensus
