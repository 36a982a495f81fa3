#include "kvpager/common/error.hpp"

#include <cstring>

namespace kvpager {

namespace {
std::string driver_message(const std::string& call, const std::string& result,
                           const std::string& context) {
  std::string msg = call + " failed: " + result;
  if (!context.empty()) msg += " (" + context + ")";
  return msg;
}
}  // namespace

DriverError::DriverError(std::string call, std::string result, const std::string& context)
    : Error(driver_message(call, result, context)),
      call_(std::move(call)),
      result_(std::move(result)) {}

void throw_errno(const std::string& call, int err, const std::string& context) {
  const char* name = strerrorname_np(err);
  std::string result = name ? name : ("errno " + std::to_string(err));
  result += std::string(" - ") + std::strerror(err);
  if (err == ENOMEM || err == ENOSPC) {
    throw OutOfMemory(call + " failed: " + result + (context.empty() ? "" : " (" + context + ")"));
  }
  throw DriverError(call, result, context);
}

}  // namespace kvpager
