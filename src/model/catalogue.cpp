#include "kvpager/model/catalogue.hpp"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <map>
#include <system_error>

#include "kvpager/common/error.hpp"

namespace kvpager::model {

namespace fs = std::filesystem;

namespace {

std::string fold(std::string s) {
  for (char& c : s) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (c == '_' || c == '.') c = '-';
  }
  return s;
}

bool is_model_file(const fs::path& p) {
  const auto ext = p.extension();
  return (ext == ".yaml" || ext == ".yml");
}

}  // namespace

std::vector<fs::path> catalogue_dirs() {
  std::vector<fs::path> candidates;
  if (const char* env = std::getenv("KVPAGER_MODELS_DIR"); env && *env)
    candidates.emplace_back(env);
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    candidates.push_back(exe.parent_path() / ".." / "share" / "kvpager" / "models");
    candidates.push_back(exe.parent_path() / ".." / "models");
  }
#ifdef KVPAGER_SOURCE_MODELS_DIR
  candidates.emplace_back(KVPAGER_SOURCE_MODELS_DIR);
#endif
  candidates.emplace_back("models");
  std::vector<fs::path> dirs;
  for (const auto& c : candidates) {
    if (fs::is_directory(c, ec)) dirs.push_back(fs::weakly_canonical(c, ec));
  }
  dirs.erase(std::unique(dirs.begin(), dirs.end()), dirs.end());
  return dirs;
}

std::vector<fs::path> catalogue_files(const std::vector<fs::path>& dirs) {
  std::map<std::string, fs::path> by_stem;  // first folder wins
  for (const auto& dir : dirs) {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      if (entry.is_regular_file() && is_model_file(entry.path())) {
        by_stem.emplace(entry.path().stem().string(), entry.path());
      }
    }
  }
  std::vector<fs::path> files;
  for (auto& [stem, path] : by_stem) files.push_back(path);
  return files;
}

ModelArchitecture find_architecture(const std::string& file_or_name,
                                    const std::vector<fs::path>& dirs) {
  if (file_or_name.empty()) throw InvalidArgument("--model: empty model name");
  std::error_code ec;
  if (fs::is_regular_file(file_or_name, ec)) return load_architecture(file_or_name);
  const bool looks_like_path =
      file_or_name.find('/') != std::string::npos || is_model_file(fs::path(file_or_name));
  if (looks_like_path) {
    throw InvalidArgument("--model " + file_or_name + ": no such file");
  }
  const std::string want = fold(file_or_name);
  const auto files = catalogue_files(dirs);
  for (const auto& f : files) {
    if (fold(f.stem().string()) == want) return load_architecture(f);
  }
  std::string names;
  for (const auto& f : files) {
    names += (names.empty() ? "" : ", ") + f.stem().string();
    // A name may also be the model_name inside a file.
    try {
      ModelArchitecture a = load_architecture(f);
      if (fold(a.name) == want) return a;
    } catch (const Error&) {
      // a broken catalogue file is reported when it is asked for by its own name
    }
  }
  std::string searched;
  for (const auto& d : dirs) searched += (searched.empty() ? "" : ", ") + d.string();
  throw InvalidArgument("--model " + file_or_name + ": unknown model (not a file; catalogue" +
                        (searched.empty() ? std::string(" folders not found") : " " + searched) +
                        " has: " + (names.empty() ? "nothing" : names) + ")");
}

}  // namespace kvpager::model
