#include "core/files.h"

#include <fstream>

#include "core/error.h"

namespace ladder {

void write_text_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) throw Error(path, "cannot write the file");
}

}  // namespace ladder
