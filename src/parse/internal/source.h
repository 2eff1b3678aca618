// Loading a parse's sources: a file read (never mapped) or a gzip inflated, within the input
// limits and the caller's memory check. Private to src/parse (parse.cc).

#ifndef FLOE_PARSE_INTERNAL_SOURCE_H_
#define FLOE_PARSE_INTERNAL_SOURCE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "base/base.h"
#include "parse/parse.h"

namespace floe::parse::internal {

// Anonymous memory for a file's bytes as read, unmapped by Reset and the destructor. From 2 MiB
// up it is mapped at a 2 MiB boundary and advised into huge pages (MADV_HUGEPAGE, a hint the
// kernel ignores without transparent huge pages): the first touch of 4 KiB pages, a fault each,
// was ~8% of an import's CPU (270 MB read, 66,000 faults); the same bytes are then a fault a
// 2 MiB page.
class ReadBuffer {
 public:
  ReadBuffer() = default;
  ReadBuffer(const ReadBuffer&) = delete;
  ReadBuffer& operator=(const ReadBuffer&) = delete;
  ~ReadBuffer() { Reset(); }
  // Maps `size` bytes (size > 0), releasing what was mapped before; false when no memory.
  bool Allocate(size_t size);
  void Reset();
  char* data() const { return data_; }

 private:
  char* data_ = nullptr;
  size_t mapped_ = 0;
};

// A file is loaded (read, or inflated) only when its turn comes and released after it, so a
// directory holds one loaded file at a time. Files are read, not mapped: a mapped file that
// another process truncates raises SIGBUS at the next page read, which would end the node.
struct Source {
  std::string name;
  int dir_fd = -1;  // opened as openat(dir_fd, open_name) when its turn comes
  std::string open_name;
  bool loaded = false;
  uint64_t disk_size = 0;  // before loading: what progress counts for it
  std::string_view bytes;
  std::string owned;  // inflated gzip
  ReadBuffer read;    // the file's bytes as read
  Source() = default;
  Source(const Source&) = delete;
  Source& operator=(const Source&) = delete;
  ~Source() { Release(); }
  void Release() {
    read.Reset();
    bytes = {};
    std::string().swap(owned);
  }
};

bool IsGzip(std::string_view s);

// Inflates every gzip member of `in`, refusing to pass `limit` bytes of output; checks `cancel`
// and asks `may_hold` before the output grows (see source.cc).
Result<std::string> Inflate(std::string_view in, uint64_t limit, const std::atomic<bool>* cancel,
                            const std::function<bool(uint64_t)>& may_hold = nullptr);

// Reads `size` bytes of fd from offset 0 into `out`, in slices of at least `min_slice` bytes
// read on up to `threads` threads at once. A file that shrank since its size was taken yields
// the bytes up to the first slice that came short: what it still held (LoadFile then refuses it:
// CheckUnchanged). Cancelled when `cancel`
// is set (checked every 8 MiB of each slice).
Result<size_t> ReadSlices(int fd, char* out, size_t size, uint32_t threads,
                          const std::atomic<bool>* cancel, size_t min_slice = size_t{16} << 20);

// After a file was read: Aborted, naming `path` and both sizes, when it is not what it was when
// opened (`got` bytes read of `size_then`, or fd's size or modification time now differ from
// `size_then` and `mtime_ns_then`), so a file written while it was read is never imported cut.
Status CheckUnchanged(int fd, const std::string& path, uint64_t size_then, int64_t mtime_ns_then,
                      size_t got);

// Reads src's file (openat(dir_fd, open_name)) on up to `threads` threads, inflating it when it
// is gzip, within `limits`.
Status LoadFile(const ParseLimits& limits, uint32_t threads, const std::atomic<bool>* cancel,
                const std::function<bool(uint64_t)>& may_hold, Source* src);

}  // namespace floe::parse::internal

#endif  // FLOE_PARSE_INTERNAL_SOURCE_H_
