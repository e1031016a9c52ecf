// Loading the data layer's optional modules (SentencePiece, Parquet): shared libraries opened with
// dlopen(RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND), so each binds to its own copies of what it
// bundles (data/sentencepiece_module.h, data/parquet_module.h say why each is a module).
#pragma once

#include <string>

namespace ladder::data {

class LoadedModule {
 public:
  // Opens `file_name` from, in order: the path in environment variable `env`, beside the running
  // executable, ../lib beside it, then `build_path` (where the build tree put it). `what` names
  // the feature in errors, `missing_hint` says how to get the module when none is found.
  LoadedModule(const std::string& file_name, const char* env, const std::string& build_path,
               const std::string& what, const std::string& missing_hint);
  // The entry point `name`, cast to the function type F; ladder::Error when the module lacks it.
  // (The module stays loaded for the life of the process.)
  template <class F>
  F symbol(const char* name) const {
    return reinterpret_cast<F>(raw_symbol(name));
  }

 private:
  void* raw_symbol(const char* name) const;
  void* handle_ = nullptr;
  std::string what_;
};

}  // namespace ladder::data
