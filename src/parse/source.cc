// Loading a parse's sources (internal/source.h): files read, never mapped, and gzip inflated
// within the input limits, the gzip ratio and the caller's memory check.

#include "parse/internal/source.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace floe::parse::internal {

bool ReadBuffer::Allocate(size_t size) {
  Reset();
  // Not advised into huge pages: where transparent huge pages defragment on demand for advised
  // ranges (defrag=madvise, a common default), a fault there compacts memory synchronously, and
  // imports stalled by hundreds of milliseconds (docs/frame.md).
  void* p = mmap(nullptr, std::max<size_t>(size, 1), PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return false;
  data_ = static_cast<char*>(p);
  mapped_ = std::max<size_t>(size, 1);
  return true;
}

void ReadBuffer::Reset() {
  if (data_ != nullptr) munmap(data_, mapped_);
  data_ = nullptr;
  mapped_ = 0;
}

namespace {

// MADV_POPULATE_WRITE (Linux 5.14): the pages of [p, p + size) are allocated in one call, not
// one fault at a time as pread's copy first touches each (a fault each 4 KiB of fresh memory:
// ~66,000 for the import benchmark's file). Best effort: an older kernel refuses it and the
// read faults the pages in as before.
void PopulateForWrite(char* p, size_t size) {
  static constexpr int kPopulateWrite = 23;  // MADV_POPULATE_WRITE, not in older headers
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(p) / page * page;
  const uintptr_t end = reinterpret_cast<uintptr_t>(p) + size;
  if (size > 0) madvise(reinterpret_cast<void*>(begin), end - begin, kPopulateWrite);
}

}  // namespace

bool IsGzip(std::string_view s) { return s.size() >= 2 && s[0] == '\x1f' && s[1] == '\x8b'; }

// Inflates every gzip member of `in`, refusing to pass `limit` bytes of output; checks `cancel`
// every MiB of output, and asks `may_hold` (when set) before each MiB it adds.
Result<std::string> Inflate(std::string_view in, uint64_t limit, const std::atomic<bool>* cancel,
                            const std::function<bool(uint64_t)>& may_hold) {
  std::string out;
  // The last member's trailer gives its size (mod 2^32): reserved at once, with a MiB to spare
  // for the call that meets the end, so a file of one member never grows geometrically.
  if (in.size() >= 18) {
    const auto* t = reinterpret_cast<const unsigned char*>(in.data() + in.size() - 4);
    const uint64_t isize =
        uint64_t{t[0]} | uint64_t{t[1]} << 8 | uint64_t{t[2]} << 16 | uint64_t{t[3]} << 24;
    const uint64_t hint = std::min<uint64_t>(limit, isize + (1u << 20));
    if (may_hold && !may_hold(hint)) {
      return Status::ResourceExhausted("the inflated input does not fit in memory");
    }
    out.reserve(static_cast<size_t>(hint));
  }
  z_stream zs{};
  if (inflateInit2(&zs, 15 + 16) != Z_OK) return Status::Internal("zlib init failed");
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = 0;
  size_t fed = 0;
  Status status;
  for (;;) {
    if (zs.avail_in == 0 && fed < in.size()) {
      const size_t n = std::min<size_t>(in.size() - fed, 1u << 30);
      zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data() + fed));
      zs.avail_in = static_cast<uInt>(n);
      fed += n;
    }
    if (out.size() >= limit) {
      status = Status::ResourceExhausted("gzip input inflates past the limit");
      break;
    }
    if (cancel != nullptr && cancel->load(std::memory_order_relaxed)) {
      status = Status::Cancelled("parse cancelled");
      break;
    }
    const size_t room = static_cast<size_t>(std::min<uint64_t>(limit - out.size(), 1u << 20));
    if (out.size() + room > out.capacity()) {
      // Grown geometrically, and asked for first as what the growth holds at its peak: the old
      // buffer and the new one together.
      const auto next = static_cast<size_t>(std::min<uint64_t>(
          limit, std::max<uint64_t>(uint64_t{out.capacity()} * 2, out.size() + room)));
      if (may_hold && !may_hold(uint64_t{out.capacity()} + next)) {
        status = Status::ResourceExhausted("the inflated input does not fit in memory");
        break;
      }
      out.reserve(next);
    }
    const size_t before = out.size();
    out.resize(before + room);
    zs.next_out = reinterpret_cast<Bytef*>(out.data() + before);
    zs.avail_out = static_cast<uInt>(room);
    const int rc = inflate(&zs, Z_NO_FLUSH);
    out.resize(before + (room - zs.avail_out));
    if (rc == Z_STREAM_END) {
      // Another member may follow (concatenated gzip files are one stream).
      const size_t left = zs.avail_in + (in.size() - fed);
      if (left == 0) break;
      if (!IsGzip(in.substr(in.size() - left))) {  // not dropped in silence
        status = Status::Corruption("bytes after the gzip stream");
        break;
      }
      if (inflateReset(&zs) != Z_OK) {
        status = Status::Corruption("gzip member reset failed");
        break;
      }
      continue;
    }
    if (rc == Z_BUF_ERROR && zs.avail_in == 0 && fed == in.size()) {
      status = Status::Corruption("gzip input truncated");
      break;
    }
    if (rc != Z_OK && rc != Z_BUF_ERROR) {
      status = Status::Corruption(std::string("gzip: ") + (zs.msg ? zs.msg : "bad data"));
      break;
    }
  }
  inflateEnd(&zs);
  if (!status.ok()) return status;
  return out;
}

