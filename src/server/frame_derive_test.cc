// FRAME.SELECT, FRAME.FILTER and FRAME.EXPORT in process: the frames they make, the files they
// write, and hostile arguments.

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "mr/mr.h"
#include "server/command_test.h"
#include "server/internal/cluster_testing.h"
#include "server/internal/frame_value.h"
#include "testing/budget.h"

namespace floe::server {
namespace {

Config ImportsFromTmp() {
  Config c;
  c.import_dir = "/tmp";  // FRAME.IMPORT reads only there
  c.export_dir = "/tmp";  // and FRAME.EXPORT writes only there
  return c;
}

class FrameDeriveTest : public CommandTest {
 protected:
  FrameDeriveTest() : CommandTest(ImportsFromTmp()) {}
  void SetUp() override {
    char dir[] = "/tmp/floe_frame_derive_XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }
  static std::string Read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  // Runs a job-starting command and waits; "<state>" or "<state>: <error>", or the refusal.
  std::string Job(std::vector<std::string> args) {
    Reply r = Run(args);
    if (r.type != Reply::Type::kInteger) return "error: " + r.str;
    std::map<std::string, Reply> m = Wait(r.integer);
    return m["error"].str.empty() ? m["state"].str : m["state"].str + ": " + m["error"].str;
  }
  std::shared_ptr<const frame::Frame> FrameAt(const std::string& key) {
    store::ValuePtr v = engine_.store().Get(key);
    if (!v) return nullptr;
    Result<const internal::Cell<internal::FrameHolder>*> cell =
        internal::CellOf<internal::FrameHolder>(*v);
    if (!cell.ok()) return nullptr;
    return (*cell)->Read([](const internal::FrameHolder& h) { return h.frame; });
  }
  // FRAME.HEAD's rows as text, NA as "<NA>".
  std::vector<std::vector<std::string>> Head(const std::string& key, int n = 1000) {
    Reply r = Run({"FRAME.HEAD", key, std::to_string(n)});
    std::vector<std::vector<std::string>> out;
    for (const Reply& row : r.elements) {
      out.emplace_back();
      for (const Reply& cell : row.elements) {
        out.back().push_back(cell.type == Reply::Type::kNull ? "<NA>" : cell.str);
      }
    }
    return out;
  }

  std::string dir_;
};

const char kCsv[] =
    "id,price,color,qty,note,at\n"
    "1,1.5,red,10,a,2024-01-01 00:00:00\n"
    "2,2.25,blue,,\"b,c\",2024-01-02 00:00:00\n"
    "3,,red,30,,2024-01-03 12:00:00\n"
    "4,4.0,green,40,d,\n"
    "5,5.5,red,50,\"say \"\"hi\"\"\",2024-01-05 00:00:00.250\n";
const char kTypes[] = "int,real,cat,int,string,time";

TEST_F(FrameDeriveTest, SelectSharesTheSourceChunks) {
  ASSERT_EQ(Job({"FRAME.IMPORT", "t", Write("t.csv", kCsv), "TYPES", kTypes}), "done");
  EXPECT_THAT(Run({"FRAME.SELECT", "t", "s", "COLS", "color", "0"}), IsInt(2));
  std::vector<std::vector<std::string>> head = Head("s");
  ASSERT_EQ(head.size(), 6u);
  EXPECT_EQ(head[0], (std::vector<std::string>{"color", "id"}));
  EXPECT_EQ(head[3], (std::vector<std::string>{"red", "3"}));
  std::shared_ptr<const frame::Frame> t = FrameAt("t"), s = FrameAt("s");
  ASSERT_TRUE(t && s);
  ASSERT_EQ(s->vec(0).chunk_count(), t->vec(2).chunk_count());
  EXPECT_EQ(s->vec(0).chunk_bytes(0).get(), t->vec(2).chunk_bytes(0).get());  // not a copy
  EXPECT_EQ(s->vec(0).domain(), t->vec(2).domain());
  // Dropping the source leaves the selection whole.
  EXPECT_THAT(Run({"FRAME.DROP", "t"}), IsInt(1));
  EXPECT_EQ(Head("s")[5], (std::vector<std::string>{"red", "5"}));
}

TEST_F(FrameDeriveTest, SelectRefusesBadColumnsAndAnExistingTarget) {
  ASSERT_EQ(Job({"FRAME.IMPORT", "t", Write("t.csv", kCsv), "TYPES", kTypes}), "done");
  EXPECT_THAT(Run({"FRAME.SELECT", "t", "s", "COLS", "nope"}), IsErr("ERR no such column 'nope'"));
  EXPECT_THAT(Run({"FRAME.SELECT", "t", "s", "COLS", "6"}), IsErr("ERR no such column '6'"));
  EXPECT_THAT(Run({"FRAME.SELECT", "t", "s", "COLS", "id", "0"}),
              IsErr("ERR column 'id' given twice"));
  std::vector<std::string> many = {"FRAME.SELECT", "t", "s", "COLS"};
  for (int i = 0; i < 100000; i++) many.push_back("id");
  EXPECT_THAT(Run(many), IsErr("ERR more columns than the frame has (6)"));
  EXPECT_THAT(Run({"FRAME.SELECT", "nope", "s", "COLS", "id"}), IsErr("ERR no such frame"));
  EXPECT_THAT(Run({"FRAME.SELECT", "t", "s", "id", "x"}), IsErr("ERR syntax error"));
  // A lone REPLACE is a column's name, not the option.
  EXPECT_THAT(Run({"FRAME.SELECT", "t", "s", "COLS", "REPLACE"}),
              IsErr("ERR no such column 'REPLACE'"));
  EXPECT_THAT(Run({"FRAME.SELECT", "t", "a{b}", "COLS", "id"}),
              IsErr("ERR a frame name may not contain '{' or '}'"));
  EXPECT_THAT(Run({"SET", "s", "x"}), IsOk());
  EXPECT_THAT(Run({"FRAME.SELECT", "t", "s", "COLS", "id"}),
              IsErr("ERR target key exists (FRAME.IMPORT and FRAME.GROUPBY take REPLACE)"));
  EXPECT_THAT(Run({"FRAME.SELECT", "t", "s", "COLS", "id", "REPLACE"}), IsInt(1));
  EXPECT_THAT(Run({"FRAME.SELECT", "s", "s", "COLS", "id", "REPLACE"}), IsInt(1));  // onto itself
  EXPECT_THAT(Run({"SET", "str", "x"}), IsOk());
  EXPECT_THAT(Run({"FRAME.SELECT", "str", "s2", "COLS", "id"}), IsErr(kWrongType));
}

TEST_F(FrameDeriveTest, FilterKeepsTheRowsWhereEveryConditionHolds) {
  ASSERT_EQ(Job({"FRAME.IMPORT", "t", Write("t.csv", kCsv), "TYPES", kTypes}), "done");
  EXPECT_THAT(Run({"FRAME.FILTER", "t", "f", "WHERE", "price", ">", "2"}), IsInt(3));
  std::vector<std::vector<std::string>> head = Head("f");
  ASSERT_EQ(head.size(), 4u);
  EXPECT_EQ(head[0][0], "id");
  EXPECT_EQ(head[1][0], "2");  // NA price (row 3) never matches
  EXPECT_EQ(head[1][4], "b,c");
  EXPECT_EQ(head[2][0], "4");
  EXPECT_EQ(head[2][5], "<NA>");
  EXPECT_EQ(head[3][4], "say \"hi\"");
  auto rows = [&](std::vector<std::string> where) {
    std::vector<std::string> args = {"FRAME.FILTER", "t", "f", "WHERE"};
    args.insert(args.end(), where.begin(), where.end());
    args.push_back("REPLACE");
    Reply r = Run(args);
    return r.type == Reply::Type::kInteger ? r.integer : -1000;
  };
  EXPECT_EQ(rows({"color", "=", "red"}), 3);
  EXPECT_EQ(rows({"color", "!=", "red"}), 2);
  EXPECT_EQ(rows({"color", "=", "purple"}), 0);  // not a level: nothing, and no error
  EXPECT_EQ(rows({"color", "!=", "purple"}), 5);
  EXPECT_EQ(rows({"color", "=", "red", "AND", "qty", ">=", "30"}), 2);
  EXPECT_EQ(rows({"qty", "ISNA"}), 1);
  EXPECT_EQ(rows({"qty", "notna"}), 4);
  EXPECT_EQ(rows({"qty", "!=", "10"}), 3);  // NA is not != 10 either
  EXPECT_EQ(rows({"note", "=", "b,c"}), 1);
  EXPECT_EQ(rows({"note", "!=", "a"}), 3);  // row 3's note is NA
  EXPECT_EQ(rows({"note", "ISNA"}), 1);
  EXPECT_EQ(rows({"at", ">=", "1704153600000"}), 3);  // 2024-01-02, as milliseconds
  EXPECT_EQ(rows({"at", "ISNA", "AND", "id", "=", "4"}), 1);
  EXPECT_EQ(rows({"1", "<", "2", "AND", "1", ">", "1"}), 1);  // by index
  EXPECT_EQ(rows({"price", "<", "inf"}), 4);
  EXPECT_EQ(rows({"id", ">", "5"}), 0);
  EXPECT_THAT(Run({"FRAME.INFO", "f"}).elements[3], IsInt(0));
  // Types and domains are the source's.
  EXPECT_EQ(rows({"id", "<=", "2"}), 2);
  std::shared_ptr<const frame::Frame> t = FrameAt("t"), f = FrameAt("f");
  ASSERT_TRUE(t && f);
  for (size_t c = 0; c < t->columns(); c++) {
    EXPECT_EQ(f->vec(c).type(), t->vec(c).type());
    EXPECT_EQ(f->vec(c).domain(), t->vec(c).domain());
  }
  EXPECT_EQ(f->vec(5).At(1), 1704153600000.0);
}

TEST_F(FrameDeriveTest, FilterOverManyChunksKeepsTheOrderAndTheLayouts) {
  std::string csv = "i,x,c\n";
  for (int i = 0; i < 300000; i++) {
    csv += std::to_string(i) + "," + (i % 10 == 0 ? "" : std::to_string((i * 7) % 1000) + ".5") +
           "," + (i % 3 == 0 ? "a" : "b") + "\n";
  }
  ASSERT_EQ(Job({"FRAME.IMPORT", "t", Write("big.csv", csv)}), "done");
  std::shared_ptr<const frame::Frame> t = FrameAt("t");
  ASSERT_TRUE(t);
  EXPECT_THAT(Run({"FRAME.FILTER", "t", "f", "WHERE", "x", ">", "500", "AND", "c", "=", "a"}),
              IsInt([&] {
                int64_t n = 0;
                for (int i = 0; i < 300000; i++) {
                  n += i % 10 != 0 && (i * 7) % 1000 + 0.5 > 500 && i % 3 == 0;
                }
                return n;
              }()));
  std::shared_ptr<const frame::Frame> f = FrameAt("f");
  ASSERT_TRUE(f);
  uint64_t r = 0;
  for (int i = 0; i < 300000; i++) {
    if (!(i % 10 != 0 && (i * 7) % 1000 + 0.5 > 500 && i % 3 == 0)) continue;
    ASSERT_EQ(f->vec(0).At(r), i) << r;
    ASSERT_EQ(f->vec(1).At(r), (i * 7) % 1000 + 0.5);
    r++;
  }
  // An integer column stays in integer layouts; x's decimals are scaled, not raw doubles.
  for (size_t k = 0; k < f->chunk_count(); k++) {
    EXPECT_TRUE(f->vec(0).chunk(k).IntegerLayout());
    EXPECT_NE(f->vec(1).chunk(k).stored_layout(), frame::Layout::kDouble);
  }
}

TEST_F(FrameDeriveTest, AFrameWithoutRowsFiltersSelectsAndExports) {
  ASSERT_EQ(Job({"FRAME.IMPORT", "e", Write("e.csv", "a,b\n"), "TYPES", "int,string"}), "done");
  EXPECT_THAT(Run({"FRAME.FILTER", "e", "f", "WHERE", "a", ">", "0"}), IsInt(0));
  EXPECT_THAT(Run({"FRAME.SELECT", "e", "s", "COLS", "b"}), IsInt(1));
  ASSERT_EQ(Job({"FRAME.EXPORT", "f", dir_ + "/e2.csv"}), "done");
  EXPECT_EQ(Read(dir_ + "/e2.csv"), "a,b\r\n");
  // Every row filtered out of a frame with rows: no chunk, the columns kept.
  ASSERT_EQ(Job({"FRAME.IMPORT", "t", Write("t.csv", kCsv), "TYPES", kTypes}), "done");
  EXPECT_THAT(Run({"FRAME.FILTER", "t", "none", "WHERE", "id", "<", "0"}), IsInt(0));
  std::shared_ptr<const frame::Frame> none = FrameAt("none");
  ASSERT_TRUE(none);
  EXPECT_EQ(none->columns(), 6u);
  EXPECT_EQ(none->chunk_count(), 0u);
  ASSERT_EQ(Job({"FRAME.EXPORT", "none", dir_ + "/none.csv"}), "done");
  EXPECT_EQ(Read(dir_ + "/none.csv"), "id,price,color,qty,note,at\r\n");
}

TEST_F(FrameDeriveTest, FilterRefusesHostileArguments) {
  ASSERT_EQ(Job({"FRAME.IMPORT", "t", Write("t.csv", kCsv), "TYPES", kTypes}), "done");
  EXPECT_THAT(Run({"FRAME.FILTER", "t", "f", "WHERE", "id", "~", "1"}),
              ErrStartsWith("ERR unknown operator '~'"));
  EXPECT_THAT(Run({"FRAME.FILTER", "t", "f", "WHERE", "color", "<", "red"}),
              IsErr("ERR column 'color' is categorical: it takes =, !=, ISNA and NOTNA"));
  EXPECT_THAT(Run({"FRAME.FILTER", "t", "f", "WHERE", "note", ">=", "a"}),
              IsErr("ERR column 'note' is string: it takes =, !=, ISNA and NOTNA"));
  EXPECT_THAT(Run({"FRAME.FILTER", "t", "f", "WHERE", "id", "=", "one"}),
              IsErr("ERR column 'id' is compared with a number, not 'one'"));
  EXPECT_THAT(Run({"FRAME.FILTER", "t", "f", "WHERE", "id", "=", "nan"}),
              IsErr("ERR column 'id' is compared with a number, not 'nan'"));
  EXPECT_THAT(Run({"FRAME.FILTER", "t", "f", "WHERE", "nope", "=", "1"}),
              IsErr("ERR no such column 'nope'"));
  EXPECT_THAT(Run({"FRAME.FILTER", "t", "f", "WHERE", "id", "="}), IsErr("ERR syntax error"));
  EXPECT_THAT(Run({"FRAME.FILTER", "t", "f", "WHERE", "id", "=", "1", "OR", "id", "=", "2"}),
              IsErr("ERR syntax error"));
  EXPECT_THAT(Run({"FRAME.FILTER", "t", "f", "WHERE", "id", "=", "1", "AND"}),
              IsErr("ERR syntax error"));
  EXPECT_THAT(Run({"FRAME.FILTER", "t", "f", "id", "=", "1"}), IsErr("ERR syntax error"));
  std::vector<std::string> many = {"FRAME.FILTER", "t", "f", "WHERE", "id", "ISNA"};
  for (int i = 0; i < 100000; i++) many.insert(many.end(), {"AND", "id", "ISNA"});
  EXPECT_THAT(Run(many), IsErr("ERR at most 16 conditions"));
  many.resize(6 + 15 * 3);
  EXPECT_THAT(Run(many), IsInt(0));
  EXPECT_THAT(Run({"FRAME.FILTER", "nope", "f", "WHERE", "id", "ISNA"}),
              IsErr("ERR no such frame"));
  EXPECT_THAT(Run({"FRAME.FILTER", "t", "f", "WHERE", "id", "ISNA"}),
              IsErr("ERR target key exists (FRAME.IMPORT and FRAME.GROUPBY take REPLACE)"));
  EXPECT_EQ(engine_.reserved_memory(), 0);
}

// CLIENT KILL of its client stops a filter at the next chunk: nothing is stored.
TEST_F(FrameDeriveTest, FilterStopsWhenItsClientIsKilled) {
  ASSERT_EQ(Job({"FRAME.IMPORT", "t", Write("t.csv", kCsv), "TYPES", kTypes}), "done");
  session_.state().kill_requested.store(true);
  EXPECT_THAT(Run({"FRAME.FILTER", "t", "f", "WHERE", "id", "NOTNA"}),
              ErrStartsWith("ERR task cancelled"));
  EXPECT_THAT(Run({"EXISTS", "f"}), IsInt(0));
  session_.state().kill_requested.store(false);
  EXPECT_THAT(Run({"FRAME.FILTER", "t", "f", "WHERE", "id", "NOTNA"}), IsInt(5));
  EXPECT_EQ(engine_.reserved_memory(), 0);
  EXPECT_EQ(engine_.internal_errors(), 0u);
}

// Frames are single-node for now: a cluster member refuses the derived-frame commands too
// (routed by their source alone, docs/frames_cluster.md D6, whatever the destination's slot).
TEST(FrameDeriveClusterTest, ClusterMembersRefuseThem) {
  internal::InProcessCluster cluster({.members = 2});
  ASSERT_TRUE(cluster.WaitFormed());
  Session s(&cluster.engine(0), 0);
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
           {"FRAME.SELECT", "a", "a", "COLS", "x", "REPLACE"},
           {"FRAME.FILTER", "a", "a", "WHERE", "x", "ISNA", "REPLACE"},
           {"FRAME.EXPORT", "a", "/tmp/x.csv"}}) {
    EXPECT_THAT(CommandTest::Decode(s.Run(args)),
                ErrStartsWith("ERR frames and jobs are single-node for now"))
        << args[0];
  }
}

// The filter's chunks are charged as it builds them: past maxmemory it refuses with Redis's OOM
// error, stores nothing and leaves nothing reserved.
TEST_F(FrameDeriveTest, FilterIsChargedToMaxmemory) {
  std::string csv = "i,s\n";
  for (int i = 0; i < 200000; i++) csv += std::to_string(i) + ",v" + std::to_string(i) + "\n";
  ASSERT_EQ(Job({"FRAME.IMPORT", "t", Write("t.csv", csv), "TYPES", "int,string"}), "done");
  const int64_t used = engine_.UsedMemoryNow();
  EXPECT_THAT(Run({"CONFIG", "SET", "maxmemory", std::to_string(used + (1 << 20))}), IsOk());
  EXPECT_THAT(Run({"FRAME.FILTER", "t", "f", "WHERE", "i", "NOTNA"}),
              IsErr("OOM command not allowed when used memory > 'maxmemory'."));
  EXPECT_THAT(Run({"EXISTS", "f"}), IsInt(0));
  EXPECT_EQ(engine_.reserved_memory(), 0);
  EXPECT_THAT(Run({"FRAME.FILTER", "t", "f", "WHERE", "i", "<", "100"}), IsInt(100));
  EXPECT_THAT(Run({"CONFIG", "SET", "maxmemory", "0"}), IsOk());
  EXPECT_THAT(Run({"FRAME.FILTER", "t", "f2", "WHERE", "i", "NOTNA"}), IsInt(200000));
  EXPECT_EQ(engine_.reserved_memory(), 0);
}

TEST_F(FrameDeriveTest, ExportWritesCsvThatImportsBackTheSame) {
  ASSERT_EQ(Job({"FRAME.IMPORT", "t", Write("t.csv", kCsv), "TYPES", kTypes}), "done");
  const std::string out = dir_ + "/out.csv";
  ASSERT_EQ(Job({"FRAME.EXPORT", "t", out}), "done");
  EXPECT_EQ(Read(out),
            "id,price,color,qty,note,at\r\n"
            "1,1.5,\"red\",10,\"a\",2024-01-01 00:00:00.000\r\n"
            "2,2.25,\"blue\",,\"b,c\",2024-01-02 00:00:00.000\r\n"
            "3,,\"red\",30,,2024-01-03 12:00:00.000\r\n"
            "4,4,\"green\",40,\"d\",\r\n"
            "5,5.5,\"red\",50,\"say \"\"hi\"\"\",2024-01-05 00:00:00.250\r\n");
  ASSERT_EQ(Job({"FRAME.IMPORT", "back", out, "TYPES", kTypes}), "done");
  EXPECT_EQ(Head("back"), Head("t"));
  Reply a = Run({"FRAME.INFO", "t"}), b = Run({"FRAME.INFO", "back"});
  ASSERT_THAT(a, IsArrayOfSize(14));
  ASSERT_THAT(b, IsArrayOfSize(14));
  for (size_t i = 2; i < 14; i++) {
    EXPECT_EQ(a.elements[i].str, b.elements[i].str);
    EXPECT_EQ(a.elements[i].integer, b.elements[i].integer);
  }
  for (const char* col : {"id", "price", "qty", "at"}) {
    Reply sa = Run({"FRAME.SUMMARY", "t", col}), sb = Run({"FRAME.SUMMARY", "back", col});
    ASSERT_EQ(sa.elements.size(), sb.elements.size());
    for (size_t i = 0; i < sa.elements.size(); i++) {
      EXPECT_EQ(sa.elements[i].str, sb.elements[i].str) << col << " " << i;
    }
  }
  // A relative path is under export-dir; an existing file is kept without REPLACE.
  const std::string rel = dir_.substr(5) + "/out.csv";  // "/tmp/" stripped
  EXPECT_EQ(Job({"FRAME.EXPORT", "t", rel}),
            "error: ERR '" + out + "' exists (FRAME.EXPORT takes REPLACE)");
  Write("out.csv", "old");
  ASSERT_EQ(Job({"FRAME.EXPORT", "t", rel, "REPLACE"}), "done");
  EXPECT_THAT(Read(out), HasSubstr("say"));
  // Nothing else is left in the directory (the temporary file was renamed).
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_))
    files += e.path().filename().string()[0] == '.';
  EXPECT_EQ(files, 0u);
}

