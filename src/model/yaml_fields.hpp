#pragma once
// Typed access to YAML fields with errors that name the file and the field ("a.yaml:
// strategy.pp_size: expected a positive integer, got 'x'"). Internal to the model layer.
#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

namespace kvpager::model::detail {

class YamlFile {
 public:
  // Throws InvalidArgument when the file is missing, unreadable, malformed, not a mapping, or
  // repeats a key in any mapping ("<file>:<line>: <field>: duplicate key ...").
  explicit YamlFile(const std::filesystem::path& path);

  const YAML::Node& root() const { return root_; }
  const std::filesystem::path& path() const { return path_; }

  // `section` is "" for top-level keys. A present section must be a mapping.
  YAML::Node section(const std::string& section, bool required) const;

  std::optional<uint64_t> positive(const YAML::Node& parent, const std::string& field_path,
                                   const std::string& key) const;
  std::optional<std::string> text(const YAML::Node& parent, const std::string& field_path,
                                  const std::string& key) const;
  [[noreturn]] void fail(const std::string& field_path, const std::string& problem) const;

 private:
  std::filesystem::path path_;
  YAML::Node root_;
};

}  // namespace kvpager::model::detail
