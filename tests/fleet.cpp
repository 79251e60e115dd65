// levee::fleet against a real redis-server (tests/redis_fixture.*): instances
// as separate io_contexts in this process, on real time with short buckets
// (50 ms) and bounded waits.
#include "fleet_support.hpp"
#include "redis_fixture.hpp"

#include <levee/fleet/fleet.hpp>

#include <boost/asio/executor_work_guard.hpp>

#include <catch2/catch.hpp>

#include <sys/prctl.h>
#include <unistd.h>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

using namespace levee_test;
using levee::circuit_state;

TEST_CASE("fleet_options are validated by name") {
  auto rejects = [](levee::fleet_options o, const std::string& member) {
    try {
      levee::validate(o);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what()).find("fleet_options::" + member) != std::string::npos;
    }
    return false;
  };
  levee::fleet_options o;
  CHECK_NOTHROW(levee::validate(o));
  o.address = "localhost";
  CHECK(rejects(o, "address"));
  o.address = "127.0.0.1:0";
  CHECK(rejects(o, "address"));
  o.address = "::1:6379";
  CHECK(rejects(o, "address"));
  o = {};
  o.address = "[::1]:6379";
  CHECK_NOTHROW(levee::validate(o));
  o.address = "/run/redis.sock";
  CHECK_NOTHROW(levee::validate(o));
  o = {};
  o.key_prefix = "";
  CHECK(rejects(o, "key_prefix"));
  o.key_prefix = "a{b";
  CHECK(rejects(o, "key_prefix"));
  o = {};
  o.instance_id = "a b";
  CHECK(rejects(o, "instance_id"));
  o = {};
  o.quorum = 0;
  CHECK(rejects(o, "quorum"));
  o = {};
  o.command_timeout = 0ms;
  CHECK(rejects(o, "command_timeout"));
  o = {};
  o.connect_timeout = -1ms;
  CHECK(rejects(o, "connect_timeout"));
  o = {};
  o.reconnect_min = 2s;
  o.reconnect_max = 1s;
  CHECK(rejects(o, "reconnect_max"));
  o = {};
  o.probe_lease = 500us;
  CHECK(rejects(o, "probe_lease"));
  o = {};
  o.command_timeout = std::chrono::nanoseconds::max();
  o.connect_timeout = std::chrono::nanoseconds::max();
  o.reconnect_max = std::chrono::nanoseconds::max();
  o.probe_lease = std::chrono::nanoseconds::max();
  CHECK_NOTHROW(levee::validate(o));
  asio::io_context ioc;
  CHECK_THROWS_AS(levee::fleet_link(ioc.get_executor(), levee::fleet_options{.quorum = 0}),
                  std::invalid_argument);
}

TEST_CASE("a link connects over TCP and over a Unix socket, and with AUTH") {
  SECTION("TCP and Unix socket") {
    redis_fixture redis;
    for (const std::string& address : {redis.address(), redis.socket_path()}) {
      const auto fo = fast_fleet(address);
      fleet_instance i(fast_breaker(), &fo);
      REQUIRE(wait_until([&] { return i.connected() && i.link().metrics().rounds >= 2; }));
      const auto m = i.link().metrics();
      CHECK(m.connects == 1);
      CHECK(m.breakers == 1);
      CHECK(m.errors == 0);
    }
  }
  SECTION("AUTH") {
    redis_fixture redis({.password = "s3cret"});
    auto good = fast_fleet(redis.address());
    good.password = "s3cret";
    auto bad = good;
    bad.password = "wrong";
    auto none = good;
    none.password = "";
    fleet_instance a(fast_breaker(), &good);
    fleet_instance b(fast_breaker(), &bad);
    fleet_instance c(fast_breaker(), &none);
    REQUIRE(wait_until([&] { return a.connected() && a.link().metrics().rounds >= 2; }));
    REQUIRE(wait_until([&] { return b.link().metrics().errors >= 2; }));
    REQUIRE(wait_until([&] { return c.link().metrics().errors >= 2; }));
    CHECK_FALSE(b.connected());
    CHECK_FALSE(c.connected());
    CHECK(b.link().metrics().connects == 0);
  }
}

