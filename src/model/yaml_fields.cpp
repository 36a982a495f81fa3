#include "yaml_fields.hpp"

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <sstream>

#include "kvpager/common/error.hpp"

namespace kvpager::model::detail {

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
