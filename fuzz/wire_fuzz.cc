// libFuzzer target for every decoder in wire: the primitive readers, typed (Iced) decoding with
// nesting, vectors and strings, and registry-driven JSON rendering. Any crash, sanitizer report
// or decode that does not round-trip is a bug.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/base.h"
#include "wire/wire.h"

namespace {

struct Leaf {
  int32_t n = 0;
  std::string s;
  static constexpr uint16_t kTypeId = 60001;
  static constexpr std::string_view kTypeName = "FuzzLeaf";
  static constexpr auto FloeIcedFields() {
    return std::make_tuple(floe::wire::Field("n", &Leaf::n), floe::wire::Field("s", &Leaf::s));
  }
  bool operator==(const Leaf&) const = default;
};

struct Tree {
  bool b = false;
  uint8_t u8 = 0;
  uint64_t u = 0;
  double d = 0;
  std::vector<Leaf> leaves;
  std::vector<std::vector<int64_t>> nested;
  Leaf leaf;
  static constexpr uint16_t kTypeId = 60002;
  static constexpr std::string_view kTypeName = "FuzzTree";
  static constexpr auto FloeIcedFields() {
    using floe::wire::Field;
    return std::make_tuple(Field("b", &Tree::b), Field("u8", &Tree::u8), Field("u", &Tree::u),
                           Field("d", &Tree::d), Field("leaves", &Tree::leaves),
                           Field("nested", &Tree::nested), Field("leaf", &Tree::leaf));
  }
};

const bool kRegistered = [] {
  FLOE_CHECK_OK(floe::wire::TypeRegistry::Global().Register<Leaf>());
  FLOE_CHECK_OK(floe::wire::TypeRegistry::Global().Register<Tree>());
  return true;
}();

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)kRegistered;
  const std::string_view in(reinterpret_cast<const char*>(data), size);

  // Primitive readers, driven by the input itself.
  floe::wire::Reader r(in);
  while (!r.empty()) {
    uint8_t op = 0;
    if (!r.GetU8(&op).ok()) break;
    std::string_view sv;
    uint64_t u64 = 0;
    uint32_t u32 = 0;
    int64_t i64 = 0;
    double d = 0;
    floe::Status s;
    switch (op % 6) {
      case 0:
        s = r.GetVarint64(&u64);
        break;
      case 1:
        s = r.GetVarint32(&u32);
        break;
      case 2:
        s = r.GetVarintSigned(&i64);
        break;
      case 3:
        s = r.GetDouble(&d);
        break;
      case 4:
        s = r.GetLengthPrefixed(&sv, 1 << 16);
        break;
      case 5:
        s = r.GetFixed32(&u32);
        break;
    }
    if (!s.ok()) break;
  }
  (void)floe::wire::Crc32c(in);

  // Typed decoding: a successful decode must re-encode to the same bytes.
  floe::Result<Tree> tree = floe::wire::Decode<Tree>(in);
  if (tree.ok()) {
    (void)floe::wire::ToJson(*tree);
    const std::string again = floe::wire::Encode(*tree);
    floe::Result<Tree> twice = floe::wire::Decode<Tree>(again);
    FLOE_CHECK(twice.ok());
    FLOE_CHECK(floe::wire::Encode(*twice) == again);
  }
  floe::Result<Leaf> leaf = floe::wire::Decode<Leaf>(in);
  if (leaf.ok()) FLOE_CHECK(floe::wire::Decode<Leaf>(floe::wire::Encode(*leaf)).value() == *leaf);
  (void)floe::wire::TypeRegistry::Global().RenderJson(in);
  return 0;
}