TEST_F(FrameDeriveTest, ExportedDoublesReadBackBitForBit) {
  std::string csv = "x\n";
  const double values[] = {0.1,
                           -0.0,
                           1e308,
                           -1.7976931348623157e308,
                           4.9e-324,
                           2.2250738585072014e-308,
                           1.0 / 3,
                           123456789.123456789,
                           std::numeric_limits<double>::infinity(),
                           -std::numeric_limits<double>::infinity()};
  for (double v : values) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.17g", v);
    csv += std::string(buf) + "\n";
  }
  ASSERT_EQ(Job({"FRAME.IMPORT", "t", Write("d.csv", csv), "TYPES", "real"}), "done");
  ASSERT_EQ(Job({"FRAME.EXPORT", "t", dir_ + "/d2.csv"}), "done");
  ASSERT_EQ(Job({"FRAME.IMPORT", "back", dir_ + "/d2.csv", "TYPES", "real"}), "done");
  std::shared_ptr<const frame::Frame> t = FrameAt("t"), back = FrameAt("back");
  ASSERT_TRUE(t && back);
  ASSERT_EQ(back->rows(), std::size(values));
  for (size_t i = 0; i < std::size(values); i++) {
    const double a = t->vec(0).At(i), b = back->vec(0).At(i);
    EXPECT_EQ(std::memcmp(&a, &b, 8), 0) << i;
  }
}

