// levee's HTTP client under concurrency against wrk, side by side in one run
// (bench/README.md, "HTTP client against wrk"): keep-alive GETs on loopback
// to a private nginx (one worker, `return 200`), plain and TLS, with 1, 16
// and 64 connections. For each, wrk (-t1) and then levee's client (one
// io_context thread, one coroutine per connection) run for the same
// duration; the table puts levee's requests per second and p99 next to
// wrk's, and the goal next to them: at least 0.9x wrk's rate, a p99 no worse.
// It also gives the CPU time (user and system) each spends per request
// (`getrusage`: wrk's as a reaped child, levee's as this process's own),
// which a machine shared with other work disturbs far less than the rate.
//
//   levee-bench-http [--duration SECONDS] [--connections 1,16,64] [--smoke]
//                    [--only http|https] [--levee-only]
//
// --smoke: a short run of everything (wrk for 1 s, levee for 0.2 s), no
// timing checked: exits 0 unless something breaks (an error, nginx or wrk
// failing). Without --smoke the exit status is 0 too when the goal is
// missed: the table says so (the figures are a shared machine's).
#include <levee/http/client.hpp>

#include "../tests/nginx_fixture.hpp"

#include <flaky/tls.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

extern char** environ;

namespace {

namespace asio = boost::asio;
namespace http = levee::http;
using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct figures {
  double rps = 0;
  double p99_us = 0;
  std::uint64_t requests = 0;
  std::uint64_t errors = 0;
  double cpu_us_per_request = 0;   // user + system
  double user_us_per_request = 0;  // user alone
};

struct cpu_time {
  double user = 0, system = 0;  // us
};

// User and system CPU time of `who` (RUSAGE_SELF or RUSAGE_CHILDREN).
cpu_time cpu_of(int who) {
  rusage u{};
  ::getrusage(who, &u);
  const auto us = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) * 1e6 + static_cast<double>(t.tv_usec);
  };
  return {us(u.ru_utime), us(u.ru_stime)};
}

// `f`'s CPU per request from the CPU time before and after its requests.
void set_cpu(figures& f, const cpu_time& before, const cpu_time& after) {
  if (f.requests == 0) return;
  const double n = static_cast<double>(f.requests);
  f.user_us_per_request = (after.user - before.user) / n;
  f.cpu_us_per_request = f.user_us_per_request + (after.system - before.system) / n;
}

// Runs `argv` with its stdout captured, for at most `limit`: killed
// (SIGKILL) past it. Throws when it cannot start, is killed, or exits non-zero.
std::string run_captured(const std::vector<std::string>& argv, std::chrono::milliseconds limit) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  posix_spawn_file_actions_t actions;
  ::posix_spawn_file_actions_init(&actions);
  ::posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, argv[0].c_str(), &actions, nullptr, args.data(), environ);
  ::posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    throw std::runtime_error("cannot start " + argv[0]);
  }
  std::string out;
  const auto end = clock_type::now() + limit;
  bool killed = false;
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(end - clock_type::now()).count();
    if (left <= 0) {
      ::kill(pid, SIGKILL);
      killed = true;
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(std::min<long long>(left, 100))) < 0) continue;
    if (p.revents == 0) continue;
    char buf[4096];
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  // After EOF the child exits at once; bounded anyway.
  for (int i = 0; i < 200 && ::waitpid(pid, &status, WNOHANG) == 0; ++i) ::usleep(10000);
  if (::waitpid(pid, &status, WNOHANG) == 0) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    killed = true;
  }
  if (killed) throw std::runtime_error(argv[0] + " took too long: killed");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error(argv[0] + " failed:\n" + out);
  return out;
}

// "139.00us", "1.29ms", "2.00s" in microseconds.
double wrk_time_us(const std::string& s) {
  std::size_t used = 0;
  const double v = std::stod(s, &used);
  const std::string unit = s.substr(used);
  if (unit == "us") return v;
  if (unit == "ms") return v * 1e3;
  if (unit == "s") return v * 1e6;
  if (unit == "m") return v * 60e6;
  throw std::runtime_error("wrk: unknown time unit in " + s);
}

figures run_wrk(const std::string& url, int conns, int seconds) {
  // wrk is reaped before run_captured returns; nginx, the other child, only
  // at the end of the bench.
  const cpu_time cpu_before = cpu_of(RUSAGE_CHILDREN);
  const std::string out = run_captured({"/usr/bin/wrk", "-t1", "-c" + std::to_string(conns),
                                        "-d" + std::to_string(seconds) + "s", "--latency", url},
                                       std::chrono::seconds(seconds + 20));
  figures f;
  std::istringstream in(out);
  std::string line;
  bool rps = false, p99 = false;
  while (std::getline(in, line)) {
    std::istringstream w(line);
    std::string first;
    w >> first;
    if (first == "Requests/sec:") {
      w >> f.rps;
      rps = true;
    } else if (first == "99%") {
      std::string t;
      w >> t;
      f.p99_us = wrk_time_us(t);
      p99 = true;
    } else if (first == "Non-2xx" || first == "Socket") {
      ++f.errors;  // "Non-2xx or 3xx responses: N", "Socket errors: ..."
    } else if (line.find("requests in") != std::string::npos) {
      f.requests = std::stoull(first);
    }
  }
  if (!rps || !p99) throw std::runtime_error("wrk: cannot read its output:\n" + out);
  set_cpu(f, cpu_before, cpu_of(RUSAGE_CHILDREN));
  return f;
}

