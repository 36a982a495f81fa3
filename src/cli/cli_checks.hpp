#pragma once
// Range checks for numeric CLI flags, used instead of CLI::Range / CLI::PositiveNumber, which
// let NaN through (it compares false with both bounds) and print their bounds with
// std::to_string (DBL_MAX as a 309-digit number). A value outside the range is a usage error
// naming the value (shortened) and the bounds in short form.
#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdio>
#include <string>

namespace kvpager::cli {

// 1e+308, 600, 0.05: %g, the form a person types.
inline std::string short_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// The value as given, at most 40 characters of it.
inline std::string shown_value(const std::string& text) {
  return text.size() <= 40 ? text : text.substr(0, 40) + "...";
}

// A finite number from lo to hi.
inline CLI::Validator finite_in(double lo, double hi) {
  const std::string range = short_number(lo) + " to " + short_number(hi);
  return CLI::Validator(
      [lo, hi, range](std::string& in) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(in, v) || !std::isfinite(v) || v < lo || v > hi) {
          return "value " + shown_value(in) + " is not a number from " + range;
        }
        return {};
      },
      "NUMBER in [" + range + "]");
}

// A finite number above 0, at most hi.
inline CLI::Validator positive_up_to(double hi) {
  return CLI::Validator(
      [hi](std::string& in) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(in, v) || !std::isfinite(v) || v <= 0 || v > hi) {
          return "value " + shown_value(in) + " is not a number above 0 and at most " +
                 short_number(hi);
        }
        return {};
      },
      "NUMBER in (0, " + short_number(hi) + "]");
}

// A whole number from lo to hi (no sign tricks: "-1" into an unsigned flag is refused).
inline CLI::Validator integer_in(long long lo, long long hi) {
  const std::string range = std::to_string(lo) + " to " + std::to_string(hi);
  return CLI::Validator(
      [lo, hi, range](std::string& in) -> std::string {
        long long v = 0;
        if (!CLI::detail::lexical_cast(in, v) || v < lo || v > hi) {
          return "value " + shown_value(in) + " is not a whole number from " + range;
        }
        return {};
      },
      "INT in [" + range + "]");
}

}  // namespace kvpager::cli
