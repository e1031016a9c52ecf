#include "core/files.h"

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/error.h"

namespace ladder {

void write_text_file(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error(path, "cannot write the file");
  }
}

void check_output_folder(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (fs::path p = fs::absolute(fs::path(path), ec); !p.empty(); p = p.parent_path()) {
    if (fs::exists(p, ec)) {
      if (!fs::is_directory(p, ec))
        throw Error(path, p == fs::absolute(fs::path(path), ec)
                              ? "is a file, not a folder"
                              : "cannot be a folder: " + p.string() + " is a file");
      return;
    }
    if (p == p.parent_path()) return;
  }
}

void create_output_folder(const std::string& path) {
  check_output_folder(path);
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) throw Error(path, "cannot create the folder: " + ec.message());
}

}  // namespace ladder