asio::awaitable<void> connection(http::client& c, const std::string& url,
                                 clock_type::time_point end, std::vector<std::uint32_t>& latencies,
                                 std::uint64_t& errors) {
  while (clock_type::now() < end) {
    const auto t0 = clock_type::now();
    const auto [ec, res] = co_await http::async_get(c, url, asio::as_tuple(asio::use_awaitable));
    const auto t1 = clock_type::now();
    if (ec || res.result_int() != 200) {
      ++errors;
      if (errors > 100) co_return;  // broken: stop, reported below
      continue;
    }
    latencies.push_back(static_cast<std::uint32_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count()));
  }
}

figures run_levee(const std::string& url, int conns, std::chrono::milliseconds duration,
                  std::shared_ptr<asio::ssl::context> tls, bool cancellable) {
  asio::io_context ioc(1);
  http::client c(ioc.get_executor(), {.max_connections_per_host = static_cast<std::size_t>(conns),
                                      .timeout = 2s,
                                      .tls = std::move(tls)});
  std::uint64_t errors = 0;
  // Warm-up: every connection opened (and, for TLS, its handshake done)
  // before the clock starts, as wrk's latencies leave the connect out.
  {
    std::vector<std::uint32_t> ignored;
    const auto end = clock_type::now() + 100ms;
    for (int i = 0; i < conns; ++i)
      asio::co_spawn(ioc, connection(c, url, end, ignored, errors), asio::detached);
    ioc.run_for(10s);
    if (!ioc.stopped()) throw std::runtime_error("levee: warm-up did not finish in 10 s");
    ioc.restart();
  }
  if (errors) throw std::runtime_error("levee: " + std::to_string(errors) + " errors in warm-up");
  std::vector<std::vector<std::uint32_t>> latencies(static_cast<std::size_t>(conns));
  for (auto& l : latencies) l.reserve(1 << 16);
  const cpu_time cpu_before = cpu_of(RUSAGE_SELF);
  const auto start = clock_type::now();
  const auto end = start + duration;
  // --cancellable: each connection's coroutine can be cancelled (a slot
  // bound to its co_spawn, as a caller inside with_timeout or `||`, or any
  // co_spawn given a cancellation slot, has), so each request's handler has
  // a connected cancellation slot: the client's path for such callers.
  std::vector<asio::cancellation_signal> signals(static_cast<std::size_t>(conns));
  for (std::size_t i = 0; i < latencies.size(); ++i) {
    if (cancellable) {
      asio::co_spawn(ioc, connection(c, url, end, latencies[i], errors),
                     asio::bind_cancellation_slot(signals[i].slot(), asio::detached));
    } else {
      asio::co_spawn(ioc, connection(c, url, end, latencies[i], errors), asio::detached);
    }
  }
  ioc.run_for(duration + 10s);
  const auto stop = clock_type::now();
  const cpu_time cpu_after = cpu_of(RUSAGE_SELF);
  if (!ioc.stopped()) throw std::runtime_error("levee: the run did not finish in time");
  std::vector<std::uint32_t> all;
  for (auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  figures f;
  f.errors = errors;
  f.requests = all.size();
  set_cpu(f, cpu_before, cpu_after);
  f.rps = static_cast<double>(all.size()) / std::chrono::duration<double>(stop - start).count();
  if (!all.empty()) {
    const auto k = static_cast<std::size_t>(std::ceil(0.99 * static_cast<double>(all.size()))) - 1;
    std::nth_element(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(k), all.end());
    f.p99_us = all[k] / 1e3;
  }
  return f;
}

std::vector<int> parse_list(const std::string& s) {
  std::vector<int> out;
  std::istringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    const int n = std::stoi(item);
    if (n < 1 || n > 500) throw std::invalid_argument("--connections: each in [1, 500]");
    out.push_back(n);
  }
  if (out.empty()) throw std::invalid_argument("--connections: none given");
  return out;
}

