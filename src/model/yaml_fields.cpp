#include "yaml_fields.hpp"

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "kvpager/common/error.hpp"

namespace kvpager::model::detail {

namespace {

// yaml-cpp keeps every pair of a mapping but `node[key]` finds only the first, so a repeated key
// (`num_layers: 32` then `num_layers: 64`) would be silently dropped.
void reject_duplicate_keys(const std::filesystem::path& path, const YAML::Node& node,
                           const std::string& prefix) {
  if (node.IsMap()) {
    std::map<std::string, int> first_line;
    for (const auto& kv : node) {
      if (!kv.first.IsScalar()) continue;
      const std::string& key = kv.first.Scalar();
      const std::string field = prefix.empty() ? key : prefix + "." + key;
      const int line = kv.first.Mark().line + 1;
      auto [it, fresh] = first_line.emplace(key, line);
      if (!fresh) {
        throw InvalidArgument(path.string() + ":" + std::to_string(line) + ": " + field +
                              ": duplicate key (first given on line " + std::to_string(it->second) +
                              "); keep one");
      }
      reject_duplicate_keys(path, kv.second, field);
    }
  } else if (node.IsSequence()) {
    for (size_t i = 0; i < node.size(); ++i) {
      reject_duplicate_keys(path, node[i], prefix + "[" + std::to_string(i) + "]");
    }
  }
}

}  // namespace

YamlFile::YamlFile(const std::filesystem::path& path) : path_(path) {
  std::ifstream in(path);
  if (!in) {
    throw InvalidArgument(path.string() + ": cannot read: " + std::strerror(errno));
  }
  std::stringstream text;
  text << in.rdbuf();
  try {
    root_ = YAML::Load(text.str());
  } catch (const YAML::Exception& e) {
    throw InvalidArgument(path.string() + ":" + std::to_string(e.mark.line + 1) + ":" +
                          std::to_string(e.mark.column + 1) + ": malformed YAML: " + e.msg);
  }
  if (!root_.IsMap()) {
    throw InvalidArgument(path.string() + ": expected a YAML mapping of fields at the top level");
  }
  reject_duplicate_keys(path, root_, "");
}

void YamlFile::fail(const std::string& field_path, const std::string& problem) const {
  throw InvalidArgument(path_.string() + ": " + field_path + ": " + problem);
}

YAML::Node YamlFile::section(const std::string& name, bool required) const {
  if (name.empty()) return root_;
  YAML::Node node = root_[name];
  if (!node || node.IsNull()) {
    if (required) fail(name, "missing section");
    return YAML::Node(YAML::NodeType::Map);
  }
  if (!node.IsMap()) fail(name, "expected a mapping of fields");
  return node;
}

std::optional<uint64_t> YamlFile::positive(const YAML::Node& parent, const std::string& field_path,
                                           const std::string& key) const {
  const YAML::Node node = parent[key];
  if (!node || node.IsNull()) return std::nullopt;
  if (!node.IsScalar()) fail(field_path, "expected a positive integer, got a list or mapping");
  const std::string& s = node.Scalar();
  uint64_t value = 0;
  const char* end = s.data() + s.size();
  auto [ptr, ec] = std::from_chars(s.data(), end, value);
  if (ec != std::errc() || ptr != end || s.empty() || value == 0) {
    fail(field_path, "expected a positive integer, got '" + s + "'");
  }
  return value;
}

std::optional<std::string> YamlFile::text(const YAML::Node& parent, const std::string& field_path,
                                          const std::string& key) const {
  const YAML::Node node = parent[key];
  if (!node || node.IsNull()) return std::nullopt;
  if (!node.IsScalar()) fail(field_path, "expected a string, got a list or mapping");
  if (node.Scalar().empty()) fail(field_path, "expected a non-empty string");
  return node.Scalar();
}

}  // namespace kvpager::model::detail