// One slice a thread, each at least min_slice, so the copy and the first touch of the buffer's
// pages (a fault each, in 4 KiB pages: 115 ms of one thread for the 270 MB benchmark file; far
// fewer in ReadBuffer's huge pages) are shared by the parse's threads.
Result<size_t> ReadSlices(int fd, char* out, size_t size, uint32_t threads,
                          const std::atomic<bool>* cancel, size_t min_slice) {
  const size_t slices =
      std::clamp<size_t>(size / std::max<size_t>(min_slice, 1), 1, std::max<uint32_t>(threads, 1));
  struct Slice {
    size_t begin = 0, end = 0, got = 0;
    int error = 0;
    bool cancelled = false;
  };
  std::vector<Slice> parts(slices);
  for (size_t i = 0; i < slices; i++) {
    parts[i].begin = size / slices * i;
    parts[i].end = i + 1 == slices ? size : size / slices * (i + 1);
  }
  auto read_slice = [&](Slice* part) {
    for (size_t at = part->begin; at < part->end;) {
      if (cancel != nullptr && cancel->load(std::memory_order_relaxed)) {
        part->cancelled = true;
        return;
      }
      const size_t want = std::min<size_t>(part->end - at, 8u << 20);
      PopulateForWrite(out + at, want);
      const ssize_t n = pread(fd, out + at, want, static_cast<off_t>(at));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        part->error = errno;
        return;
      }
      if (n == 0) return;  // it shrank since fstat
      at += static_cast<size_t>(n);
      part->got += static_cast<size_t>(n);
    }
  };
  std::vector<std::thread> workers;
  std::vector<size_t> here{0};  // slices read on this thread: the first, and any refused one
  for (size_t i = 1; i < slices; i++) {
    Result<std::thread> t = StartThread([&read_slice, &parts, i] { read_slice(&parts[i]); });
    if (t.ok()) {
      workers.push_back(std::move(*t));
    } else {
      here.push_back(i);
    }
  }
  for (const size_t i : here) read_slice(&parts[i]);
  for (std::thread& t : workers) t.join();
  size_t got = 0;
  for (const Slice& part : parts) {
    if (part.cancelled) return Status::Cancelled("parse cancelled");
    if (part.error != 0)
      return Status::Internal(std::string("read failed: ") + std::strerror(part.error));
  }
  for (const Slice& part : parts) {
    got += part.got;
    if (part.begin + part.got < part.end) break;
  }
  return got;
}

namespace {
int64_t MtimeNs(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}
}  // namespace

Status CheckUnchanged(int fd, const std::string& path, uint64_t size_then, int64_t mtime_ns_then,
                      size_t got) {
  struct stat st {};
  if (fstat(fd, &st) != 0) return Status::Internal(path + ": " + std::strerror(errno));
  const auto size_now = static_cast<uint64_t>(st.st_size);
  if (got == size_then && size_now == size_then && MtimeNs(st) == mtime_ns_then) {
    return Status::OK();
  }
  return Status::Aborted(path + ": changed while it was read (" + std::to_string(size_then) +
                         " bytes when opened, " + std::to_string(size_now) +
                         " now): not imported; import it again once it is complete");
}

Status LoadFile(const ParseLimits& limits, uint32_t threads, const std::atomic<bool>* cancel,
                const std::function<bool(uint64_t)>& may_hold, Source* src) {
  src->loaded = true;
  const std::string& path = src->name;
  // No link followed, no wait on a FIFO: the descriptor is checked (fstat) before it is read.
  const int fd =
      openat(src->dir_fd, src->open_name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ELOOP) return Status::InvalidArgument(path + ": a symbolic link, not read");
    return Status::NotFound(path + ": " + std::strerror(errno));
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return Status::InvalidArgument(path + ": not a regular file");
  }
  const auto size = static_cast<size_t>(st.st_size);
  if (size > limits.max_input_bytes) {
    close(fd);
    return Status::ResourceExhausted(path + ": larger than the input limit");
  }
  if (size > 0) {
    if (!src->read.Allocate(size)) {
      close(fd);
      return Status::ResourceExhausted(path + ": not enough memory to read it");
    }
    Result<size_t> got = ReadSlices(fd, src->read.data(), size, threads, cancel);
    if (!got.ok()) {
      close(fd);
      if (got.status().code() == StatusCode::kCancelled) return got.status();
      return Status::Internal(path + ": " + std::string(got.status().message()));
    }
    src->bytes = std::string_view(src->read.data(), *got);
  }
  if (Status same = CheckUnchanged(fd, path, size, MtimeNs(st), src->bytes.size()); !same.ok()) {
    close(fd);
    return same;
  }
  close(fd);
  if (IsGzip(src->bytes)) {
    // A gzip bomb (a few MB inflating to tens of GiB) is refused at a ratio no CSV reaches
    // (ParseLimits::max_gzip_ratio, with its floor for small files).
    const uint64_t compressed = src->bytes.size();
    const uint64_t ratio_cap =
        std::max<uint64_t>(limits.gzip_ratio_floor_bytes,
                           compressed > UINT64_MAX / std::max<uint64_t>(limits.max_gzip_ratio, 1)
                               ? UINT64_MAX
                               : compressed * limits.max_gzip_ratio);
    const uint64_t limit = limits.max_input_bytes;
    FLOE_ASSIGN_OR_RETURN(src->owned,
                          Inflate(src->bytes, std::min(limit, ratio_cap), cancel, may_hold));
    src->bytes = src->owned;
    src->read.Reset();  // the compressed bytes
  } else if (src->bytes.size() > limits.max_input_bytes) {
    return Status::ResourceExhausted(path + ": larger than the input limit");
  }
  return Status::OK();
}

}  // namespace floe::parse::internal
