// CSV import from files: gzip (from bytes and files, the inflation bound), files truncated while
// parsed, many files, and directories (name order, no links or FIFOs followed).

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "parse/internal/csv.h"
#include "parse/internal/source.h"
#include "parse/parse.h"
#include "parse/parse_test_support.h"
#include "testing/gzip.h"

namespace floe::parse {
namespace {

using frame::ColumnType;
using namespace test_support;  // NOLINT: the tests' shared helpers
using testing::Gzip;

TEST(ParseTest, GzipRoundTripFromBytesAndFiles) {
  const std::string text = RandomCsv(7, 500);
  const std::string expected = Dump(Parse(text, Threads(2)));
  const std::string gz = Gzip(text);
  EXPECT_EQ(expected, Dump(Parse(gz, Threads(2))));
  // Two members concatenated are one stream.
  const std::string half = text.substr(0, text.find('\n', text.size() / 2) + 1);
  EXPECT_EQ(expected, Dump(Parse(Gzip(half) + Gzip(text.substr(half.size())), Threads(2))));
  TempDir dir;
  const Result<ParseResult> file = ParseFile(dir.Write("t.csv.gz", gz), Threads(2));
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ(expected, Dump(*file));
  // Truncated or corrupt gzip is an error, and a bomb stops at the limit.
  EXPECT_EQ(ParseBytes(gz.substr(0, gz.size() / 2)).status().code(), StatusCode::kCorruption);
  EXPECT_EQ(ParseBytes(gz + "1,2\n").status().code(), StatusCode::kCorruption);
  ParseOptions small;
  small.limits.max_input_bytes = 1000;
  EXPECT_EQ(ParseBytes(gz, small).status().code(), StatusCode::kResourceExhausted);
}

// A gzip bomb: a few MB of gzip could inflate to tens of GiB under the input limit (64 GiB)
// before any memory check. A file inflating past max_gzip_ratio times its size (and past the
// floor) is refused.
TEST(ParseTest, AGzipFileInflatingPastTheRatioIsRefused) {
  std::string text = "v\n";
  for (int i = 0; i < (1 << 20); i++) text += "1\n";  // 2 MiB that gzip takes to a few KiB
  const std::string gz = Gzip(text);
  ASSERT_LT(gz.size() * 100, text.size());
  TempDir dir;
  const std::string path = dir.Write("bomb.csv.gz", gz);
  ParseOptions strict = Threads(2);
  strict.limits.max_gzip_ratio = 10;
  strict.limits.gzip_ratio_floor_bytes = 64 << 10;
  EXPECT_EQ(ParseFile(path, strict).status().code(), StatusCode::kResourceExhausted);
  // Under the default ratio the same file is an ordinary CSV.
  const Result<ParseResult> ok = ParseFile(path, Threads(2));
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->frame.rows(), uint64_t{1} << 20);
}

// A gzip input was inflated whole before anything charged it (a 1 MB file inflating to 1 GiB
// reached 1.6 GB RSS under maxmemory 200mb): the parse now asks before each MiB it inflates.
TEST(ParseTest, InflatedInputIsAskedForBeforeItGrows) {
  std::string text = "v\n";
  for (int i = 0; i < (4 << 20); i++) text += "1\n";  // 8 MiB
  TempDir dir;
  dir.Write("a.csv.gz", Gzip(text));
  dir.Write("b.csv.gz", Gzip(text));
  // Each file asks for its trailer's size and a MiB (about 9 MiB) before it inflates: the
  // first fits in 12 MiB, the second (counted with the first, about 17 MiB) does not.
  constexpr uint64_t kBudget = 12 << 20;
  uint64_t refused_at = 0;
  ParseControl control;
  control.may_hold = [&](uint64_t bytes) {
    if (bytes <= kBudget) return true;
    if (refused_at == 0) refused_at = bytes;
    return false;
  };
  const Result<ParseResult> r = ParseFile(dir.path(), Threads(2), control);
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted) << r.status().ToString();
  EXPECT_GE(refused_at, uint64_t{16} << 20);  // both files counted
  // A trailer that understates the size (a bomb's, or a second member's) is no way around it:
  // past its reservation the buffer grows geometrically, each growth asked for first at its
  // peak (the old buffer and the new one together).
  std::string lying = Gzip(text);
  std::memset(lying.data() + lying.size() - 4, 0, 4);  // ISIZE 0
  TempDir other;
  other.Write("c.csv.gz", lying);
  std::vector<uint64_t> asked;
  ParseControl counting;
  counting.may_hold = [&](uint64_t bytes) {
    asked.push_back(bytes);
    return true;
  };
  ParseOptions lone = Threads(2);
  EXPECT_FALSE(
      ParseFile(other.path() + "/c.csv.gz", lone, counting).ok());  // its length check fails
  ASSERT_GE(asked.size(), 4u);
  EXPECT_EQ(asked[0], uint64_t{1} << 20);
  for (size_t i = 1; i < asked.size(); i++) EXPECT_GT(asked[i], asked[i - 1]);
  EXPECT_GE(asked.back(), (uint64_t{8} << 20) + (uint64_t{16} << 20));
  // Asked, and allowed: the same files parse.
  control.may_hold = [](uint64_t) { return true; };
  const Result<ParseResult> ok = ParseFile(dir.path(), Threads(2), control);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->frame.rows(), uint64_t{8} << 20);
}

