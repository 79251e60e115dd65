// levee: levee::fleet_link and its free functions (fleet.hpp), compiled once
// in levee_fleet (lib/fleet.cpp), with the parts behind the link:
//
//   fleet/impl/fleet_decisions.ipp   what the link decides, sans I/O
//   fleet/impl/fleet_members.ipp     the shell's entry points, events and members
//   fleet/impl/fleet_connection.ipp  the shell's connections
//   fleet/impl/fleet_rounds.ipp      the shell's rounds and publications
#pragma once

#include <levee/core/detail/validate.hpp>
#include <levee/fleet/detail/redis_connection.hpp>
#include <levee/fleet/fleet.hpp>
#include <levee/fleet/impl/fleet_state.hpp>

#include <levee/fleet/impl/fleet_connection.ipp>
#include <levee/fleet/impl/fleet_decisions.ipp>
#include <levee/fleet/impl/fleet_members.ipp>
#include <levee/fleet/impl/fleet_rounds.ipp>

#include <algorithm>
#include <cctype>
#include <string>

namespace levee {

const char* to_string(fleet_event_kind k) noexcept {
  switch (k) {
    case fleet_event_kind::connected:
      return "connected";
    case fleet_event_kind::disconnected:
      return "disconnected";
    case fleet_event_kind::connect_failed:
      return "connect_failed";
    case fleet_event_kind::command_error:
      return "command_error";
    case fleet_event_kind::published:
      return "published";
    case fleet_event_kind::fleet_opened:
      return "fleet_opened";
    case fleet_event_kind::fleet_closed:
      return "fleet_closed";
  }
  return "unknown";
}

namespace {
bool has_space(const std::string& s) {
  return std::any_of(s.begin(), s.end(),
                     [](unsigned char c) { return std::isspace(c) || std::iscntrl(c); });
}
}  // namespace

void validate(const fleet_options& o) {
  using std::chrono::nanoseconds;
  detail::redis_address a;
  if (!detail::redis_address::parse(o.address, a))
    detail::reject_option("fleet_options", "address", "must be host:port or a socket path");
  if (o.key_prefix.empty() || has_space(o.key_prefix) ||
      o.key_prefix.find_first_of("{}") != std::string::npos)
    detail::reject_option("fleet_options", "key_prefix",
                          "must not be empty nor hold whitespace or braces");
  if (has_space(o.instance_id) || o.instance_id.size() > 200)
    detail::reject_option("fleet_options", "instance_id",
                          "must hold no whitespace and at most 200 characters");
  if (o.quorum < 1) detail::reject_option("fleet_options", "quorum", "must be at least 1");
  if (o.connect_timeout <= nanoseconds::zero())
    detail::reject_option("fleet_options", "connect_timeout", "must be positive");
  if (o.command_timeout <= nanoseconds::zero())
    detail::reject_option("fleet_options", "command_timeout", "must be positive");
  if (o.reconnect_min <= nanoseconds::zero())
    detail::reject_option("fleet_options", "reconnect_min", "must be positive");
  if (o.reconnect_max < o.reconnect_min)
    detail::reject_option("fleet_options", "reconnect_max", "must be at least reconnect_min");
  if (o.probe_lease < std::chrono::milliseconds(1))
    detail::reject_option("fleet_options", "probe_lease", "must be at least 1 ms");
  if (!o.username.empty() && o.password.empty())
    detail::reject_option("fleet_options", "username", "needs a password (AUTH user password)");
  if (o.tls && !a.path.empty())
    detail::reject_option("fleet_options", "tls", "is over TCP, not over a Unix socket");
  if (o.tls_context && !o.tls)
    detail::reject_option("fleet_options", "tls_context", "is used only with tls = true");
  if (o.max_reply_size < 4096)
    detail::reject_option("fleet_options", "max_reply_size", "must be at least 4096");
  if (o.registry_scan <= nanoseconds::zero())
    detail::reject_option("fleet_options", "registry_scan", "must be positive");
}

void write_prometheus(std::ostream& out, const fleet_metrics& m) {
  const auto gauge = [&](const char* name, const char* help, std::uint64_t v) {
    out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << " gauge\n"
        << name << ' ' << v << '\n';
  };
  const auto counter = [&](const char* name, const char* help, std::uint64_t v) {
    out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << " counter\n"
        << name << ' ' << v << '\n';
  };
  gauge("levee_fleet_connected", "1 while the fleet link is connected to Redis, else 0.",
        m.connected ? 1 : 0);
  gauge("levee_fleet_breakers", "Breakers attached to the fleet link.", m.breakers);
  counter("levee_fleet_connects_total", "Connections to Redis established.", m.connects);
  counter("levee_fleet_reconnects_total", "Connection attempts after the first.", m.reconnects);
  counter("levee_fleet_disconnects_total", "Established connections lost.", m.disconnects);
  counter("levee_fleet_rounds_total", "Evidence round trips answered.", m.rounds);
  counter("levee_fleet_connect_failures_total", "Connection attempts that failed.",
          m.connect_failures);
  counter("levee_fleet_errors_total", "Failed connects, timeouts and error replies.", m.errors);
  counter("levee_fleet_command_errors_total", "Error replies to one breaker's command.",
          m.command_errors);
  counter("levee_fleet_opens_published_total", "Openings this instance published.",
          m.opens_published);
  counter("levee_fleet_opens_received_total", "Breakers opened by the fleet.", m.opens_received);
  counter("levee_fleet_closes_published_total", "Closings this instance published.",
          m.closes_published);
  counter("levee_fleet_closes_received_total", "Breakers closed by the fleet's prober.",
          m.closes_received);
  counter("levee_fleet_probe_leases_won_total", "Probe leases this instance won.",
          m.probe_leases_won);
  counter("levee_fleet_probe_leases_lost_total", "Probe leases another instance held.",
          m.probe_leases_lost);
  if (!m.last_error.empty()) {
    // A label value escapes backslash, double quote and newline.
    std::string v;
    for (const char c : m.last_error.substr(0, 400)) {
      if (c == '\\' || c == '"') {
        v += '\\';
        v += c;
      } else if (c == '\n') {
        v += "\\n";
      } else {
        v += c;
      }
    }
    out << "# HELP levee_fleet_last_error_info The link's last error, as Redis or the link "
           "wrote it.\n# TYPE levee_fleet_last_error_info gauge\n"
        << "levee_fleet_last_error_info{error=\"" << v << "\"} 1\n";
  }
}

fleet_link::fleet_link(boost::asio::any_io_executor ex, fleet_options options)
    : executor_(ex),
      state_(std::make_shared<detail::fleet_state>(std::move(ex), std::move(options))) {
  state_->start();
}

fleet_link::~fleet_link() {
  state_->stop();
}

void fleet_link::attach(circuit_breaker& breaker, std::string name) {
  state_->attach(detail::fleet_hook(breaker), std::move(name));
}

void fleet_link::attach(circuit_breaker& breaker) {
  state_->attach(detail::fleet_hook(breaker), std::string(breaker.name()));
}

void fleet_link::attach(breaker_registry& registry) {
  state_->attach_registry(registry);
}

void fleet_link::listen(std::function<void(const fleet_event&)> fn) {
  state_->listen(std::move(fn));
}

void fleet_link::close() {
  state_->stop();
}

void fleet_link::wait_connected(std::chrono::nanoseconds within,
                                std::function<void(boost::system::error_code)> done) {
  state_->wait_connected(within, std::move(done));
}

fleet_metrics fleet_link::metrics() const {
  return state_->metrics();
}
const fleet_options& fleet_link::options() const noexcept {
  return state_->options();
}
const std::string& fleet_link::instance_id() const noexcept {
  return state_->options().instance_id;
}

}  // namespace levee
