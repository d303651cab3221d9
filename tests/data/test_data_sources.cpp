// Parsing --data-path / --data-epochs.
#include <gtest/gtest.h>

#include "data/data_sources.h"
#include "test_util.h"

namespace mt::data {
namespace {

TEST(DataSources, NamedSourcesWithEpochs) {
  auto s = parse_sources({"text=/d/text", "code=/d/code"}, {"code=4", "text=2.5"});
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].name, "text");
  EXPECT_EQ(s[0].prefix, "/d/text");
  EXPECT_DOUBLE_EQ(s[0].epochs, 2.5);
  EXPECT_EQ(s[1].name, "code");
  EXPECT_DOUBLE_EQ(s[1].epochs, 4.0);
}

TEST(DataSources, BarePrefixRepeatsAsNeeded) {
  auto s = parse_sources({"/d/corpus"}, {});
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].prefix, "/d/corpus");
  EXPECT_EQ(s[0].epochs, 0.0);
  EXPECT_DOUBLE_EQ(parse_sources({"/d/corpus"}, {"data=3"})[0].epochs, 3.0);
}

TEST(DataSources, BadInputIsNamed) {
  using test_util::expect_error;
  expect_error([] { parse_sources({"text=/a", "text=/b"}, {"text=1"}); }, {"'text' is given twice"});
  expect_error([] { parse_sources({"text=/a"}, {"txet=2"}); }, {"no source named 'txet'"});
  expect_error([] { parse_sources({"text=/a"}, {"text=0"}); }, {"text=0", "positive"});
  expect_error([] { parse_sources({"text=/a"}, {"text=-1"}); }, {"text=-1", "positive"});
  expect_error([] { parse_sources({"text=/a"}, {"text=two"}); }, {"'two' is not a number"});
  expect_error([] { parse_sources({"text=/a"}, {"text=1", "text=2"}); }, {"'text' is given twice"});
  expect_error([] { parse_sources({"text=/a", "code=/b"}, {"text=2"}); }, {"source 'code' has no epoch count"});
  expect_error([] { parse_sources({"/a", "/b"}, {}); }, {"name each one as NAME=PREFIX"});
  expect_error([] { parse_sources({"te xt=/a"}, {}); }, {"te xt=/a"});
  expect_error([] { parse_sources({"text="}, {}); }, {"no store prefix"});
  expect_error([] { parse_sources({}, {}); }, {"--data-path is required"});
}

}  // namespace
}  // namespace mt::data
