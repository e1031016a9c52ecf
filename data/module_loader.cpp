#include "data/module_loader.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <vector>

#include "core/error.h"

namespace ladder::data {

LoadedModule::LoadedModule(const std::string& file_name, const char* env,
                           const std::string& build_path, const std::string& what,
                           const std::string& missing_hint)
    : what_(what) {
  std::vector<std::string> paths;
  if (const char* from_env = std::getenv(env)) paths.push_back(from_env);
  char exe[4096];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    std::string dir(exe, static_cast<size_t>(n));
    dir = dir.substr(0, dir.rfind('/'));
    paths.push_back(dir + "/" + file_name);
    paths.push_back(dir + "/../lib/" + file_name);
  }
  if (!build_path.empty()) paths.push_back(build_path);
  std::string last_error;
  for (const auto& path : paths) {
    if (::access(path.c_str(), R_OK) != 0) continue;
    handle_ = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (handle_) return;
    last_error = ::dlerror();
  }
  throw Error(what,
              "cannot load " + file_name +
                  (last_error.empty() ? " (not found; " + missing_hint + ")" : ": " + last_error) +
                  "; set " + env + " to its path");
}

void* LoadedModule::raw_symbol(const char* name) const {
  void* f = ::dlsym(handle_, name);
  if (!f) throw Error(what_, std::string("module lacks ") + name);
  return f;
}

}  // namespace ladder::data