// A file was mapped: truncated by another process while parsed, the next page read raised
// SIGBUS and ended the node. It is read now, so the parse sees the bytes it read.
TEST(ParseTest, AFileTruncatedWhileParsedDoesNotEndTheProcess) {
  std::string text = "a,b\n";
  for (int i = 0; i < 2'000'000; i++)
    text += std::to_string(i) + "," + std::to_string(i * 7) + "\n";
  TempDir dir;
  const std::string path = dir.Write("t.csv", text);
  ParseControl control;
  control.progress_interval = std::chrono::milliseconds(0);
  bool truncated = false;
  control.progress = [&](const ParseProgress&) {
    if (!truncated) truncated = truncate(path.c_str(), 0) == 0;
  };
  ParseOptions options = Threads(2);
  options.min_range_bytes = 1 << 16;
  const Result<ParseResult> r = ParseFile(path, options, control);
  ASSERT_TRUE(truncated);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->frame.rows(), 2'000'000u);
}

// Every file ends a chunk of every column: 300 one-row files of 10,000 columns held 2 GB.
// A file is read in slices on the parse's threads: every slice count gives the file's bytes, and
// a file shorter than the size asked (it shrank since fstat) gives its bytes up to the first
// slice that came short, never a hole.
TEST(ParseTest, AFileReadInSlicesIsTheWholeFile) {
  const std::string path = ::testing::TempDir() + "/floe_slices.bin";
  std::string data(1 << 20, '\0');
  std::mt19937_64 rng(7);
  for (char& ch : data) ch = static_cast<char>(rng());
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
  }
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  for (const uint32_t threads : {1u, 2u, 3u, 7u}) {
    for (const size_t min_slice : {size_t{1} << 12, size_t{100000}, size_t{1} << 30}) {
      std::string got(data.size(), 'x');
      Result<size_t> n =
          internal::ReadSlices(fd, got.data(), got.size(), threads, nullptr, min_slice);
      ASSERT_TRUE(n.ok()) << n.status().ToString();
      EXPECT_EQ(*n, data.size()) << threads << " " << min_slice;
      EXPECT_TRUE(got == data) << threads << " " << min_slice;
    }
    // Asked for 1.5x the file: the slices past its end come back empty.
    std::string got(data.size() * 3 / 2, 'x');
    Result<size_t> n = internal::ReadSlices(fd, got.data(), got.size(), threads, nullptr, 4096);
    ASSERT_TRUE(n.ok());
    EXPECT_EQ(*n, data.size()) << threads;
    EXPECT_EQ(got.substr(0, data.size()), data);
  }
  std::atomic<bool> cancel{true};
  std::string got(data.size(), 'x');
  EXPECT_EQ(internal::ReadSlices(fd, got.data(), got.size(), 2, &cancel, 4096).status().code(),
            StatusCode::kCancelled);
  close(fd);
  std::remove(path.c_str());
}

// A file written while it was read is refused, never imported cut: its size or modification
// time after the read differ from the open's, or the read came short.
TEST(ParseTest, AFileThatChangedWhileReadIsRefusedNamingBothSizes) {
  TempDir dir;
  const std::string path = dir.Write("g.csv", "a,b\n1,2\n");
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  struct stat st {};
  ASSERT_EQ(fstat(fd, &st), 0);
  const int64_t mtime =
      static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
  EXPECT_TRUE(internal::CheckUnchanged(fd, path, 8, mtime, 8).ok());
  const Status short_read = internal::CheckUnchanged(fd, path, 8, mtime, 5);
  EXPECT_EQ(short_read.code(), StatusCode::kAborted);
  EXPECT_EQ(internal::CheckUnchanged(fd, path, 8, mtime - 1, 8).code(), StatusCode::kAborted);
  {
    std::ofstream out(path, std::ios::app);
    out << "3,4\n";
  }
  const Status grew = internal::CheckUnchanged(fd, path, 8, mtime, 8);
  EXPECT_EQ(grew.code(), StatusCode::kAborted);
  EXPECT_NE(grew.message().find("changed while it was read (8 bytes when opened, 12 now)"),
            std::string::npos)
      << grew.ToString();
  close(fd);
  // Unchanged since: the grown file imports whole.
  const Result<ParseResult> r = ParseFile(path, Threads(2));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->frame.rows(), 2u);
}

