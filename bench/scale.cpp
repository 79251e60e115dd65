// How levee's cost grows with scale (bench/README.md, "How the cost grows"):
//
// 1. The registry at 1k, 100k and 1M keys: bytes per key (breaker, limit,
//    name, map), the cost of get(key) and of one guarded call by key, random
//    keys over the whole key set and one hot key, and the idle sweep at the
//    largest size (time, memory returned).
// 2. The fleet link with 1, 100 and 1,000 attached breakers on one instance
//    against a private redis-server (started here on a free port, stopped
//    however the program ends): Redis commands per breaker per second, the
//    link's CPU and Redis's CPU (its own INFO), and from them how many
//    instances one Redis serves at a 1 s bucket width before its CPU passes
//    50 %.
//
// A plain program printing tables, each figure next to its goal where the
// issue sets one. `--smoke`: tiny sizes, about two seconds, no timing checked
// (CI). `--registry` or `--fleet`: only that part.
#include <levee/levee.hpp>
#include <levee/registry.hpp>
#ifdef LEVEE_BENCH_FLEET
#include <levee/fleet.hpp>

#include "redis_fixture.hpp"
#endif

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>

#include <malloc.h>
#include <pthread.h>
#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <new>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <vector>

namespace asio = boost::asio;
using namespace std::chrono_literals;

// ---- allocation counting ------------------------------------------------------
// bench/counting_new.hpp: every operator new of this program is counted (live bytes
// requested), so that memory per key is the bytes levee asks for. malloc's own
// overhead (and the counter's 16-byte header) is not in it: the RSS figures
// printed next to it include both.

#include "counting_new.hpp"

