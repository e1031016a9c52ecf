// Where a run's training or evaluation data comes from, as recipes name it (data.mixture and
// eval.sets; recipes/README.md). A source is part of a prepared dataset's split (data/dataset.h):
//
//   "press"                    the domain press of data.path
//   "press+editorial+reviews"  several domains of data.path, concatenated
//   "news=press+editorial"     the same, named news (trace columns and logs use the name)
//   "data/web"                 another dataset, all of it: a dataset is a path, so it holds a '/'
//   "web=data/web:en+de"       domains of another dataset
//
// Declared here, in core, so that recipes (which do not link the data layer) check the syntax when
// they are read; the data layer opens the sources (data/loader.h).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace ladder {

struct DataSource {
  std::string spec;     // as written
  std::string name;     // NAME=, else the domains joined by '+', else the dataset folder's name
  std::string dataset;  // the dataset folder: the default one unless the spec names another
  std::vector<std::string> domains;  // empty: the whole split
};

// Whether `name` may name a domain: letters, digits, '_', '-' and '.'.
bool valid_domain_name(std::string_view name);

// Parses a source; an error (ladder::Error with an empty `where`, for the caller to place) says
// what is wrong with it.
DataSource parse_data_source(const std::string& spec, const std::string& default_dataset);

// Parses every source of a list, also refusing two with the same name.
std::vector<DataSource> parse_data_sources(const std::vector<std::string>& specs,
                                           const std::string& default_dataset);

}  // namespace ladder
