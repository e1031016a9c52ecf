// The sources recipes name (core/data_source.h): domains of data.path, other datasets, names.
#include "core/data_source.h"

#include <gtest/gtest.h>

#include "core/error.h"

namespace ladder {
namespace {

std::string error_of(const std::vector<std::string>& specs) {
  try {
    parse_data_sources(specs, "data/brown");
  } catch (const Error& e) {
    return e.detail();
  }
  return "no error";
}

TEST(DataSource, DomainsDatasetsAndNames) {
  DataSource s = parse_data_source("press", "data/brown");
  EXPECT_EQ(s.name, "press");
  EXPECT_EQ(s.dataset, "data/brown");
  EXPECT_EQ(s.domains, (std::vector<std::string>{"press"}));

  s = parse_data_source("press+editorial+reviews", "data/brown");
  EXPECT_EQ(s.name, "press+editorial+reviews");
  EXPECT_EQ(s.domains, (std::vector<std::string>{"press", "editorial", "reviews"}));

  s = parse_data_source("news=press+editorial", "data/brown");
  EXPECT_EQ(s.name, "news");
  EXPECT_EQ(s.domains.size(), 2u);

  s = parse_data_source("data/web", "data/brown");  // a path: the whole split of another dataset
  EXPECT_EQ(s.name, "web");
  EXPECT_EQ(s.dataset, "data/web");
  EXPECT_TRUE(s.domains.empty());
  EXPECT_EQ(parse_data_source("/abs/web/", "d").name, "web");

  s = parse_data_source("w=../sets/web:en+de", "data/brown");
  EXPECT_EQ(s.name, "w");
  EXPECT_EQ(s.dataset, "../sets/web");
  EXPECT_EQ(s.domains, (std::vector<std::string>{"en", "de"}));
  EXPECT_EQ(parse_data_source("data/a=b", "d").dataset, "data/a=b");        // '=' inside a path
  EXPECT_EQ(parse_data_source("data/v1:2/x", "d").dataset, "data/v1:2/x");  // ':' inside a path
}

TEST(DataSource, MistakesSayWhatIsWrong) {
  EXPECT_EQ(error_of({"a b"}),
            "\"a b\": \"a b\" is not a domain name (letters, digits, _ - .; "
            "'+' joins domains)");
  EXPECT_EQ(error_of({"press+"}),
            "\"press+\": \"\" is not a domain name (letters, digits, _ - .; "
            "'+' joins domains)");
  EXPECT_EQ(error_of({"press+press"}), "\"press+press\": names domain press twice");
  EXPECT_EQ(error_of({"n m=press"}),
            "\"n m=press\": \"n m\" is not a name (letters, digits, _ - .)");
  EXPECT_EQ(error_of({"news="}), "\"news=\": names no domain or dataset");
  EXPECT_EQ(error_of({"press", "news=press"}), "no error");
  EXPECT_EQ(error_of({"x=press", "x=learned"}),
            "\"x=press\" and \"x=learned\" have the same name, x (name them: NAME=...)");
  EXPECT_TRUE(valid_domain_name("belles_lettres"));
  EXPECT_TRUE(valid_domain_name("en-US.v2"));
  EXPECT_FALSE(valid_domain_name(""));
  EXPECT_FALSE(valid_domain_name("a+b"));
  EXPECT_FALSE(valid_domain_name("a/b"));
}

}  // namespace
}  // namespace ladder
