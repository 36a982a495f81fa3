#pragma once
// A small etcd v3 client over etcd's JSON gateway (HTTP POST /v3/kv/..., libcurl), used by
// the transfer benchmark's ranks to find each other as nixlbench does. Keys and values are
// arbitrary strings (base64 on the wire). Not thread-safe: one client per thread.
// Errors: an endpoint that cannot be reached or answers with an error throws kvpager::Error
// naming the endpoint and the call ("etcd http://127.0.0.1:1 unreachable (POST /v3/kv/put):
// Couldn't connect to server").
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace kvpager::transfer {

class EtcdClient {
 public:
  // `endpoints`: comma-separated URLs ("http://localhost:2379"); the first that answers is used.
  explicit EtcdClient(const std::string& endpoints);
  ~EtcdClient();
  EtcdClient(const EtcdClient&) = delete;
  EtcdClient& operator=(const EtcdClient&) = delete;

  void put(const std::string& key, const std::string& value);
  std::optional<std::string> get(const std::string& key);
  std::map<std::string, std::string> get_prefix(const std::string& prefix);
  // Creates `key` only if it does not exist; true when this call created it.
  [[nodiscard]] bool create(const std::string& key, const std::string& value);
  void erase(const std::string& key);
  void erase_prefix(const std::string& prefix);

  // Polls `key` until it exists; calls `idle` between polls (e.g. to progress a UCX worker).
  // Throws Timeout naming the key and `what` after `timeout`.
  std::string wait_for(const std::string& key, std::chrono::milliseconds timeout,
                       const std::string& what, const std::function<void()>& idle = {});

  const std::string& endpoint() const { return endpoints_.at(current_); }

 private:
  std::string post(const std::string& path, const std::string& body);

  struct Curl;
  std::unique_ptr<Curl> curl_;
  std::vector<std::string> endpoints_;
  size_t current_ = 0;
};

// Deletes the keys it was given when it goes out of scope (errors ignored: best effort).
class EtcdKeyGuard {
 public:
  explicit EtcdKeyGuard(EtcdClient& client) : client_(client) {}
  ~EtcdKeyGuard();
  EtcdKeyGuard(const EtcdKeyGuard&) = delete;
  EtcdKeyGuard& operator=(const EtcdKeyGuard&) = delete;
  void own(const std::string& key) { keys_.push_back(key); }

 private:
  EtcdClient& client_;
  std::vector<std::string> keys_;
};

}  // namespace kvpager::transfer