// Times: as the import reads them within years 0000-9999, milliseconds beyond, and a value past
// ±kMaxTimeMs (which only a chunk CompressTimes did not make holds) as NA, not garbage.
TEST_F(FrameDeriveTest, ExportWritesEveryTimeItCanHold) {
  const double past = static_cast<double>(frame::kMaxTimeMs) * 4;
  Result<frame::Vec> vec =
      frame::Vec::Make(frame::ColumnType::kTime, {},
                       {std::make_shared<const std::string>(frame::Compress(std::vector<double>{
                           0, -1, 253402300800000.0, -62167219200001.0, past, frame::kNA}))});
  ASSERT_TRUE(vec.ok()) << vec.status().ToString();
  Result<frame::Frame> f = frame::Frame::Make({"t"}, {std::move(vec).value()});
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE(internal::StoreFrame(engine_, "times", std::move(f).value(), false).ok());
  ASSERT_EQ(Job({"FRAME.EXPORT", "times", dir_ + "/times.csv"}), "done");
  EXPECT_EQ(Read(dir_ + "/times.csv"),
            "t\r\n1970-01-01 00:00:00.000\r\n1969-12-31 23:59:59.999\r\n"
            "253402300800000\r\n-62167219200001\r\n\r\n\r\n");
}

// FRAME.EXPORT's write buffer (1 MiB, and more for a line wider than that) is charged to
// maxmemory: an export it does not fit is refused before its job starts, one whose wide row
// would pass it fails with the OOM text, and nothing stays reserved after either.
TEST_F(FrameDeriveTest, ExportBufferIsChargedToMaxmemory) {
  ASSERT_EQ(Job({"FRAME.IMPORT", "t", Write("t.csv", kCsv), "TYPES", kTypes}), "done");
  std::string wide = "s\n" + std::string(3 << 20, 'w') + "\nx\n";
  ASSERT_EQ(Job({"FRAME.IMPORT", "w", Write("w.csv", wide), "TYPES", "string"}), "done");
  const int64_t used = engine_.UsedMemoryNow();
  ASSERT_THAT(Run({"CONFIG", "SET", "maxmemory", std::to_string(used + (512 << 10))}), IsOk());
  EXPECT_THAT(Run({"FRAME.EXPORT", "t", dir_ + "/a.csv"}),
              IsErr("OOM command not allowed when used memory > 'maxmemory'."));
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/a.csv"));
  EXPECT_EQ(engine_.reserved_memory(), 0);
  ASSERT_THAT(Run({"CONFIG", "SET", "maxmemory", std::to_string(used + (3 << 19))}), IsOk());
  EXPECT_EQ(Job({"FRAME.EXPORT", "w", dir_ + "/w_out.csv"}),
            "failed: OOM command not allowed when used memory > 'maxmemory'.");
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/w_out.csv"));
  EXPECT_EQ(engine_.reserved_memory(), 0);
  ASSERT_EQ(Job({"FRAME.EXPORT", "t", dir_ + "/a.csv"}), "done");
  EXPECT_EQ(engine_.reserved_memory(), 0);
  ASSERT_THAT(Run({"CONFIG", "SET", "maxmemory", "0"}), IsOk());
  ASSERT_EQ(Job({"FRAME.EXPORT", "w", dir_ + "/w_out.csv"}), "done");
  EXPECT_EQ(Read(dir_ + "/w_out.csv").size(), 3u + (3 << 20) + 4 + 5);
  EXPECT_EQ(engine_.reserved_memory(), 0);
}

