#include "parse/parse.h"

#include <gtest/gtest.h>
namespace floe::parse {
namespace {
TEST(ParseTest, Smoke) {
  auto r = ParseBytes("a,b\n1,x\n2,y\n");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->frame.rows(), 2u);
}
}  // namespace
}  // namespace floe::parse