int run(int argc, char** argv) {
  int seconds = 5;
  bool smoke = false, levee_only = false, cancellable = false;
  std::vector<int> conn_counts{1, 16, 64};
  std::vector<std::string> schemes{"http", "https"};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(a + ": a value is missing");
      return argv[++i];
    };
    if (a == "--smoke") {
      smoke = true;
    } else if (a == "--duration") {
      seconds = std::stoi(value());
      if (seconds < 1 || seconds > 600) throw std::invalid_argument("--duration: in [1, 600] s");
    } else if (a == "--connections") {
      conn_counts = parse_list(value());
    } else if (a == "--only") {
      const std::string s = value();
      if (s != "http" && s != "https") throw std::invalid_argument("--only: http or https");
      schemes = {s};
    } else if (a == "--levee-only") {
      levee_only = true;  // for profiling the client alone
    } else if (a == "--cancellable") {
      cancellable = true;
    } else {
      std::fprintf(stderr,
                   "usage: %s [--duration SECONDS] [--connections 1,16,64] [--smoke] "
                   "[--only http|https] [--levee-only] [--cancellable]\n",
                   argv[0]);
      return 2;
    }
  }
  const bool have_wrk = ::access("/usr/bin/wrk", X_OK) == 0;
  if (!have_wrk && !levee_only) {
    if (!smoke) throw std::runtime_error("wrk not found: install Debian's wrk");
    std::puts("wrk not found (Debian's wrk): levee's client only");
    levee_only = true;
  }
  const int wrk_seconds = smoke ? 1 : seconds;
  const std::chrono::milliseconds levee_duration = smoke ? 200ms : std::chrono::seconds(seconds);

  // nginx keeps every connection for the whole run (wrk's and levee's alike):
  // no reconnection every 1000 requests, nginx's default.
  levee_test::nginx_fixture nginx({.keepalive_timeout = 60s, .keepalive_requests = 100000000});
  auto tls = flaky::make_client_context(nginx.certificates().ca_pem);

  std::printf("levee-bench-http: nginx on 127.0.0.1 (1 worker, `return 200`), %s s per figure%s\n",
              smoke ? "0.2 (levee) / 1 (wrk)" : std::to_string(seconds).c_str(),
              smoke ? ", --smoke: no timing checked" : "");
  std::printf("goal: levee >= 0.90x wrk's requests/s and levee's p99 <= wrk's\n\n");
  std::printf("%-6s %5s %12s %12s %7s %10s %10s %7s %9s %9s %7s  %s\n", "scheme", "conns",
              "wrk req/s", "levee req/s", "ratio", "wrk p99us", "levee p99", "ratio", "wrk cpu",
              "levee cpu", "ratio", "goal");
  bool all_met = true;
  std::string split;  // the CPU's user and system parts, printed after the table
  for (const auto& scheme : schemes) {
    // The certificate names localhost; wrk does not verify, levee does.
    const std::string url =
        scheme == "http" ? nginx.http_url("/") : nginx.https_url("localhost", "/");
    for (int n : conn_counts) {
      std::optional<figures> w;
      if (!levee_only) w = run_wrk(url, n, wrk_seconds);
      const figures l =
          run_levee(url, n, levee_duration, scheme == "https" ? tls : nullptr, cancellable);
      if (l.errors) throw std::runtime_error("levee: " + std::to_string(l.errors) + " errors");
      if (w && w->errors) throw std::runtime_error("wrk reported errors");
      if (l.requests == 0) throw std::runtime_error("levee: no request completed");
      if (w) {
        const double rr = l.rps / w->rps, pr = l.p99_us / w->p99_us;
        const bool met = rr >= 0.9 && pr <= 1.0;
        all_met = all_met && met;
        std::printf(
            "%-6s %5d %12.0f %12.0f %6.2fx %10.0f %10.0f %6.2fx %7.2fus %7.2fus %6.2fx  %s\n",
            scheme.c_str(), n, w->rps, l.rps, rr, w->p99_us, l.p99_us, pr, w->cpu_us_per_request,
            l.cpu_us_per_request, l.cpu_us_per_request / w->cpu_us_per_request,
            smoke ? "(smoke)" : (met ? "met" : "NOT met"));
        char row[160];
        std::snprintf(row, sizeof row, "%-6s %5d %9.2fus %9.2fus %10.2fus %10.2fus\n",
                      scheme.c_str(), n, w->user_us_per_request,
                      w->cpu_us_per_request - w->user_us_per_request, l.user_us_per_request,
                      l.cpu_us_per_request - l.user_us_per_request);
        split += row;
      } else {
        std::printf("%-6s %5d %12s %12.0f %7s %10s %10.0f %7s %9s %7.2fus %7s  %s\n",
                    scheme.c_str(), n, "-", l.rps, "-", "-", l.p99_us, "-", "-",
                    l.cpu_us_per_request, "-", "-");
      }
      std::fflush(stdout);
    }
  }
  if (!split.empty()) {
    std::printf("\nCPU per request, user and system:\n%-6s %5s %11s %11s %12s %12s\n%s", "scheme",
                "conns", "wrk user", "wrk sys", "levee user", "levee sys", split.c_str());
  }
  if (!smoke && !levee_only)
    std::printf("\ngoal %s at every concurrency\n", all_met ? "met" : "NOT met");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // wrk or nginx gone mid-run must not kill the bench by SIGPIPE.
  ::signal(SIGPIPE, SIG_IGN);
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "levee-bench-http: %s\n", e.what());
    return 1;
  }
}