// Without --export-dir, FRAME.EXPORT is off: with the default import-dir (the working
// directory) as its root, a client could overwrite, with REPLACE, any file of whoever runs the
// node under the directory it was started in.
TEST(FrameExportOffTest, ExportIsOffWithoutAnExportDir) {
  Config c;
  c.import_dir = "/tmp";
  Engine engine(c, 1);
  Session s(&engine, 0);
  std::string out;
  const std::vector<std::string> cmd = {"FRAME.EXPORT", "t", "/tmp/x.csv", "REPLACE"};
  std::vector<std::string_view> args(cmd.begin(), cmd.end());
  ASSERT_TRUE(s.Execute(args, &out));
  EXPECT_EQ(out.rfind("-ERR", 0), 0u) << out;
  // No such frame is said first; with a frame, the export is refused as off.
  Session s2(&engine, 0);
  std::string unused;
  const std::string csv = "/tmp/floe_export_off_test.csv";
  FILE* f = std::fopen(csv.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs("a\n1\n", f);
  std::fclose(f);
  const std::vector<std::string> import = {"FRAME.IMPORT", "t", csv};
  std::vector<std::string_view> iargs(import.begin(), import.end());
  ASSERT_TRUE(s2.Execute(iargs, &unused));
  for (int i = 0; i < 200 && !engine.store().Contains("t"); i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  out.clear();
  ASSERT_TRUE(s.Execute(args, &out));
  EXPECT_NE(out.find("FRAME.EXPORT is off: start the node with --export-dir"), std::string::npos)
      << out;
  std::remove(csv.c_str());
}

TEST_F(FrameDeriveTest, ExportRefusesPathsOutsideExportDirAndLinks) {
  ASSERT_EQ(Job({"FRAME.IMPORT", "t", Write("t.csv", kCsv), "TYPES", kTypes}), "done");
  EXPECT_THAT(Run({"FRAME.EXPORT", "t", "/etc/floe.csv"}),
              ErrStartsWith("ERR '/etc/floe.csv' is outside export-dir"));
  EXPECT_THAT(Run({"FRAME.EXPORT", "t", dir_ + "/../../etc/x.csv"}),
              ErrStartsWith("ERR '" + dir_ + "/../../etc/x.csv' is outside export-dir"));
  // A link to a file elsewhere is refused, even with REPLACE, and the file it names untouched.
  const std::string victim = dir_ + "/victim";
  Write("victim", "keep me");
  ASSERT_EQ(::symlink(victim.c_str(), (dir_ + "/link.csv").c_str()), 0);
  EXPECT_THAT(Run({"FRAME.EXPORT", "t", dir_ + "/link.csv", "REPLACE"}),
              ErrStartsWith("ERR '" + dir_ + "/link.csv' is a symbolic link"));
  EXPECT_EQ(Read(victim), "keep me");
  // A directory link leading out of import-dir is refused by where it leads.
  ASSERT_EQ(::symlink("/etc", (dir_ + "/etc").c_str()), 0);
  EXPECT_THAT(Run({"FRAME.EXPORT", "t", dir_ + "/etc/x.csv"}),
              ErrStartsWith("ERR '" + dir_ + "/etc/x.csv' is outside export-dir"));
  EXPECT_THAT(Run({"FRAME.EXPORT", "t", dir_}),
              ErrStartsWith("ERR '" + dir_ + "' is not a regular file"));
  EXPECT_THAT(Run({"FRAME.EXPORT", "t", dir_ + "/"}), ErrStartsWith("ERR '"));
  EXPECT_THAT(Run({"FRAME.EXPORT", "t", dir_ + "/nodir/x.csv"}),
              ErrStartsWith("ERR cannot write in"));
  EXPECT_THAT(Run({"FRAME.EXPORT", "t", ""}), IsErr("ERR bad path"));
  EXPECT_THAT(Run({"FRAME.EXPORT", "t", std::string(5000, 'a')}), IsErr("ERR bad path"));
  EXPECT_THAT(Run({"FRAME.EXPORT", "nope", dir_ + "/n.csv"}), IsErr("ERR no such frame"));
  EXPECT_THAT(Run({"FRAME.EXPORT", "t", dir_ + "/n.csv", "FORCE"}), IsErr("ERR syntax error"));
}

TEST_F(FrameDeriveTest, ExportOfADroppedFrameWritesTheSnapshotAndCancelRemovesTheTemporary) {
  std::string csv = "i,s\n";
  for (int i = 0; i < 400000; i++)
    csv += std::to_string(i) + ",value number " + std::to_string(i) + "\n";
  ASSERT_EQ(Job({"FRAME.IMPORT", "t", Write("t.csv", csv)}), "done");
  Reply id = Run({"FRAME.EXPORT", "t", dir_ + "/snap.csv"});
  ASSERT_EQ(id.type, Reply::Type::kInteger) << id.str;
  EXPECT_THAT(Run({"FRAME.DROP", "t"}), IsInt(1));
  std::map<std::string, Reply> st = Wait(id.integer);
  ASSERT_EQ(st["state"].str, "done") << st["error"].str;
  EXPECT_EQ(st["rows"].integer, 400000);
  EXPECT_EQ(st["percent"].str, "100");
  EXPECT_EQ(Read(dir_ + "/snap.csv").size(), st["bytes_done"].integer);
  ASSERT_EQ(Job({"FRAME.IMPORT", "t", dir_ + "/snap.csv"}), "done");
  // Cancelled at once: no file, no temporary.
  Reply id2 = Run({"FRAME.EXPORT", "t", dir_ + "/cancelled.csv"});
  ASSERT_EQ(id2.type, Reply::Type::kInteger) << id2.str;
  Run({"JOB.CANCEL", std::to_string(id2.integer)});
  st = Wait(id2.integer);
  if (st["state"].str == "cancelled") {
    EXPECT_FALSE(std::filesystem::exists(dir_ + "/cancelled.csv"));
  }
  for (const auto& e : std::filesystem::directory_iterator(dir_)) {
    EXPECT_NE(e.path().filename().string()[0], '.') << e.path();
  }
}

}  // namespace
}  // namespace floe::server

