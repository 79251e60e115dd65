// The demo's --config FILE: the registry's options read from FILE
// (levee::config), and read again on each SIGHUP while the demo runs.
// Header-only, so that tests/config.cpp tests it as the demo uses it.
#pragma once

#include <levee/config/config.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/signal_set.hpp>

#include <csignal>
#include <cstdint>
#include <iostream>
#include <memory>
#include <ostream>
#include <string>
#include <utility>

namespace demo {

/// Applies FILE to a registry now and on each SIGHUP, until `stop()` or its
/// destruction. A file with errors changes nothing: its errors go to `log`.
/// The registry must outlive it. One thread: the executor's.
template <class Registry>
class config_reloader {
 public:
  /// \param ex Where the signal is waited for.
  /// \param registry The registry to configure.
  /// \param file The JSON file (levee/config/config.hpp).
  /// \param base What the file changes (the same base at every reload).
  /// \param log Where reloads and errors are reported.
  config_reloader(boost::asio::any_io_executor ex, Registry& registry, std::string file,
                  levee::registry_options base, std::ostream& log)
      : signals_(std::move(ex), SIGHUP),
        registry_(registry),
        file_(std::move(file)),
        base_(std::move(base)),
        log_(log) {
    wait();
  }
  config_reloader(const config_reloader&) = delete;
  config_reloader& operator=(const config_reloader&) = delete;
  ~config_reloader() { stop(); }

  /// Reads the file and applies it.
  /// \return false if the file had errors (then nothing changed).
  bool reload() {
    try {
      registry_.reconfigure(levee::read_registry_config(file_, base_));
      ++reloads_;
      return true;
    } catch (const levee::config_error& e) {
      log_ << file_ << " not applied (the options stay as they were):\n" << e.what() << '\n';
      ++failures_;
      return false;
    }
  }

  /// Stops waiting for SIGHUP; from then on the demo ignores it.
  void stop() {
    boost::system::error_code ec;
    signals_.clear(ec);  // asio restores SIGHUP's default action (quit): ignore it instead
    std::signal(SIGHUP, SIG_IGN);
    signals_.cancel(ec);
  }

  /// \return the reloads applied so far.
  std::uint64_t reloads() const noexcept { return reloads_; }
  /// \return the reloads refused so far (a file with errors).
  std::uint64_t failures() const noexcept { return failures_; }

 private:
  void wait() {
    signals_.async_wait([this](boost::system::error_code ec, int) {
      if (ec) return;  // stopped
      if (reload()) log_ << file_ << " reloaded\n";
      wait();
    });
  }

  boost::asio::signal_set signals_;
  Registry& registry_;
  std::string file_;
  levee::registry_options base_;
  std::ostream& log_;
  std::uint64_t reloads_ = 0, failures_ = 0;
};

/// The reloader of `--config FILE`, the file applied once now, with the
/// registry's options now as the base; null when `file` is empty.
/// \throws levee::config_error when the file has errors.
template <class Registry>
std::unique_ptr<config_reloader<Registry>> watch_config(boost::asio::any_io_executor ex,
                                                        Registry& registry, const std::string& file,
                                                        std::ostream& log = std::cerr) {
  if (file.empty()) return nullptr;
  levee::registry_options base = registry.options();
  registry.reconfigure(levee::read_registry_config(file, base));
  return std::make_unique<config_reloader<Registry>>(std::move(ex), registry, file, std::move(base),
                                                     log);
}

}  // namespace demo
