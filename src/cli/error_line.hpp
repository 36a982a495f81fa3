#pragma once
// error_line(): an error message made fit for one line of a terminal: newlines, tabs, escape
// sequences and other control characters (which a name or value typed by a user may carry)
// are written as \n, \t, \xNN, and trailing whitespace is dropped, so no message can span
// lines or move the cursor.
#include <cstdio>
#include <string>
#include <string_view>

namespace kvpager::cli {

inline std::string error_line(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (u < 0x20 || u == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace kvpager::cli
