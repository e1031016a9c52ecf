#include "core/data_source.h"

#include <algorithm>
#include <cctype>
#include <filesystem>

#include "core/error.h"

namespace ladder {
namespace {

std::vector<std::string> split_domains(const std::string& text, const std::string& spec) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    const size_t plus = text.find('+', start);
    const std::string d = text.substr(start, plus == std::string::npos ? plus : plus - start);
    if (!valid_domain_name(d))
      throw Error("", "\"" + spec + "\": \"" + d +
                          "\" is not a domain name (letters, digits, _ - .; '+' joins domains)");
    if (std::find(out.begin(), out.end(), d) != out.end())
      throw Error("", "\"" + spec + "\": names domain " + d + " twice");
    out.push_back(d);
    if (plus == std::string::npos) return out;
    start = plus + 1;
  }
}

}  // namespace

bool valid_domain_name(std::string_view name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '_' || c == '-' || c == '.';
  });
}

DataSource parse_data_source(const std::string& spec, const std::string& default_dataset) {
  DataSource s;
  s.spec = spec;
  std::string rest = spec;
  // NAME= (a name never holds '/', so "data/a=b" is a path).
  if (const size_t eq = rest.find('=');
      eq != std::string::npos && rest.substr(0, eq).find('/') == std::string::npos) {
    s.name = rest.substr(0, eq);
    rest = rest.substr(eq + 1);
    if (!valid_domain_name(s.name))
      throw Error("",
                  "\"" + spec + "\": \"" + s.name + "\" is not a name (letters, digits, _ - .)");
  }
  if (rest.empty()) throw Error("", "\"" + spec + "\": names no domain or dataset");
  if (rest.find('/') == std::string::npos) {  // domains of the default dataset
    s.dataset = default_dataset;
    s.domains = split_domains(rest, spec);
  } else {
    // A dataset path, then optionally ':' and its domains (domain names hold no '/' or ':').
    const size_t colon = rest.rfind(':');
    if (colon != std::string::npos && rest.find('/', colon) == std::string::npos) {
      s.dataset = rest.substr(0, colon);
      s.domains = split_domains(rest.substr(colon + 1), spec);
    } else {
      s.dataset = rest;
    }
    if (s.dataset.empty()) throw Error("", "\"" + spec + "\": an empty dataset path");
  }
  if (s.name.empty()) {
    for (const auto& d : s.domains)
      s.name += (s.name.empty() ? "" : "+") + d;
    if (s.name.empty()) {
      std::filesystem::path p(s.dataset);
      s.name = (p.has_filename() ? p.filename() : p.parent_path().filename()).string();
    }
  }
  return s;
}

std::vector<DataSource> parse_data_sources(const std::vector<std::string>& specs,
                                           const std::string& default_dataset) {
  std::vector<DataSource> out;
  for (const auto& spec : specs) {
    DataSource s = parse_data_source(spec, default_dataset);
    for (const auto& o : out)
      if (o.name == s.name)
        throw Error("", "\"" + o.spec + "\" and \"" + spec + "\" have the same name, " + s.name +
                            " (name them: NAME=...)");
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace ladder