namespace floe::server {
namespace {

using testing::TestBudget;

// The filter's output chunks and scratch go through the budget before they are held (the
// server's EngineBudget turns a refusal into the OOM error), and all of it is given back.
TEST(FilterTaskTest, ChargesItsChunksToTheBudgetAndGivesThemBack) {
  Result<frame::FrameBuilder> b =
      frame::FrameBuilder::Make({{.name = "i", .type = frame::ColumnType::kInteger},
                                 {.name = "s", .type = frame::ColumnType::kString}},
                                {.target_chunk_bytes = 64 << 10});
  ASSERT_TRUE(b.ok());
  for (int i = 0; i < 100000; i++) {
    ASSERT_TRUE(b->AddNumber(0, i).ok());
    ASSERT_TRUE(b->AddString(1, "value " + std::to_string(i)).ok());
    ASSERT_TRUE(b->EndRow().ok());
  }
  Result<frame::Frame> f = b->Finish();
  ASSERT_TRUE(f.ok());
  ASSERT_GT(f->chunk_count(), 4u);
  const std::vector<mr::Condition> all = {{.col = 0, .op = mr::FilterOp::kNotNA}};
  TestBudget roomy(uint64_t{1} << 40);
  Result<frame::Frame> g = mr::Filter(*f, all, {.memory = &roomy});
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ(g->rows(), 100000u);
  EXPECT_GE(roomy.peak(), g->compressed_bytes());
  EXPECT_EQ(roomy.now(), 0u);
  TestBudget tight(f->compressed_bytes() / 2);
  Result<frame::Frame> refused = mr::Filter(*f, all, {.memory = &tight});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(tight.now(), 0u);
  // Cancelled before it starts: Cancelled, nothing held.
  std::atomic<bool> cancel{true};
  Result<frame::Frame> cancelled = mr::Filter(*f, all, {.cancel = &cancel, .memory = &roomy});
  EXPECT_EQ(cancelled.status().code(), StatusCode::kCancelled);
  EXPECT_EQ(roomy.now(), 0u);
}

}  // namespace
}  // namespace floe::server
