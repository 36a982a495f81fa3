#include "kvbench/kvbench_plan_output.hpp"

#include <nlohmann/json.hpp>

#include <cctype>
#include <map>
#include <variant>

namespace kvpager::cli {

namespace {

const std::string kSeparator(80, '=');

std::string flag_text(const transfer::FlagValue& v) {
  if (const auto* b = std::get_if<bool>(&v)) return *b ? "True" : "False";
  if (const auto* n = std::get_if<uint64_t>(&v)) return std::to_string(*n);
  return std::get<std::string>(v);
}

nlohmann::json flag_json(const transfer::FlagValue& v) {
  if (const auto* b = std::get_if<bool>(&v)) return *b;
  if (const auto* n = std::get_if<uint64_t>(&v)) return *n;
  return std::get<std::string>(v);
}

std::string csv_cell(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

}  // namespace

std::string plan_header(const PlannedConfig& p) {
  const auto& c = p.loaded.config;
  std::string s = kSeparator + "\n";
  s += "Model Config: " + p.loaded.path + "\n";
  s += "ISL: " + std::to_string(c.runtime.isl) + " tokens\n";
  s += "Page Size: " + std::to_string(c.system.page_size) + "\n";
  s += "Requests: " + std::to_string(c.runtime.num_requests) + "\n";
  s += "TP: " + std::to_string(c.strategy.tp_size) + "\n";
  s += "PP: " + std::to_string(c.strategy.pp_size) + "\n";
  s += kSeparator + "\n";
  return s;
}

std::string plan_command_text(const transfer::XferConfig& xfer) {
  std::string s = "nixlbench";
  for (const auto& flag : transfer::nixlbench_flags(xfer)) {
    if (flag.is_default) continue;
    s += " \\\n    --" + flag.name;
    if (!std::holds_alternative<bool>(flag.value)) s += " " + flag_text(flag.value);
  }
  return s + "\n";
}

std::string plan_text(const std::vector<PlannedConfig>& plans) {
  std::string s;
  for (size_t i = 0; i < plans.size(); ++i) {
    if (i > 0) s += "\n";
    s += plan_header(plans[i]) + plan_command_text(plans[i].xfer);
  }
  return s;
}

std::string plan_json(const std::vector<PlannedConfig>& plans) {
  nlohmann::ordered_json all = nlohmann::ordered_json::array();
  for (const auto& p : plans) {
    nlohmann::ordered_json o;
    for (const auto& flag : transfer::nixlbench_flags(p.xfer)) o[flag.name] = flag_json(flag.value);
    o["config_file"] = p.loaded.path;
    all.push_back(std::move(o));
  }
  return all.dump(2) + "\n";
}

std::string plan_csv(const model::ModelArchitecture& arch,
                     const std::vector<PlannedConfig>& plans) {
  std::vector<std::map<std::string, std::string>> rows;
  std::map<std::string, bool> columns;
  std::string model_name = arch.name;
  for (char& ch : model_name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  for (const auto& p : plans) {
    std::map<std::string, std::string> row;
    for (const auto& flag : transfer::nixlbench_flags(p.xfer))
      row[flag.name] = flag_text(flag.value);
    const auto& c = p.loaded.config;
    row["config_file"] = p.loaded.path;
    row["model"] = model_name;
    row["model_strategy_tp_size"] = std::to_string(c.strategy.tp_size);
    row["model_strategy_pp_size"] = std::to_string(c.strategy.pp_size);
    row["model_strategy_model_quant_mode"] = c.strategy.model_quant_mode;
    row["model_strategy_kvcache_quant_mode"] = c.strategy.kvcache_quant_mode;
    row["model_runtime_isl"] = std::to_string(c.runtime.isl);
    row["model_runtime_osl"] = std::to_string(c.runtime.osl);
    row["model_runtime_num_requests"] = std::to_string(c.runtime.num_requests);
    row["model_system_hardware"] = c.system.hardware;
    row["model_system_backend"] = c.system.backend;
    row["model_system_access_pattern"] = model::access_pattern_name(c.system.access_pattern);
    row["model_system_page_size"] = std::to_string(c.system.page_size);
    if (c.system.source) row["model_system_source"] = *c.system.source;
    if (c.system.destination) row["model_system_destination"] = *c.system.destination;
    for (const auto& [k, v] : row) columns[k] = true;
    rows.push_back(std::move(row));
  }
  std::string s;
  bool first = true;
  for (const auto& [k, _] : columns) {
    s += (first ? "" : ",") + csv_cell(k);
    first = false;
  }
  s += "\n";
  for (const auto& row : rows) {
    first = true;
    for (const auto& [k, _] : columns) {
      auto it = row.find(k);
      s += (first ? "" : ",") + (it == row.end() ? std::string() : csv_cell(it->second));
      first = false;
    }
    s += "\n";
  }
  return s;
}

}  // namespace kvpager::cli
