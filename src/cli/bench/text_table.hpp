#pragma once
// TextTable: the boxed tables the benchmarks print, in the seed documents' style:
//   +---------------+-----------+
//   | Metric        |  Map (ms) |
//   |---------------|-----------|
//   | mean          |     44.29 |
//   +---------------+-----------+
// Column 0 is left-aligned, the others right-aligned. add_separator() draws a |---| rule.
#include <string>
#include <vector>

namespace kvpager::cli {

class TextTable {
 public:
  explicit TextTable(std::vector<std::string> header) : header_(std::move(header)) {}
  void add_row(std::vector<std::string> cells) { rows_.push_back(std::move(cells)); }
  void add_separator() { rows_.push_back({}); }
  std::string render() const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;  // empty row = separator
};

// "%.2f"-style fixed formatting.
std::string fixed(double value, int decimals = 2);

}  // namespace kvpager::cli
