#include "bench/text_table.hpp"

#include <algorithm>
#include <cstdio>

namespace kvpager::cli {

std::string fixed(double value, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, value);
  return buf;
}

std::string TextTable::render() const {
  std::vector<size_t> width(header_.size());
  for (size_t c = 0; c < header_.size(); ++c) width[c] = header_[c].size();
  for (const auto& row : rows_) {
    for (size_t c = 0; c < row.size() && c < width.size(); ++c) {
      width[c] = std::max(width[c], row[c].size());
    }
  }
  auto rule = [&](char edge, char fill) {
    std::string s(1, edge);
    for (size_t w : width) s += std::string(w + 2, fill) + edge;
    return s + "\n";
  };
  auto line = [&](const std::vector<std::string>& cells) {
    std::string s = "|";
    for (size_t c = 0; c < width.size(); ++c) {
      const std::string cell = c < cells.size() ? cells[c] : "";
      const std::string pad(width[c] - cell.size(), ' ');
      s += " " + (c == 0 ? cell + pad : pad + cell) + " |";
    }
    return s + "\n";
  };
  std::string out = rule('+', '-') + line(header_) + rule('|', '-');
  for (const auto& row : rows_) out += row.empty() ? rule('|', '-') : line(row);
  return out + rule('+', '-');
}

}  // namespace kvpager::cli
