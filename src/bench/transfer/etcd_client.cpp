#include "kvpager/bench/transfer/etcd_client.hpp"

#include <curl/curl.h>

#include <nlohmann/json.hpp>

#include <cstring>
#include <mutex>
#include <thread>

#include "kvpager/common/error.hpp"

namespace kvpager::transfer {

namespace {

const char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string b64encode(const std::string& in) {
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t n = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    out += kB64[n >> 18];
    out += kB64[(n >> 12) & 63];
    out += kB64[(n >> 6) & 63];
    out += kB64[n & 63];
  }
  if (i + 1 == in.size()) {
    const uint32_t n = uint8_t(in[i]) << 16;
    out += kB64[n >> 18];
    out += kB64[(n >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    const uint32_t n = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out += kB64[n >> 18];
    out += kB64[(n >> 12) & 63];
    out += kB64[(n >> 6) & 63];
    out += '=';
  }
  return out;
}

std::string b64decode(const std::string& in) {
  std::string out;
  uint32_t buf = 0;
  int bits = 0;
  for (char c : in) {
    const char* p = c ? std::strchr(kB64, c) : nullptr;
    if (p == nullptr) continue;  // '=' and anything else
    buf = (buf << 6) | static_cast<uint32_t>(p - kB64);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((buf >> bits) & 0xFF);
    }
  }
  return out;
}

// etcd's range_end for "every key with this prefix".
std::string prefix_end(std::string prefix) {
  while (!prefix.empty()) {
    if (static_cast<unsigned char>(prefix.back()) < 0xFF) {
      prefix.back() = static_cast<char>(prefix.back() + 1);
      return prefix;
    }
    prefix.pop_back();
  }
  return std::string(1, '\0');
}

size_t append_body(char* data, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

std::vector<std::string> split_endpoints(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = text.find(',', start);
    std::string e =
        text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    while (!e.empty() && e.back() == '/') e.pop_back();
    if (!e.empty()) {
      if (e.find("://") == std::string::npos) e = "http://" + e;
      out.push_back(e);
    }
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (out.empty()) throw InvalidArgument("--etcd-endpoints '" + text + "': no endpoint");
  return out;
}

}  // namespace

struct EtcdClient::Curl {
  CURL* handle = nullptr;
  Curl() {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
    handle = curl_easy_init();
    if (handle == nullptr) throw Error("curl_easy_init failed");
  }
  ~Curl() { curl_easy_cleanup(handle); }
};

EtcdClient::EtcdClient(const std::string& endpoints)
    : curl_(std::make_unique<Curl>()), endpoints_(split_endpoints(endpoints)) {}

EtcdClient::~EtcdClient() = default;

std::string EtcdClient::post(const std::string& path, const std::string& body) {
  std::string last_error;
  for (size_t attempt = 0; attempt < endpoints_.size(); ++attempt) {
    const std::string& ep = endpoints_[current_];
    const std::string url = ep + path;
    std::string response;
    CURL* h = curl_->handle;
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url.c_str());
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, append_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &response);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    const CURLcode rc = curl_easy_perform(h);
    if (rc != CURLE_OK) {
      last_error = "etcd " + ep + " unreachable (POST " + path + "): " + curl_easy_strerror(rc);
      current_ = (current_ + 1) % endpoints_.size();
      continue;
    }
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) {
      throw Error("etcd " + ep + " answered HTTP " + std::to_string(status) + " to POST " + path +
                  ": " + response.substr(0, 200));
    }
    return response;
  }
  throw Error(last_error);
}

void EtcdClient::put(const std::string& key, const std::string& value) {
  post("/v3/kv/put", nlohmann::json{{"key", b64encode(key)}, {"value", b64encode(value)}}.dump());
}

std::optional<std::string> EtcdClient::get(const std::string& key) {
  const auto j =
      nlohmann::json::parse(post("/v3/kv/range", nlohmann::json{{"key", b64encode(key)}}.dump()));
  if (!j.contains("kvs") || j["kvs"].empty()) return std::nullopt;
  const auto& kv = j["kvs"][0];
  return kv.contains("value") ? b64decode(kv["value"].get<std::string>()) : std::string();
}

std::map<std::string, std::string> EtcdClient::get_prefix(const std::string& prefix) {
  const auto j = nlohmann::json::parse(
      post("/v3/kv/range",
           nlohmann::json{{"key", b64encode(prefix)}, {"range_end", b64encode(prefix_end(prefix))}}
               .dump()));
  std::map<std::string, std::string> out;
  if (!j.contains("kvs")) return out;
  for (const auto& kv : j["kvs"]) {
    out[b64decode(kv["key"].get<std::string>())] =
        kv.contains("value") ? b64decode(kv["value"].get<std::string>()) : std::string();
  }
  return out;
}

bool EtcdClient::create(const std::string& key, const std::string& value) {
  const nlohmann::json txn = {
      {"compare",
       {{{"key", b64encode(key)},
         {"target", "CREATE"},
         {"result", "EQUAL"},
         {"create_revision", "0"}}}},
      {"success", {{{"request_put", {{"key", b64encode(key)}, {"value", b64encode(value)}}}}}}};
  const auto j = nlohmann::json::parse(post("/v3/kv/txn", txn.dump()));
  return j.value("succeeded", false);
}

void EtcdClient::erase(const std::string& key) {
  post("/v3/kv/deleterange", nlohmann::json{{"key", b64encode(key)}}.dump());
}

void EtcdClient::erase_prefix(const std::string& prefix) {
  post("/v3/kv/deleterange",
       nlohmann::json{{"key", b64encode(prefix)}, {"range_end", b64encode(prefix_end(prefix))}}
           .dump());
}

std::string EtcdClient::wait_for(const std::string& key, std::chrono::milliseconds timeout,
                                 const std::string& what, const std::function<void()>& idle) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto next_poll = std::chrono::steady_clock::now();
  for (;;) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= next_poll) {
      if (auto v = get(key)) return *v;
      next_poll = now + std::chrono::milliseconds(5);
    }
    if (now > deadline) {
      throw Timeout("waited " + std::to_string(timeout.count() / 1000) + " s for " + what +
                    " (etcd key " + key + " at " + endpoint() + ")");
    }
    if (idle) {
      idle();
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
}

EtcdKeyGuard::~EtcdKeyGuard() {
  for (const auto& k : keys_) {
    try {
      client_.erase(k);
    } catch (...) {
    }
  }
}

}  // namespace kvpager::transfer
