#include "core/plot.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/files.h"

namespace ladder {
namespace fs = std::filesystem;

bool gnuplot_installed() {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "");
  for (std::string dir; std::getline(dirs, dir, ':');)
    if (!dir.empty() && ::access((fs::path(dir) / "gnuplot").c_str(), X_OK) == 0) return true;
  return false;
}

std::string run_gnuplot(const std::string& dir, const std::string& name, const std::string& script,
                        std::vector<std::string>& warnings) {
  const fs::path folder(dir);
  write_text_file((folder / (name + ".gp")).string(),
                  "set terminal pngcairo noenhanced size 900,600 font 'sans,11'\nset output '" +
                      name + ".png'\n" + script);
  const std::string command =
      "cd '" + dir + "' && gnuplot '" + name + ".gp' > '" + name + ".gnuplot.log' 2>&1";
  if (std::system(command.c_str()) != 0) {
    warnings.push_back("gnuplot failed on " + (folder / (name + ".gp")).string() + " (see " +
                       (folder / (name + ".gnuplot.log")).string() + ")");
    return "";
  }
  fs::remove(folder / (name + ".gnuplot.log"));
  return name + ".png";
}

}  // namespace ladder