TEST(ParseTest, FilesTimesColumnsIsBounded) {
  TempDir dir;
  for (int i = 0; i < 5; i++) dir.Write("f" + std::to_string(i) + ".csv", "a,b,c\n1,2,3\n");
  ParseOptions options = Threads(2);
  options.limits.max_column_chunks = 14;  // 5 files x 3 columns = 15
  const Result<ParseResult> r = ParseFile(dir.path(), options);
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(r.status().message().find("5 files of 3 columns"), std::string_view::npos);
  options.limits.max_column_chunks = 15;
  EXPECT_TRUE(ParseFile(dir.path(), options).ok());
}

TEST(ParseTest, ADirectoryIsItsFilesInNameOrder) {
  TempDir dir;
  dir.Write("b.csv", "id,v\n3,z\n4,w\n");
  dir.Write("a.csv", "id,v\n1,x\n2,y\n");
  dir.Write("c.csv.gz", Gzip("5,u\n"));  // no header: its first line is data
  dir.Write(".hidden", "garbage\n");
  dir.Write("0_empty.csv", "");  // sorts first; the setup comes from a.csv
  // Files are loaded one at a time; at the end progress counts every file's (inflated) bytes.
  ParseProgress last;
  const Result<ParseResult> r =
      ParseFile(dir.path(), Threads(2), {.progress = [&](const ParseProgress& p) { last = p; }});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->report.bytes, 13u + 13u + 4u);  // a.csv, b.csv, c.csv.gz inflated
  EXPECT_EQ(last.bytes_done, r->report.bytes);
  EXPECT_EQ(last.bytes_total, r->report.bytes);
  EXPECT_EQ(Column(r->frame, 0), (std::vector<std::string>{"1", "2", "3", "4", "5"}));
  EXPECT_EQ(Column(r->frame, 1), (std::vector<std::string>{"x", "y", "z", "w", "u"}));
  // Issues name their file and its own line.
  dir.Write("d.csv", "id,v\n6,t,extra\n");
  const Result<ParseResult> bad = ParseFile(dir.path(), Threads(2));
  ASSERT_TRUE(bad.ok());
  ASSERT_EQ(bad->report.issues.size(), 1u);
  EXPECT_EQ(bad->report.issues[0].source, dir.path() + "/d.csv");
  EXPECT_EQ(bad->report.issues[0].line, 2u);
  EXPECT_EQ(ParseFile(dir.path() + "/missing.csv").status().code(), StatusCode::kNotFound);
}

// Regression (review, issue 9): a directory's listing followed links (is_regular_file), so a
// link under the directory to a file elsewhere was read; and a FIFO named in a list is refused
// at once, never waited on.
TEST(ParseTest, ADirectoryNeverFollowsALinkNorWaitsOnAFifo) {
  TempDir outside;
  const std::string secret = outside.Write("secret.csv", "id,v\n99,secret\n");
  TempDir dir;
  dir.Write("a.csv", "id,v\n1,x\n");
  ASSERT_EQ(symlink(secret.c_str(), (dir.path() + "/b.csv").c_str()), 0);
  const Result<ParseResult> r = ParseFile(dir.path(), Threads(1));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(Column(r->frame, 1), (std::vector<std::string>{"x"}));
  // Named explicitly (a name swapped for a link, or a FIFO, after the caller listed it).
  ASSERT_EQ(mkfifo((dir.path() + "/c.csv").c_str(), 0600), 0);
  const int fd = open(dir.path().c_str(), O_RDONLY | O_DIRECTORY);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(ParseDirectoryFiles(fd, dir.path(), {"a.csv", "b.csv"}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseDirectoryFiles(fd, dir.path(), {"a.csv", "c.csv"}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseDirectoryFiles(fd, dir.path(), {"../x"}).status().code(),
            StatusCode::kInvalidArgument);
  const Result<ParseResult> ok = ParseDirectoryFiles(fd, dir.path(), {"a.csv"});
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->frame.rows(), 1u);
  close(fd);
}

}  // namespace
}  // namespace floe::parse
