#include "core/format.h"

#include <charconv>
#include <cmath>
#include <cstdio>

namespace ladder {

std::string human_count(double v) {
  char buf[32];
  if (v >= 1e9)
    std::snprintf(buf, sizeof buf, "%.2fG", v / 1e9);
  else if (v >= 1e6)
    std::snprintf(buf, sizeof buf, "%.2fM", v / 1e6);
  else if (v >= 1e3)
    std::snprintf(buf, sizeof buf, "%.1fK", v / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.0f", v);
  return buf;
}

std::string format_duration(double seconds) {
  if (std::isnan(seconds)) return "-";
  char buf[32];
  const auto t = static_cast<long long>(std::llround(seconds));
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", t / 3600, t / 60 % 60);
  else
    std::snprintf(buf, sizeof buf, "%lldm%02llds", t / 60, t % 60);
  return buf;
}

std::string join(const std::vector<std::string>& items, const std::string& separator) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i)
    out += (i ? separator : "") + items[i];
  return out;
}

std::string shortest_float(double v) {
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, v);
  std::string s(buf, res.ptr);
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";  // stays a TOML float
  return s;
}

}  // namespace ladder

#include <stdexcept>

#include "core/attributes.h"

namespace ladder {

void merge_attributes(Attributes& into, const Attributes& more) {
  for (const auto& [name, value] : more)
    if (!into.emplace(name, value).second)
      throw std::logic_error("attribute " + name + " is given twice");
}

}  // namespace ladder