namespace {

bool g_smoke = false;

// ---- measuring ------------------------------------------------------------------

using wall = std::chrono::steady_clock;

double seconds_since(wall::time_point t0) {
  return std::chrono::duration<double>(wall::now() - t0).count();
}

/// Resident set size, bytes (/proc/self/statm).
std::int64_t rss_bytes() {
  std::ifstream in("/proc/self/statm");
  std::int64_t pages = 0, resident = 0;
  in >> pages >> resident;
  return resident * static_cast<std::int64_t>(::sysconf(_SC_PAGESIZE));
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

/// CPU seconds a thread used (its CPU-time clock).
double thread_cpu_seconds(std::thread& t) {
  clockid_t id;
  if (::pthread_getcpuclockid(t.native_handle(), &id) != 0) return -1;
  timespec ts{};
  ::clock_gettime(id, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

double between(wall::time_point a, wall::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

/// A cheap random number generator (xorshift32): the same cost at every size.
struct rng {
  std::uint32_t s = 2463534242u;
  std::uint32_t next() noexcept {
    s ^= s << 13;
    s ^= s >> 17;
    s ^= s << 5;
    return s;
  }
  /// Uniform in [0, n).
  std::uint32_t below(std::uint32_t n) noexcept {
    return static_cast<std::uint32_t>((std::uint64_t{next()} * n) >> 32);
  }
};

/// Key `i` as "h0001234.svc:8080": 17 characters, past std::string's inline
/// buffer (15), as most host:port keys are; formatted in place, no allocation.
struct key_maker {
  char buf[18] = "h0000000.svc:8080";
  std::string_view operator()(std::uint32_t i) noexcept {
    for (int d = 7; d >= 1; --d) {
      buf[d] = static_cast<char>('0' + i % 10);
      i /= 10;
    }
    return {buf, 17};
  }
};

std::string count_text(std::size_t n) {
  if (n >= 1'000'000 && n % 1'000'000 == 0) return std::to_string(n / 1'000'000) + "M";
  if (n >= 1000 && n % 1000 == 0) return std::to_string(n / 1000) + "k";
  return std::to_string(n);
}

// ---- 1. the registry ------------------------------------------------------------

using registry_type = levee::breaker_registry;
using breaker_type = registry_type::breaker_type;
using limit_type = registry_type::limit_type;

asio::awaitable<std::tuple<boost::system::error_code, int>> ok_call(int x) {
  co_return std::tuple(boost::system::error_code(), x + 1);
}

/// Runs `body` as a coroutine on `ioc` until it finishes; rethrows.
template <class Body>
void run_on(asio::io_context& ioc, Body body) {
  std::exception_ptr failure;
  asio::co_spawn(ioc, body(), [&](std::exception_ptr e) { failure = e; });
  ioc.restart();
  ioc.run();
  if (failure) std::rethrow_exception(failure);
}

struct registry_row {
  std::size_t keys = 0;
  double create_ns = 0;              // per new key, through guards(key)
  double bytes_per_key = 0;          // counted
  double blocks_per_key = 0;         // live allocations
  double rss_per_key = 0;            // RSS growth / keys
  double floor_ns = 0;               // the harness: random index + key formatting
  double get_random_ns = 0;          // get(key), random keys
  double get_hot_ns = 0;             // get(key), one key
  double bare_random_ns = 0;         // find(key) in a bare unordered_map, random keys
  double call_random_ns = 0;         // guards(key) + one guarded call, random keys
  double call_hot_ns = 0;            // the same, one key
  double scan_ms = 0;                // evict_idle() with nothing idle
  double full_insert_us = 0;         // a new key into a full registry (evicts one, sampled LRU)
  double full_insert_median_us = 0;  // the same, the median key
  double full_insert_max_us = 0;     // the same, the slowest key
  double evict_ms = 0;               // evict_idle() with every key idle
  std::size_t evicted = 0;
  double evict_counted_mb = 0;      // counted bytes returned
  double evict_rss_mb = 0;          // RSS returned (before malloc_trim)
  double evict_rss_trim_mb = 0;     // RSS returned after malloc_trim(0)
  double longest_get_ms = 0;        // longest get() on another thread during the scan
  double longest_get_evict_ms = 0;  // the same during the sweep that evicts every key
};

/// Nanoseconds per operation of `op(i)` over `ops` operations, median of `reps`.
template <class Op>
double time_ops(std::size_t ops, int reps, Op op) {
  std::vector<double> runs;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = wall::now();
    for (std::size_t i = 0; i < ops; ++i) op(i);
    runs.push_back(seconds_since(t0) * 1e9 / static_cast<double>(ops));
  }
  return median(runs);
}

volatile std::uintptr_t g_sink = 0;

/// Nanoseconds per guarded call by key (`guards(pick())`, then one call
/// through the key's breaker and limit), in one coroutine on `ioc`, median of
/// `reps` runs of `ops` calls.
template <class Pick>
double time_guarded(asio::io_context& ioc, registry_type& reg, std::size_t ops, int reps,
                    Pick pick) {
  std::vector<double> runs;
  for (int r = 0; r < reps; ++r) {
    run_on(ioc, [&]() -> asio::awaitable<void> {
      const auto t0 = wall::now();
      for (std::size_t i = 0; i < ops; ++i) {
        auto g = reg.guards(pick());
        auto [ec, v] = co_await g(ok_call(static_cast<int>(i)));
        g_sink = g_sink + static_cast<std::uintptr_t>(v) + static_cast<std::uintptr_t>(!!ec);
      }
      runs.push_back(seconds_since(t0) * 1e9 / static_cast<double>(ops));
    });
  }
  return median(runs);
}

registry_row measure_registry(std::size_t n, bool last) {
  registry_row row;
  row.keys = n;
  const auto keys = static_cast<std::uint32_t>(n);
  const std::size_t ops = g_smoke ? 10'000 : 1'000'000;
  const int reps = g_smoke ? 1 : 5;
  asio::io_context ioc(1);
  levee::registry_options o;
  o.limits = levee::adaptive_limit_options{};
  o.max_breakers = n;
  o.idle_timeout = 1h;  // no sweep while measuring (one begins every idle_timeout / 4)
  malloc_trim(0);
  const auto bytes0 = g_live_bytes.load();
  const auto blocks0 = g_live_blocks.load();
  const auto rss0 = rss_bytes();
  auto reg = std::make_unique<registry_type>(ioc, o);
  key_maker key;
  {
    const auto t0 = wall::now();
    for (std::uint32_t i = 0; i < keys; ++i) (void)reg->guards(key(i));
    row.create_ns = seconds_since(t0) * 1e9 / static_cast<double>(n);
  }
  if (reg->size() != n) throw std::runtime_error("registry: not every key kept");
  row.bytes_per_key = static_cast<double>(g_live_bytes.load() - bytes0) / static_cast<double>(n);
  row.blocks_per_key = static_cast<double>(g_live_blocks.load() - blocks0) / static_cast<double>(n);
  row.rss_per_key = static_cast<double>(rss_bytes() - rss0) / static_cast<double>(n);

  rng r;
  row.floor_ns = time_ops(ops, reps, [&](std::size_t) {
    const auto k = key(r.below(keys));
    g_sink = g_sink + static_cast<std::uintptr_t>(k[7]);
  });
  row.get_random_ns = time_ops(ops, reps, [&](std::size_t) {
    auto b = reg->get(key(r.below(keys)));
    g_sink = g_sink + reinterpret_cast<std::uintptr_t>(b.get());
  });
  const std::uint32_t hot = keys / 2;
  row.get_hot_ns = time_ops(ops, reps, [&](std::size_t) {
    auto b = reg->get(key(hot));
    g_sink = g_sink + reinterpret_cast<std::uintptr_t>(b.get());
  });
  row.call_random_ns = time_guarded(ioc, *reg, ops, reps, [&] { return key(r.below(keys)); });
  row.call_hot_ns = time_guarded(ioc, *reg, ops, reps, [&] { return key(hot); });
  if (reg->evictions() != 0) throw std::runtime_error("registry: evicted while measuring");
  {
    // The same random lookups in a bare hash map of the same keys (the
    // registry's own hash, a 64-bit value per key): what any node-based map
    // of this size costs on this machine.
    std::unordered_map<std::string, std::uint64_t, levee::detail::string_hash, std::equal_to<>>
        bare;
    bare.reserve(n);
    for (std::uint32_t i = 0; i < keys; ++i) bare.emplace(std::string(key(i)), i);
    row.bare_random_ns = time_ops(ops, reps, [&](std::size_t) {
      auto it = bare.find(key(r.below(keys)));
      g_sink = g_sink + it->second;
    });
  }

  if (last) {
    // A whole sweep's scan with nothing idle (evict_idle; the gets run the
    // same scan a batch at a time, one sweep every idle_timeout / 4), while
    // another thread asks for one key: how long can a get wait behind a
    // sweep? (idle_timeout is 1 h here, so that thread's own gets do not
    // sweep.)
    {
      std::atomic<bool> sweeping{true};
      std::atomic<bool> started{false};
      std::int64_t longest = 0;
      std::thread other([&] {
        key_maker k2;
        while (sweeping.load()) {
          const auto t0 = wall::now();
          auto b = reg->get(k2(hot));
          longest = std::max<std::int64_t>(longest, (wall::now() - t0).count());
          started = true;
          g_sink = g_sink + reinterpret_cast<std::uintptr_t>(b.get());
        }
      });
      while (!started.load()) std::this_thread::yield();
      const auto t0 = wall::now();
      const auto gone = reg->evict_idle();
      row.scan_ms = seconds_since(t0) * 1e3;
      std::this_thread::sleep_for(1ms);
      sweeping = false;
      other.join();
      row.longest_get_ms = static_cast<double>(longest) * 1e-6;
      if (gone != 0) throw std::runtime_error("registry: evicted a key in use");
    }
    // A new key into the full registry: it evicts one (the least recently used of a sample).
    {
      const std::uint32_t extra = g_smoke ? 10 : 100;
      std::vector<double> each;
      for (std::uint32_t i = 0; i < extra; ++i) {
        const auto t0 = wall::now();
        (void)reg->guards(key(keys + i));
        each.push_back(seconds_since(t0) * 1e6);
      }
      double sum = 0;
      for (double us : each) sum += us;
      row.full_insert_us = sum / extra;
      std::sort(each.begin(), each.end());
      row.full_insert_median_us = each[each.size() / 2];
      row.full_insert_max_us = each.back();
      if (reg->evictions() != extra) throw std::runtime_error("registry: no eviction at the bound");
    }
    // Every key idle: idle_timeout 1 ms, wait, then sweep.
    auto idle = reg->options();
    idle.idle_timeout = 1ms;
    reg->reconfigure(idle);
    std::this_thread::sleep_for(20ms);
    malloc_trim(0);
    const auto bytes1 = g_live_bytes.load();
    const auto rss1 = rss_bytes();
    // Another thread asks for one key from 5 ms into the sweep on: its gets
    // wait for the sweep's lock, which lets them in between its batches (and,
    // idle_timeout being 1 ms, each runs one batch of a sweep of its own).
    std::atomic<bool> sweeping{true};
    std::int64_t longest = 0;
    std::thread other([&] {
      std::this_thread::sleep_for(5ms);
      key_maker k2;
      while (sweeping.load()) {
        const auto t1 = wall::now();
        auto b = reg->get(k2(hot));
        longest = std::max<std::int64_t>(longest, (wall::now() - t1).count());
        g_sink = g_sink + reinterpret_cast<std::uintptr_t>(b.get());
      }
    });
    const auto evictions0 = reg->evictions();
    const auto t0 = wall::now();
    (void)reg->evict_idle();
    row.evict_ms = seconds_since(t0) * 1e3;
    sweeping = false;
    other.join();
    row.evicted = reg->evictions() - evictions0;
    row.longest_get_evict_ms = static_cast<double>(longest) * 1e-6;
    (void)reg->remove(key(hot));  // the other thread's key
    if (reg->size() != 0) throw std::runtime_error("registry: idle keys left after the sweep");
    row.evict_counted_mb = static_cast<double>(bytes1 - g_live_bytes.load()) / 1e6;
    row.evict_rss_mb = static_cast<double>(rss1 - rss_bytes()) / 1e6;
    malloc_trim(0);
    row.evict_rss_trim_mb = static_cast<double>(rss1 - rss_bytes()) / 1e6;
  }
  reg.reset();
  return row;
}

/// Bytes one breaker, one limit and one name take alone (counted), each the
/// average of 1000 made as the registry makes them (make_shared).
struct parts {
  double breaker_unnamed = 0, breaker_named = 0, limit_named = 0;
  double breaker_create_ns = 0, limit_create_ns = 0;  // named, each
  double hardware_concurrency_ns = 0;                 // one std::thread::hardware_concurrency()
};

parts measure_parts() {
  asio::io_context ioc(1);
  { breaker_type warm_up(ioc); }
  parts p;
  key_maker key;
  constexpr int count = 1000;
  double create_ns = 0;
  auto measure = [&](auto make) {
    std::vector<std::shared_ptr<void>> held;
    held.reserve(count);
    const auto before = g_live_bytes.load();
    const auto t0 = wall::now();
    for (int i = 0; i < count; ++i) held.push_back(make(static_cast<std::uint32_t>(i)));
    create_ns = seconds_since(t0) * 1e9 / count;
    return static_cast<double>(g_live_bytes.load() - before) / count;
  };
  p.breaker_unnamed = measure([&](std::uint32_t) {
    return std::make_shared<breaker_type>(ioc.get_executor(), levee::breaker_options{});
  });
  p.breaker_named = measure([&](std::uint32_t i) {
    return std::make_shared<breaker_type>(ioc.get_executor(), levee::breaker_options{},
                                          std::string(key(i)));
  });
  p.breaker_create_ns = create_ns;
  p.limit_named = measure([&](std::uint32_t i) {
    return std::make_shared<limit_type>(ioc.get_executor(), levee::adaptive_limit_options{},
                                        std::string(key(i)));
  });
  p.limit_create_ns = create_ns;
  // The breaker's core asks for the number of CPUs (its shard count,
  // breaker/impl/breaker_core.ipp): each time one was made before issue 23,
  // once per process since. The call alone.
  const auto t0 = wall::now();
  for (int i = 0; i < count; ++i) g_sink = g_sink + std::thread::hardware_concurrency();
  p.hardware_concurrency_ns = seconds_since(t0) * 1e9 / count;
  return p;
}

void run_registry() {
  std::printf("== 1. Registry (breaker + adaptive limit per key, keys of 17 characters)\n");
  std::printf("load average before: %s\n", load_average().c_str());
  const auto p = measure_parts();
  const std::vector<std::size_t> sizes = g_smoke
                                             ? std::vector<std::size_t>{100, 1000}
                                             : std::vector<std::size_t>{1'000, 100'000, 1'000'000};
  std::vector<registry_row> rows;
  for (std::size_t i = 0; i < sizes.size(); ++i)
    rows.push_back(measure_registry(sizes[i], i + 1 == sizes.size()));

  std::printf(
      "\nMemory per key (counted: bytes levee asks operator new for; RSS: growth of "
      "the resident set / keys, malloc's overhead included)\n");
  std::printf(
      "  parts, made alone: breaker %.0f B unnamed, %.0f B named (name %.0f B), "
      "limit %.0f B named\n",
      p.breaker_unnamed, p.breaker_named, p.breaker_named - p.breaker_unnamed, p.limit_named);
  std::printf(
      "  made alone, each: breaker %.0f ns, limit %.0f ns (the registry's create "
      "ns/key below adds the map and its lock)\n",
      p.breaker_create_ns, p.limit_create_ns);
  std::printf(
      "  one std::thread::hardware_concurrency() (the breakers' cores: once per process): %.0f "
      "ns\n",
      p.hardware_concurrency_ns);
  std::printf("  %-6s %10s %8s %8s %22s %14s\n", "keys", "counted B", "blocks", "RSS B",
              "map (counted - parts)", "create ns/key");
  for (const auto& r : rows)
    std::printf("  %-6s %10.0f %8.2f %8.0f %22.0f %14.0f\n", count_text(r.keys).c_str(),
                r.bytes_per_key, r.blocks_per_key, r.rss_per_key,
                r.bytes_per_key - p.breaker_named - p.limit_named, r.create_ns);
  std::printf(
      "  (RSS includes malloc's overhead and the counter's own 16-byte header per "
      "block)\n");

  std::printf(
      "\nLookup (ns per operation, median of %d runs of %s operations; random keys "
      "uniform over the whole key set)\n",
      g_smoke ? 1 : 5, g_smoke ? "10k" : "1M");
  std::printf("  %-6s %8s %12s %12s %18s %15s %14s\n", "keys", "floor", "get random", "get hot",
              "guarded call rnd", "guarded hot", "bare map rnd");
  for (const auto& r : rows)
    std::printf("  %-6s %8.1f %12.1f %12.1f %18.1f %15.1f %14.1f\n", count_text(r.keys).c_str(),
                r.floor_ns, r.get_random_ns, r.get_hot_ns, r.call_random_ns, r.call_hot_ns,
                r.bare_random_ns);
  std::printf(
      "  (floor: the random index and the key's formatting alone; bare map: find() in "
      "an unordered_map<string, uint64_t> of the same keys)\n");
  const auto& lo = rows.front();
  const auto& hi = rows.back();
  const double get_ratio = hi.get_random_ns / lo.get_random_ns;
  const double net_ratio = (hi.get_random_ns - hi.floor_ns) / (lo.get_random_ns - lo.floor_ns);
  const double call_ratio = hi.call_random_ns / lo.call_random_ns;
  const double bare_ratio = hi.bare_random_ns / lo.bare_random_ns;
  std::printf("  get random, %s against %s: %.2fx (%.2fx without the floor); goal <= 2x: %s\n",
              count_text(hi.keys).c_str(), count_text(lo.keys).c_str(), get_ratio, net_ratio,
              g_smoke          ? "not judged (--smoke)"
              : get_ratio <= 2 ? "met"
                               : "NOT met");
  std::printf("  guarded call random, %s against %s: %.2fx; goal <= 2x: %s\n",
              count_text(hi.keys).c_str(), count_text(lo.keys).c_str(), call_ratio,
              g_smoke           ? "not judged (--smoke)"
              : call_ratio <= 2 ? "met"
                                : "NOT met");
  std::printf(
      "  bare map find random, %s against %s: %.2fx (no goal: what the hash map alone "
      "does)\n",
      count_text(hi.keys).c_str(), count_text(lo.keys).c_str(), bare_ratio);

  std::printf("\nEviction at %s keys\n", count_text(hi.keys).c_str());
  std::printf(
      "  evict_idle() with nothing idle (the scan the gets run a batch at a time): "
      "%.1f ms\n",
      hi.scan_ms);
  std::printf("  longest get() of one key on another thread during that scan: %.1f ms\n",
              hi.longest_get_ms);
  std::printf(
      "  a new key into the full registry (max_breakers = %s, sampled LRU): %.1f us per key "
      "(median %.1f, slowest %.1f)\n",
      count_text(hi.keys).c_str(), hi.full_insert_us, hi.full_insert_median_us,
      hi.full_insert_max_us);
  std::printf("  evict_idle() with every key idle: %zu evicted in %.1f ms (%.0f ns per key)\n",
              hi.evicted, hi.evict_ms,
              hi.evicted ? hi.evict_ms * 1e6 / static_cast<double>(hi.evicted) : 0.0);
  std::printf(
      "  longest get() of one key on another thread, from 5 ms into that sweep on: "
      "%.1f ms\n",
      hi.longest_get_evict_ms);
  std::printf(
      "  memory returned: %.1f MB counted; RSS %.1f MB at once, %.1f MB after "
      "malloc_trim(0)\n",
      hi.evict_counted_mb, hi.evict_rss_mb, hi.evict_rss_trim_mb);
  std::printf("load average after: %s\n\n", load_average().c_str());
}

// ---- 2. the fleet link ------------------------------------------------------------

#ifdef LEVEE_BENCH_FLEET

/// The numbers of one `INFO` section: "name:value" lines.
std::map<std::string, std::string> info(const levee_test::redis_fixture& redis,
                                        const std::string& section) {
  std::map<std::string, std::string> out;
  std::istringstream in(redis.command({"INFO", section}));
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const auto colon = line.find(':');
    if (line.empty() || line[0] == '#' || colon == std::string::npos) continue;
    out[line.substr(0, colon)] = line.substr(colon + 1);
  }
  return out;
}

/// A call that fails when `fail` (a broken pipe), else answers `x`.
asio::awaitable<std::tuple<boost::system::error_code, int>> maybe_fails(bool fail, int x) {
  if (fail) co_return std::tuple(boost::system::error_code(asio::error::broken_pipe), 0);
  co_return std::tuple(boost::system::error_code(), x);
}

/// What Redis says of itself at one moment.
struct redis_snapshot {
  double commands = 0;  // total_commands_processed
  double cpu = 0;       // used_cpu_sys + used_cpu_user, seconds
  double evalsha = 0;   // cmdstat_evalsha calls
  double ping = 0;      // cmdstat_ping calls
  // When each INFO answered: every figure is divided by its own interval
  // (an INFO over a fresh connection can take a while on a loaded machine).
  wall::time_point stats_at, cpu_at, commandstats_at;
};

double cmdstat_calls(const std::map<std::string, std::string>& stats, const std::string& cmd) {
  auto it = stats.find("cmdstat_" + cmd);
  if (it == stats.end()) return 0;
  const auto pos = it->second.find("calls=");
  return pos == std::string::npos ? 0 : std::stod(it->second.substr(pos + 6));
}

redis_snapshot snapshot(const levee_test::redis_fixture& redis) {
  redis_snapshot s;
  // INFO stats first: its count includes itself, so from one snapshot's to
  // the next's this program adds three INFOs (cpu, commandstats, stats):
  // subtracted by the callers.
  const auto stats = info(redis, "stats");
  s.stats_at = wall::now();
  const auto cpu = info(redis, "cpu");
  s.cpu_at = wall::now();
  const auto cmds = info(redis, "commandstats");
  s.commandstats_at = wall::now();
  s.commands = std::stod(stats.at("total_commands_processed"));
  s.cpu = std::stod(cpu.at("used_cpu_sys")) + std::stod(cpu.at("used_cpu_user"));
  s.evalsha = cmdstat_calls(cmds, "evalsha");
  s.ping = cmdstat_calls(cmds, "ping");
  return s;
}

struct fleet_row {
  std::size_t breakers = 0;   // per instance
  std::size_t instances = 1;  // links
  bool spread = true;         // attached over one bucket width, else at once
  double seconds = 0;
  double commands = 0, evalsha = 0, ping = 0;  // per second, whole instance
  double rounds = 0;                           // per second (the link's metrics)
  double redis_cpu = 0;                        // fraction of a core
  double link_cpu = 0;                         // fraction of a core (the link's thread)
  double traffic_cpu = 0;                      // the callers' thread
  double calls = 0, failures = 0;              // per second, all breakers
  std::uint64_t errors = 0;
};

/// Redis alone for `seconds`: its idle CPU (serverCron).
fleet_row measure_redis_idle(const levee_test::redis_fixture& redis, double seconds) {
  fleet_row row;
  const auto a = snapshot(redis);
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  const auto b = snapshot(redis);
  row.seconds = between(a.stats_at, b.stats_at);
  row.commands = (b.commands - a.commands - 3) / row.seconds;
  row.redis_cpu = (b.cpu - a.cpu) / between(a.cpu_at, b.cpu_at);
  return row;
}

/// The links' metrics added up (connected: all of them).
levee::fleet_metrics sum_metrics(const std::vector<std::unique_ptr<levee::fleet_link>>& links) {
  levee::fleet_metrics sum;
  sum.connected = true;
  for (const auto& l : links) {
    const auto m = l->metrics();
    sum.connected = sum.connected && m.connected;
    sum.rounds += m.rounds;
    sum.errors += m.errors;
    sum.breakers += m.breakers;
  }
  return sum;
}

/// A thread running an io_context, stopped and joined however the caller
/// leaves: `finish()` waits up to 2 s for run() to return by itself, then
/// stops the io_context.
class runner {
 public:
  explicit runner(asio::io_context& ioc)
      : ioc_(ioc), thread_([this] {
          ioc_.run();
          done_ = true;
        }) {}
  ~runner() { finish(); }
  runner(const runner&) = delete;
  runner& operator=(const runner&) = delete;
  void finish() {
    if (!thread_.joinable()) return;
    const auto deadline = wall::now() + 2s;
    while (!done_.load() && wall::now() < deadline) std::this_thread::sleep_for(1ms);
    ioc_.stop();
    thread_.join();
  }
  std::thread& thread() { return thread_; }

 private:
  asio::io_context& ioc_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

/// `instances` instances of `n` breakers each (the same names in every
/// instance), each instance with its own link (its own instance id, the same
/// key prefix: they share the breakers' keys as a fleet does); the links on
/// one thread, the breakers called from another at `rate` calls per second
/// in all, round robin (one in ten failing: the breakers stay CLOSED);
/// measured for `seconds` after `warm_up`.
fleet_row measure_fleet(const levee_test::redis_fixture& redis, std::size_t n,
                        std::size_t instances, bool spread, double rate,
                        std::chrono::nanoseconds window, double warm_up, double seconds) {
  fleet_row row;
  row.spread = spread;
  row.breakers = n;
  row.instances = instances;
  const std::size_t all = n * instances;
  asio::io_context traffic_ioc(1);
  asio::io_context link_ioc(1);
  levee::breaker_options bo;
  bo.window = window;
  bo.window_buckets = 10;
  std::vector<std::unique_ptr<levee::circuit_breaker>> breakers;
  for (std::size_t i = 0; i < all; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "svc-%04zu:8080", i % std::max<std::size_t>(n, 1));
    breakers.push_back(std::make_unique<levee::circuit_breaker>(traffic_ioc, bo, name));
  }
  std::vector<std::unique_ptr<levee::fleet_link>> links;
  for (std::size_t x = 0; x < instances; ++x) {
    levee::fleet_options fo;
    fo.address = redis.address();
    fo.instance_id = "bench-" + std::to_string(x);
    fo.key_prefix = "bench-" + std::to_string(n) + "x" + std::to_string(instances);
    links.push_back(std::make_unique<levee::fleet_link>(link_ioc.get_executor(), fo));
  }
  // Declared after the links: closed first, then joined (the destructor).
  struct closer {
    std::vector<std::unique_ptr<levee::fleet_link>>& links;
    ~closer() {
      for (auto& l : links) l->close();
    }
  };
  runner link_thread(link_ioc);
  closer close_links{links};
  for (auto& l : links) l->async_wait_connected(5s, asio::use_future).get();
  // `spread`: attached over one bucket width, as breakers made on demand
  // would be; each breaker's rounds follow its attachment by one width, so
  // every round is a write of its own. Else all at once, as at a start: the
  // rounds come in bursts, written and read many per system call.
  const auto attach_start = wall::now();
  for (std::size_t i = 0; i < all; ++i) {
    if (spread)
      std::this_thread::sleep_until(attach_start + window / 10 * static_cast<std::int64_t>(i) /
                                                       static_cast<std::int64_t>(all));
    links[i / n]->attach(*breakers[i]);
  }

  // The callers: every millisecond, rate / 1000 calls, round robin over the
  // breakers; one in ten fails.
  std::atomic<bool> running{all > 0};
  std::atomic<std::uint64_t> calls{0}, failures{0};
  if (all > 0)
    asio::co_spawn(
        traffic_ioc,
        [&]() -> asio::awaitable<void> {
          asio::steady_timer tick(co_await asio::this_coro::executor);
          auto next = wall::now();
          std::uint64_t i = 0;
          double owed = 0;
          while (running.load(std::memory_order_relaxed)) {
            next += 1ms;
            tick.expires_at(next);
            co_await tick.async_wait(asio::use_awaitable);
            owed += rate / 1000.0;
            for (; owed >= 1; owed -= 1, ++i) {
              auto& b = *breakers[i % all];
              const bool fail = (i / all) % 10 == 3;
              auto [ec, v] = co_await b(maybe_fails(fail, static_cast<int>(i)));
              calls.fetch_add(1, std::memory_order_relaxed);
              if (ec) failures.fetch_add(1, std::memory_order_relaxed);
              g_sink = g_sink + static_cast<std::uintptr_t>(v);
            }
          }
        },
        asio::detached);
  // Declared last: stopped first (the coroutine ends within a millisecond).
  struct stopper {
    std::atomic<bool>& running;
    ~stopper() { running = false; }
  };
  runner traffic_thread(traffic_ioc);
  stopper stop_traffic{running};

  std::this_thread::sleep_for(std::chrono::duration<double>(warm_up));
  const auto m0 = sum_metrics(links);
  const auto c0 = calls.load(), f0 = failures.load();
  const double link0 = thread_cpu_seconds(link_thread.thread());
  const double traffic0 = thread_cpu_seconds(traffic_thread.thread());
  const auto local0 = wall::now();
  const auto a = snapshot(redis);
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  const auto b = snapshot(redis);
  const double link1 = thread_cpu_seconds(link_thread.thread());
  const double traffic1 = thread_cpu_seconds(traffic_thread.thread());
  const auto m1 = sum_metrics(links);
  const auto c1 = calls.load(), f1 = failures.load();
  const double t = between(local0, wall::now());
  row.seconds = between(a.stats_at, b.stats_at);
  // Minus this program's three INFOs.
  row.commands = (b.commands - a.commands - 3) / row.seconds;
  row.evalsha = (b.evalsha - a.evalsha) / between(a.commandstats_at, b.commandstats_at);
  row.ping = (b.ping - a.ping) / between(a.commandstats_at, b.commandstats_at);
  row.redis_cpu = (b.cpu - a.cpu) / between(a.cpu_at, b.cpu_at);
  row.link_cpu = (link1 - link0) / t;
  row.traffic_cpu = (traffic1 - traffic0) / t;
  row.rounds = static_cast<double>(m1.rounds - m0.rounds) / t;
  row.calls = static_cast<double>(c1 - c0) / t;
  row.failures = static_cast<double>(f1 - f0) / t;
  row.errors = m1.errors - m0.errors;
  if (!m1.connected || m1.breakers != all)
    throw std::runtime_error("fleet: link not connected or not every breaker attached");
  for (auto& br : breakers)
    if (br->state() != levee::circuit_state::closed)
      throw std::runtime_error("fleet: a breaker is no longer CLOSED");
  return row;
}

void run_fleet() {
  std::printf("== 2. Fleet link against a private redis-server\n");
  std::printf("load average before: %s\n", load_average().c_str());
  const double warm_up = g_smoke ? 0.2 : 2.0;
  const double seconds = g_smoke ? 0.3 : 10.0;
  const double rate = g_smoke ? 2'000 : 20'000;
  // The smoke run uses 100 ms buckets so that rounds happen in its 0.3 s.
  const std::chrono::nanoseconds window = g_smoke ? 1s : 10s;
  const double width = std::chrono::duration<double>(window).count() / 10;
  levee_test::redis_fixture redis;
  const auto idle = measure_redis_idle(redis, g_smoke ? 0.2 : seconds);
  // {breakers per instance, instances}: one instance at each size, then ten
  // instances sharing 100 breakers (a fleet: failing sets of ten members).
  // {breakers per instance, instances, attached over one width}.
  struct size {
    std::size_t n, k;
    bool spread;
  };
  const std::vector<size> sizes =
      g_smoke
          ? std::vector<size>{{0, 1, true}, {10, 1, true}, {10, 2, false}}
          : std::vector<size>{{0, 1, true},    {1, 1, true},    {100, 1, true},   {1000, 1, true},
                              {100, 10, true}, {100, 1, false}, {1000, 1, false}, {100, 10, false}};
  std::vector<fleet_row> rows;
  for (auto [n, k, spread] : sizes)
    rows.push_back(measure_fleet(redis, n, k, spread, rate, window, warm_up, seconds));

  std::printf(
      "\nbucket width %.1f s, %.0f calls/s in all (round robin, one in ten fails), "
      "%.1f s measured per size after %.1f s of warm-up; breakers attached spread over one "
      "bucket width (as made on demand) or all at once (as at a start: rounds in bursts)\n",
      width, rate, seconds, warm_up);
  std::printf("Redis alone: %.1f commands/s, CPU %.3f %% of a core\n", idle.commands,
              idle.redis_cpu * 100);
  std::printf("  %-8s %-9s %-8s %10s %10s %8s %8s %11s %11s %10s %10s %7s\n", "attached",
              "instances", "breakers", "cmds/s", "EVALSHA/s", "PING/s", "rounds/s", "Redis CPU%",
              "link CPU%", "calls/s", "failures/s", "errors");
  for (const auto& r : rows)
    std::printf("  %-8s %-9zu %-8zu %10.1f %10.1f %8.1f %8.1f %11.3f %11.3f %10.0f %10.0f %7llu\n",
                r.spread ? "spread" : "at once", r.instances, r.breakers, r.commands, r.evalsha,
                r.ping, r.rounds, r.redis_cpu * 100, r.link_cpu * 100, r.calls, r.failures,
                static_cast<unsigned long long>(r.errors));
  const auto& base = rows.front();  // one link with no breaker: its PINGs only
  std::printf(
      "\nPer breaker (minus the links with no breaker, / all breakers) and instances per "
      "Redis\n");
  std::printf("  %-8s %-9s %-8s %12s %15s %14s %15s %20s %18s\n", "attached", "instances",
              "breakers", "cmds/s each", "Redis CPU us/s", "link CPU us/s", "Redis us/round",
              "Redis CPU/instance", "instances at 50 %");
  for (const auto& r : rows) {
    if (r.breakers == 0) continue;
    const double k = static_cast<double>(r.instances);
    const double all = static_cast<double>(r.breakers) * k;
    // An instance costs Redis what it adds over Redis alone; Redis's own idle
    // work is paid once, whatever the number of instances.
    const double per_instance = (r.redis_cpu - idle.redis_cpu) / k;
    const double fit = per_instance > 0 ? (0.5 - idle.redis_cpu) / per_instance : 0;
    // Redis's CPU beyond its idle work and the links' PINGs, per EVALSHA.
    const double added = r.redis_cpu - idle.redis_cpu - k * (base.redis_cpu - idle.redis_cpu);
    std::printf("  %-8s %-9zu %-8zu %12.2f %15.1f %14.1f %15.1f %19.3f%% %18.0f\n",
                r.spread ? "spread" : "at once", r.instances, r.breakers,
                (r.commands - k * base.commands) / all, added / all * 1e6,
                (r.link_cpu - k * base.link_cpu) / all * 1e6,
                r.evalsha > 0 ? added / r.evalsha * 1e6 : 0.0, per_instance * 100, fit);
  }
  std::printf(
      "  (instances at 50 %%: (0.5 - Redis alone) / (Redis CPU per instance - as measured, "
      "Redis alone subtracted); one core = 100 %%)\n");
  std::printf("load average after: %s\n\n", load_average().c_str());
}

#endif

}  // namespace

int main(int argc, char** argv) {
  bool registry = true, fleet = true;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--smoke") {
      g_smoke = true;
    } else if (a == "--registry") {
      fleet = false;
    } else if (a == "--fleet") {
      registry = false;
    } else {
      std::fprintf(stderr, "usage: %s [--smoke] [--registry | --fleet]\n", argv[0]);
      return 2;
    }
  }
  try {
    std::printf("levee-bench-scale%s, nproc %u\n\n", g_smoke ? " --smoke" : "",
                std::thread::hardware_concurrency());
    if (registry) run_registry();
#ifdef LEVEE_BENCH_FLEET
    if (fleet) run_fleet();
#else
    if (fleet) std::printf("== 2. Fleet link: not built (levee::fleet needs hiredis)\n");
#endif
  } catch (const std::exception& e) {
    std::fprintf(stderr, "levee-bench-scale: %s\n", e.what());
    return 1;
  }
  return 0;
}