TEST_CASE("events tell connected and disconnected") {
  redis_fixture redis;
  const auto fo = fast_fleet(redis.address());
  asio::io_context ioc;
  levee::fleet_link link(ioc.get_executor(), fo);
  std::vector<std::string> seen, failed;  // failed: the attempts while Redis is down
  link.listen([&](const levee::fleet_event& e) {
    if (e.kind == levee::fleet_event_kind::connect_failed) return failed.push_back(e.reason);
    seen.push_back(std::string(levee::to_string(e.kind)) + (e.reason.empty() ? "" : ":") +
                   e.reason);
  });
  // The context runs until the test stops it (it once ran for a fixed 3 s,
  // which a loaded CI machine outlasted before the reconnect: the last wait
  // failed, and the thread still joinable aborted the process).
  auto work = asio::make_work_guard(ioc);
  std::thread t([&] { ioc.run(); });
  struct stop_and_join {
    asio::io_context& ioc;
    std::thread& t;
    ~stop_and_join() {
      ioc.stop();
      if (t.joinable()) t.join();
    }
  } guard{ioc, t};
  REQUIRE(wait_until([&] { return link.metrics().connected; }));
  redis.kill();
  REQUIRE(wait_until([&] { return !link.metrics().connected; }));
  redis.restart();
  REQUIRE(wait_until([&] { return link.metrics().connected; }, 10'000ms));
  ioc.stop();
  t.join();
  // While Redis is down, each failed attempt says so (there may be none).
  std::erase_if(seen, [](const std::string& e) { return e.starts_with("connect_failed:"); });
  REQUIRE(seen.size() == 3);
  CHECK(seen[0] == "connected");
  CHECK(seen[1] == "disconnected:connection closed");
  CHECK(seen[2] == "connected");
  for (const auto& why : failed) CHECK(why.starts_with("connect failed: "));
  CHECK(link.metrics().connects == 2);
  CHECK(link.metrics().disconnects == 1);
}

namespace {

// Calls that reached the failing downstream until every instance was open.
std::uint64_t failures_until_all_open(fleet_vector& fleet) {
  for (auto& i : fleet) i->traffic = false;
  set_all(fleet, &fleet_instance::sick, true);
  set_all(fleet, &fleet_instance::traffic, true);
  REQUIRE(wait_until([&] { return all_in(fleet, circuit_state::open); }, 5000ms));
  set_all(fleet, &fleet_instance::traffic, false);
  return total(fleet, &fleet_instance::failed);
}

}  // namespace

TEST_CASE("sharing evidence opens the fleet sooner than each breaker alone") {
  redis_fixture redis;
  // Each instance needs 40 calls alone (400 ms at one call per 10 ms).
  const auto bo = fast_breaker(40);
  std::uint64_t alone = 0, shared = 0;
  {
    auto fleet = make_fleet(4, bo, nullptr);
    alone = failures_until_all_open(fleet);
  }
  {
    const auto fo = fast_fleet(redis.address());
    auto fleet = make_fleet(4, bo, &fo);
    set_all(fleet, &fleet_instance::traffic, false);
    REQUIRE(wait_until([&] { return all_connected(fleet); }));
    shared = failures_until_all_open(fleet);
    // Counted just after the breaker's transition: wait for the count too.
    wait_until([&] { return opens_received(fleet) >= 1; });
    CHECK(opens_received(fleet) >= 1);
  }
  WARN("failed calls before all 4 were open: alone " << alone << ", shared " << shared);
  CHECK(alone >= 160);
  CHECK(shared * 4 < alone * 3);
}

TEST_CASE("one sick instance does not open the others (quorum)") {
  redis_fixture redis;
  const auto bo = fast_breaker(10);
  auto run = [&](std::size_t quorum) {
    auto fo = fast_fleet(redis.address());
    fo.quorum = quorum;
    fo.key_prefix = "q" + std::to_string(quorum);
    auto fleet = make_fleet(2, bo, &fo);
    set_all(fleet, &fleet_instance::traffic, false);
    REQUIRE(wait_until([&] { return all_connected(fleet); }));
    // Instance 0's own network is broken: all its calls fail; instance 1's
    // succeed. Same call rates: the fleet's failure rate is 50 %, at the
    // threshold.
    fleet[0]->sick = true;
    set_all(fleet, &fleet_instance::traffic, true);
    REQUIRE(wait_until([&] { return fleet[0]->breaker().state() == circuit_state::open; }));
    std::this_thread::sleep_for(600ms);  // a whole window and more
    const bool healthy_stayed_closed = fleet[1]->opens_from_closed() == 0;
    const auto published = fleet[0]->link().metrics().opens_published;
    return std::pair(healthy_stayed_closed, published);
  };
  const auto [closed_with_quorum, published_with_quorum] = run(2);
  CHECK(closed_with_quorum);
  CHECK(published_with_quorum == 0);
  // Without a quorum the sick instance's evidence opens the healthy one: the
  // trap the quorum avoids.
  const auto [closed_without, published_without] = run(1);
  CHECK_FALSE(closed_without);
  CHECK(published_without >= 1);
}

TEST_CASE("one probe per open period across the fleet") {
  redis_fixture redis;
  const auto bo = fast_breaker(10);
  auto half_opens_in = [&](const levee::fleet_options* fo, std::uint64_t& probes,
                           std::uint64_t& leases) {
    auto fleet = make_fleet(4, bo, fo);
    if (fo) {
      set_all(fleet, &fleet_instance::traffic, false);
      REQUIRE(wait_until([&] { return all_connected(fleet); }));
      set_all(fleet, &fleet_instance::traffic, true);
    }
    set_all(fleet, &fleet_instance::sick, true);
    REQUIRE(wait_until([&] { return all_in(fleet, circuit_state::open); }));
    std::this_thread::sleep_for(2000ms);  // about six open periods, the API still down
    set_all(fleet, &fleet_instance::traffic, false);
    probes = total(fleet, &fleet_instance::probes);
    leases = 0;
    if (fo)
      for (auto& i : fleet) leases += i->link().metrics().probe_leases_won;
    return total(fleet, &fleet_instance::half_opens);
  };
  std::uint64_t local_probes = 0, shared_probes = 0, unused = 0, leases = 0;
  const std::uint64_t local = half_opens_in(nullptr, local_probes, unused);
  const auto fo = fast_fleet(redis.address());
  const std::uint64_t shared = half_opens_in(&fo, shared_probes, leases);
  WARN("half-open rounds in 2 s of outage, 4 instances: local "
       << local << " (probes " << local_probes << "), shared " << shared << " (probes "
       << shared_probes << ")");
  CHECK(local >= 16);
  CHECK(shared >= 3);
  CHECK(shared <= 9);       // 2 s / 300 ms, plus the lease race's lateness
  CHECK(leases == shared);  // every round was a won lease
  CHECK(shared_probes <= shared);
}

TEST_CASE("a dead prober's lease expires and another instance probes") {
  redis_fixture redis;
  auto fo = fast_fleet(redis.address());
  fo.probe_lease = 400ms;
  auto fleet = make_fleet(3, fast_breaker(10), &fo);
  set_all(fleet, &fleet_instance::traffic, false);
  REQUIRE(wait_until([&] { return all_connected(fleet); }));
  set_all(fleet, &fleet_instance::sick, true);
  set_all(fleet, &fleet_instance::traffic, true);
  REQUIRE(wait_until([&] { return all_in(fleet, circuit_state::open); }));
  // Only instance 0 has calls to make: it takes the lease (the idle ones
  // leave it), its probe hangs, and it dies with its probe in flight.
  fleet[1]->traffic = false;
  fleet[2]->traffic = false;
  fleet[0]->delay_ms = 5000;
  fleet_instance* winner = fleet[0].get();
  REQUIRE(wait_until([&] { return winner->probes.load() == 1; }));
  winner->die();
  const auto died = std::chrono::steady_clock::now();
  fleet[1]->traffic = true;
  fleet[2]->traffic = true;
  fleet_instance* next = nullptr;
  REQUIRE(wait_until(
      [&] {
        for (auto& i : fleet)
          if (i.get() != winner && i->probes.load() > 0) next = i.get();
        return next != nullptr;
      },
      3000ms));
  const auto waited = std::chrono::steady_clock::now() - died;
  WARN("another instance probed "
       << std::chrono::duration_cast<std::chrono::milliseconds>(waited).count()
       << " ms after the prober died (lease 400 ms)");
  CHECK(waited >= 200ms);  // not before the lease (renewed a little before the death) ran out
  CHECK(next->link().metrics().probe_leases_won >= 1);
  CHECK(winner->link().metrics().probe_leases_won >= 1);
}

namespace {
// Sharing works (again): after an empty window (the healthy calls age out,
// so that the fleet's window and each local one start alike), the instances
// fall sick together and the fleet's window opens at least one of them.
void expect_sharing(fleet_vector& fleet) {
  set_all(fleet, &fleet_instance::traffic, false);
  std::this_thread::sleep_for(600ms);  // a whole window and more, against a real Redis
  set_all(fleet, &fleet_instance::sick, true);
  set_all(fleet, &fleet_instance::traffic, true);
  REQUIRE(wait_until([&] { return all_in(fleet, circuit_state::open); }));
  wait_until([&] { return opens_received(fleet) >= 1; });  // counted just after
  CHECK(opens_received(fleet) >= 1);
}
}  // namespace

TEST_CASE("Redis stopped (SIGSTOP): no call fails or waits, the link reconnects, sharing resumes") {
  redis_fixture redis;
  const auto fo = fast_fleet(redis.address());
  auto fleet = make_fleet(3, fast_breaker(40), &fo);
  REQUIRE(wait_until([&] { return all_connected(fleet); }));
  redis.pause();
  REQUIRE(wait_until([&] {
    for (auto& i : fleet)
      if (i->connected()) return false;
    return true;
  }));
  std::this_thread::sleep_for(700ms);  // reconnection attempts time out meanwhile
  for (auto& i : fleet) {
    CHECK(i->failed.load() == 0);
    CHECK(i->rejected.load() == 0);
    CHECK(i->reached.load() > 50);
    CHECK(i->slowest_ns.load() < std::chrono::nanoseconds(50ms).count());
    CHECK(i->link().metrics().errors >= 2);
  }
  redis.resume();
  REQUIRE(wait_until([&] { return all_connected(fleet); }));
  const auto rounds = fleet[0]->link().metrics().rounds;
  REQUIRE(wait_until([&] { return fleet[0]->link().metrics().rounds > rounds + 2; }));
  // Sharing again: the fleet's window opens the breakers before any reaches
  // its own 40 calls.
  expect_sharing(fleet);
}

TEST_CASE("Redis killed and restarted with its data lost: local meanwhile, then shared again") {
  redis_fixture redis;
  const auto fo = fast_fleet(redis.address());
  auto fleet = make_fleet(3, fast_breaker(40), &fo);
  REQUIRE(wait_until([&] { return all_connected(fleet); }));
  // The fleet opens together, then Redis goes: each breaker probes on its own.
  set_all(fleet, &fleet_instance::sick, true);
  REQUIRE(wait_until([&] { return all_in(fleet, circuit_state::open); }));
  redis.kill();
  REQUIRE(wait_until([&] {
    for (auto& i : fleet)
      if (i->connected() || i->half_opens() == 0) return false;
    return true;
  }));
  set_all(fleet, &fleet_instance::sick, false);
  REQUIRE(wait_until([&] { return all_in(fleet, circuit_state::closed); }));
  const auto failed_before = total(fleet, &fleet_instance::failed);
  std::this_thread::sleep_for(300ms);
  CHECK(total(fleet, &fleet_instance::failed) == failed_before);
  for (auto& i : fleet) CHECK(i->slowest_ns.load() < std::chrono::nanoseconds(50ms).count());
  redis.restart();
  REQUIRE(wait_until([&] { return all_connected(fleet); }));
  // Its scripts are gone too once flushed: EVALSHA falls back to EVAL.
  CHECK(redis.command({"SCRIPT", "FLUSH"}) == "OK");
  const auto errors = fleet[0]->link().metrics().errors;
  const auto rounds = fleet[0]->link().metrics().rounds;
  REQUIRE(wait_until([&] { return fleet[0]->link().metrics().rounds > rounds + 3; }));
  CHECK(fleet[0]->link().metrics().errors == errors);
  CHECK(fleet[0]->connected());
  expect_sharing(fleet);
}

TEST_CASE("with Redis unreachable a linked breaker is exactly a local breaker") {
  redis_fixture redis;
  const auto address = redis.address();
  redis.kill();
  const auto fo = fast_fleet(address);
  fleet_instance i(fast_breaker(10), &fo);
  i.sick = true;
  REQUIRE(wait_until([&] { return i.breaker().state() == circuit_state::open; }));
  CHECK(i.failed.load() == 10);  // its own minimum_calls
  REQUIRE(wait_until([&] { return i.probes.load() >= 2; }));
  CHECK(i.half_opens() >= 2);
  CHECK_FALSE(i.connected());
  CHECK(i.link().metrics().errors >= 1);
}

TEST_CASE("destroying a link with commands pending is safe and leaves local breakers") {
  redis_fixture redis;
  const auto fo = fast_fleet(redis.address());
  auto fleet = make_fleet(2, fast_breaker(10), &fo);
  REQUIRE(wait_until([&] { return all_connected(fleet); }));
  set_all(fleet, &fleet_instance::sick, true);
  REQUIRE(wait_until([&] { return all_in(fleet, circuit_state::open); }));
  redis.pause();  // rounds go unanswered
  std::this_thread::sleep_for(60ms);
  fleet[0]->drop_link();  // its io_context runs
  fleet[1]->die();        // its io_context is stopped: the link goes with the instance
  REQUIRE(wait_until([&] { return fleet[0]->probes.load() >= 1; }));  // local again
  redis.resume();
  fleet.clear();
}

TEST_CASE("a registry's breakers are attached, those created later too") {
  redis_fixture redis;
  asio::io_context ioc;
  levee::breaker_registry registry(ioc, {.defaults = fast_breaker(10)});
  registry.get("a");
  registry.get("b");
  levee::fleet_link link(ioc.get_executor(), fast_fleet(redis.address()));
  link.attach(registry);
  std::thread t([&] { ioc.run_for(2s); });
  REQUIRE(wait_until([&] { return link.metrics().breakers == 2; }));
  registry.get("c");
  REQUIRE(wait_until([&] { return link.metrics().breakers == 3; }));
  REQUIRE(wait_until([&] { return link.metrics().rounds >= 6; }));
  CHECK(redis.command({"PUBSUB", "NUMSUB", "levee:fleet"}) == "levee:fleet\n1");
  ioc.stop();
  t.join();
}

TEST_CASE("the link's Prometheus exposition passes promtool") {
  redis_fixture redis;
  const auto fo = fast_fleet(redis.address());
  fleet_instance i(fast_breaker(), &fo);
  REQUIRE(wait_until([&] { return i.connected(); }));
  std::ostringstream text;
  levee::write_prometheus(text, i.link().metrics());
  CHECK(text.str().find("levee_fleet_connected 1\n") != std::string::npos);
  if (::access("/usr/bin/promtool", X_OK) != 0) {
    WARN("promtool not found: exposition not checked");
    return;
  }
  char path[] = "/tmp/levee-fleet-prom-XXXXXX";
  const int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  ::close(fd);
  std::ofstream(path) << text.str();
  const std::string cmd = std::string("/usr/bin/promtool check metrics < ") + path + " 2>&1";
  const int rc = std::system(cmd.c_str());
  std::remove(path);
  CHECK(rc == 0);
}

#ifdef LEVEE_FLEET_PROCESS
#include <sys/wait.h>

namespace {

struct process_result {
  std::map<std::string, std::uint64_t> values;
};

// Runs `fleet_process` n times at once; returns each one's line, parsed.
std::vector<process_result> run_processes(const std::string& address, int n, int run_ms,
                                          bool sick) {
  const auto start = std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count() +
                     1500;
  std::vector<std::pair<pid_t, int>> children;
  for (int i = 0; i < n; ++i) {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      ::dup2(fds[1], 1);
      ::close(fds[0]);
      ::close(fds[1]);
      const std::string id = "process-" + std::to_string(i);
      const std::string start_text = std::to_string(start), run_text = std::to_string(run_ms);
      ::execl(LEVEE_FLEET_PROCESS, LEVEE_FLEET_PROCESS, address.c_str(), id.c_str(),
              start_text.c_str(), run_text.c_str(), sick ? "1" : "0", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(fds[1]);
    children.emplace_back(pid, fds[0]);
  }
  std::vector<process_result> out;
  for (auto [pid, fd] : children) {
    std::string text;
    char buf[512];
    for (ssize_t k; (k = ::read(fd, buf, sizeof buf)) > 0;)
      text.append(buf, static_cast<std::size_t>(k));
    ::close(fd);
    int status = 0;
    ::waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status));
    process_result r;
    std::istringstream in(text);
    std::string field;
    while (in >> field) {
      const auto eq = field.find('=');
      if (eq != std::string::npos)
        r.values[field.substr(0, eq)] = std::stoull(field.substr(eq + 1));
    }
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace

TEST_CASE("instances as separate processes: one probe per open period") {
  redis_fixture redis;
  const auto results = run_processes(redis.address(), 3, 2000, true);
  std::uint64_t half_opens = 0, leases = 0, probes = 0;
  for (const auto& r : results) {
    CHECK(r.values.at("connected") == 1);
    CHECK(r.values.at("opens") >= 1);
    half_opens += r.values.at("half_opens");
    leases += r.values.at("leases");
    probes += r.values.at("probes");
  }
  WARN("3 processes, 2 s of outage: " << half_opens << " half-open rounds, " << probes
                                      << " probes (alone: about 3 x 6)");
  CHECK(half_opens >= 2);
  CHECK(half_opens <= 9);
  CHECK(leases == half_opens);
  CHECK(probes <= half_opens);
}
#endif

TEST_CASE("a probe longer than the lease keeps it: no second prober") {
  redis_fixture redis;
  auto fo = fast_fleet(redis.address());
  fo.probe_lease = 100ms;  // two rounds
  auto fleet = make_fleet(3, fast_breaker(10), &fo);
  set_all(fleet, &fleet_instance::traffic, false);
  REQUIRE(wait_until([&] { return all_connected(fleet); }));
  set_all(fleet, &fleet_instance::sick, true);
  set_all(fleet, &fleet_instance::traffic, true);
  REQUIRE(wait_until([&] { return all_in(fleet, circuit_state::open); }));
  set_all(fleet, &fleet_instance::delay_ms, 500);  // the probe hangs 500 ms, then fails
  const auto probes_before = total(fleet, &fleet_instance::probes);
  REQUIRE(wait_until([&] { return total(fleet, &fleet_instance::probes) > probes_before; }));
  std::this_thread::sleep_for(400ms);  // the probe still runs, four leases later
  CHECK(total(fleet, &fleet_instance::probes) == probes_before + 1);
}

TEST_CASE("commands Redis runs after the link gave up on them change nothing") {
  redis_fixture redis;
  auto fo = fast_fleet(redis.address());
  fo.quorum = 1;  // a lone instance's trip is published
  fo.reconnect_min = 400ms;
  fo.reconnect_max = 400ms;
  auto fleet = make_fleet(2, fast_breaker(5), &fo);
  REQUIRE(wait_until([&] { return all_connected(fleet); }));
  // Redis stops; instance 0 trips at once and publishes: the publication
  // waits in Redis's socket buffer, the link times out and gives it up.
  redis.pause();
  fleet[0]->sick = true;
  REQUIRE(wait_until([&] { return fleet[0]->breaker().state() == circuit_state::open; }));
  // Healed at once: its probe after the reconnection succeeds (a failed one
  // would be published, docs/fleet.md: an outage in progress is shared).
  fleet[0]->sick = false;
  REQUIRE(wait_until([&] { return !fleet[0]->connected() && !fleet[1]->connected(); }));
  redis.resume();  // Redis now runs what was queued
  REQUIRE(wait_until([&] { return all_connected(fleet); }));
  std::this_thread::sleep_for(300ms);  // rounds resynchronise
  CHECK(redis.command({"GET", "levee:{api}:state"}) == "(nil)");
  CHECK(fleet[1]->opens_from_closed() == 0);
}

// The link gives up on every command of a connection as soon as the oldest
// one pending times out (or the pub/sub connection's PING does): a
// publication sent behind an older command still unanswered must be dead for
// Redis by then, whatever Redis runs when it continues. Its deadline counts
// from the oldest command pending, not from its own sending.
TEST_CASE("a publication sent behind an unanswered command is dead once the link gave up") {
  redis_fixture redis;
  auto fo = fast_fleet(redis.address());
  fo.quorum = 1;  // a lone instance's trip is published
  fo.command_timeout = 1s;
  fo.reconnect_min = 400ms;
  fo.reconnect_max = 400ms;
  fleet_instance i(fast_breaker(5), &fo);
  i.traffic = false;  // an empty window: 5 failed calls trip it
  REQUIRE(wait_until([&] { return i.connected() && i.link().metrics().rounds >= 2; }));
  const auto connects = i.link().metrics().connects;
  redis.pause();
  // Rounds go on every 50 ms: the first one after the pause stays
  // unanswered, and so does the pub/sub connection's PING (every 250 ms).
  // (Only the failing case needs this: the publication below then goes
  // behind them.)
  std::this_thread::sleep_for(500ms);
  i.sick = true;
  i.traffic = true;
  REQUIRE(wait_until([&] { return i.breaker().state() == circuit_state::open; }));
  i.sick = false;  // healed: its local probe closes it while Redis is away
  // The link times the oldest command out (1 to 1.25 s after it was sent),
  // about 500 ms before the publication's own command_timeout.
  REQUIRE(wait_until([&] { return !i.connected(); }, 5000ms));
  redis.resume();  // Redis now runs what was queued
  REQUIRE(
      wait_until([&] { return i.connected() && i.link().metrics().connects > connects; }, 5000ms));
  const auto rounds = i.link().metrics().rounds;
  REQUIRE(wait_until([&] { return i.link().metrics().rounds >= rounds + 2; }));
  // Nothing was ever published: the generation key is never expired.
  CHECK(redis.command({"GET", "levee:{api}:gen"}) == "(nil)");
  CHECK(redis.command({"GET", "levee:{api}:state"}) == "(nil)");
  // The way back: linked again, closed, and sharing works: a trip of its own
  // is published (quorum 1).
  REQUIRE(wait_until([&] { return i.breaker().state() == circuit_state::closed; }));
  i.sick = true;
  REQUIRE(wait_until([&] { return i.link().metrics().opens_published >= 1; }));
  CHECK(redis.command({"GET", "levee:{api}:state"}).starts_with("o "));
  CHECK(i.link().metrics().connects == connects + 1);
}
