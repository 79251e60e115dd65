// levee: a breaker's listeners and their batched deliveries, compiled once
// in lib/ with breaker/impl/breaker_telemetry.ipp, which includes it.
#pragma once

#include <levee/breaker/detail/breaker_telemetry.hpp>
#include <levee/core/detail/small_mutex.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/post.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#if defined(__linux__)
#include <time.h>
#endif

namespace levee::detail {

// One listener's deliveries, batched (docs/observability.md, "Events"). An
// event is appended to the batch this listener's last post carries, as long
// as that post has not begun to run and holds fewer than `batch_capacity`
// events; otherwise a new batch is posted. Events between two runs of the
// listener's executor thus cost one post per batch, not one per event, and
// keep their order: a batch is posted before any event after its own, a
// batch that has begun takes no more, and a batch is delivered whole by its
// own post (a listener that throws does not cut it short: see `deliver`).
// Shared by the listener sets that hold this listener (a set is replaced as
// a whole on listen and unlisten).
//
// A call event (success, failure, ignored, rejected) is kept as a 24-byte
// record; the others (transitions, stuck-open, reconfigured), whole.
struct breaker_listener_queue : std::enable_shared_from_this<breaker_listener_queue> {
  static constexpr std::size_t batch_capacity = 64;
  struct record {
    std::chrono::system_clock::time_point when;
    std::uint32_t whole;  // index in `batch::whole`, or `none`: a call event
    event_kind kind;
    circuit_state state;
    bool slow;
  };
  static constexpr std::uint32_t none = ~std::uint32_t{0};
  struct batch {
    std::vector<record> records;
    std::vector<breaker_event> whole;
    // A call event (`whole_event` null) or any other, at `r.when`. Strong
    // guarantee. A call event's record goes into room every batch has (made
    // with `batch_capacity`, which `append` never passes, and never shrunk),
    // so it cannot throw.
    void add(record r, const breaker_event* whole_event) {
      if (!whole_event) [[likely]] {
        records.push_back(r);
        return;
      }
      records.reserve(records.size() + 1);
      r.whole = static_cast<std::uint32_t>(whole.size());
      whole.push_back(*whole_event);
      records.push_back(r);
    }
  };

  breaker_listener_queue(std::shared_ptr<const event_listener> f, boost::asio::any_io_executor ex,
                         std::string n, std::shared_ptr<std::atomic<std::uint64_t>> l)
      : fn(std::move(f)), executor(std::move(ex)), name(std::move(n)), lost(std::move(l)) {}

  // Under the telemetry's order_lock_: the only appender at a time. Never
  // throws: what cannot be allocated or posted is counted in `lost`.
  void append(record r, const breaker_event* whole_event) noexcept {
    // A listener's times never go back: a call event's time is the coarse
    // clock's (`call_event_time`), up to a tick behind the precise time of
    // an event queued before it.
    if (!whole_event && r.when < latest) r.when = latest;
    latest = r.when;
    std::shared_ptr<batch> fresh;
    {
      small_lock g(lock);
      try {
        if (open && open->records.size() < batch_capacity) {
          open->add(r, whole_event);
          return;
        }
        if (spare) {
          fresh = std::move(spare);
        } else {
          fresh = std::make_shared<batch>();
          fresh->records.reserve(batch_capacity);
        }
        fresh->add(r, whole_event);
      } catch (...) {  // out of memory
        lost->fetch_add(1, std::memory_order_relaxed);
        return;
      }
      open = fresh;
    }
    // Posted outside the lock (a post locks the scheduler, and may wake a
    // thread); no other event is appended meanwhile (order_lock_).
    try {
      boost::asio::post(executor, [self = shared_from_this(), fresh] { self->deliver(fresh); });
    } catch (...) {  // out of memory: this batch is lost
      small_lock g(lock);
      if (open == fresh) open = nullptr;
      lost->fetch_add(fresh->records.size(), std::memory_order_relaxed);
    }
  }

  // On the listener's executor: the whole batch, in order. A listener that
  // throws still gets the rest of the batch (so that nothing posted after
  // the batch overtakes it); then the first exception leaves the handler,
  // and the executor's run(), as a handler's would. A second one thrown in
  // the same batch is dropped.
  void deliver(const std::shared_ptr<batch>& bp) {
    batch& b = *bp;
    {
      small_lock g(lock);
      if (open == bp) open = nullptr;  // begun: takes no more
    }
    std::exception_ptr first;
    breaker_event call;  // a call event: only these four fields, and the time
    call.breaker = name;
    for (const record& r : b.records) {
      const breaker_event* e = &call;
      if (r.whole != none) {
        breaker_event& w = b.whole[r.whole];
        w.breaker = name;
        e = &w;
      } else {
        call.kind = r.kind;
        call.from = call.to = r.state;
        call.slow = r.slow;
        call.when = r.when;
      }
      try {
        (*fn)(*e);
      } catch (...) {
        if (!first) first = std::current_exception();
      }
    }
    b.records.clear();
    b.whole.clear();
    // Kept as the next batch's room (one), unless whole events made it large.
    if (b.whole.capacity() <= 4) {
      small_lock g(lock);
      if (!spare) spare = bp;
    }
    if (first) std::rethrow_exception(first);
  }

  const std::shared_ptr<const event_listener> fn;
  const boost::asio::any_io_executor executor;
  const std::string name;  // the breaker's: each event's `breaker` view
  const std::shared_ptr<std::atomic<std::uint64_t>> lost;
  small_mutex lock;             // the two below; a batch's contents while open
  std::shared_ptr<batch> open;  // posted, not begun
  std::shared_ptr<batch> spare;
  std::chrono::system_clock::time_point latest{};  // of the last event; under order_lock_
};

// A call event's time: on Linux CLOCK_REALTIME_COARSE, the wall clock as of
// the kernel's last tick (1 to 4 ms old), read in about 5 ns where
// system_clock::now() takes 25 to 35 ns on the reference machine (a listener
// for every call pays it on every call: bench/README.md, "A listener for
// every call, batched"). Other events, rarer, read system_clock::now().
inline std::chrono::system_clock::time_point call_event_time() noexcept {
#if defined(__linux__) && defined(CLOCK_REALTIME_COARSE)
  timespec ts;
  ::clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  return std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec)));
#else
  return std::chrono::system_clock::now();
#endif
}

struct breaker_telemetry::listener_set {
  struct entry {
    std::uint64_t id;
    event_mask mask;
    std::shared_ptr<breaker_listener_queue> queue;
  };
  std::vector<entry> entries;

  // Under order_lock_ (the order of events; no event after unlisten).
  void post(breaker_event& e) const noexcept {
    e.when = std::chrono::system_clock::now();
    queue({e.when, breaker_listener_queue::none, e.kind, e.from, e.slow}, &e);
  }
  // A call event, kept as a record only.
  void post_call(event_kind kind, circuit_state state, bool slow) const noexcept {
    queue({call_event_time(), breaker_listener_queue::none, kind, state, slow}, nullptr);
  }

 private:
  void queue(const breaker_listener_queue::record& r, const breaker_event* whole) const noexcept {
    for (const entry& l : entries)
      if (l.mask & static_cast<event_mask>(r.kind)) l.queue->append(r, whole);
  }
};

}  // namespace levee::detail
