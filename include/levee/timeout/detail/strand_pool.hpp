// levee: strands a hedge's or a race's calls reuse, kept by their execution context, so
// that a call does not create (allocate, register under the strand service's
// mutex) and destroy a strand of its own.
#pragma once

#include <levee/core/detail/spinlock.hpp>
#include <levee/timeout/detail/race.hpp>

#include <boost/asio/execution_context.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

namespace levee::detail {

namespace asio = boost::asio;

/// The idle strands of one execution context (`Inner`: its executor type).
/// A strand is taken by a call and given back when the call's state is
/// destroyed, once every attempt has ended: reusing it then serialises
/// nothing the call still runs (a handler of the old call still unwinding on
/// it only delays the new call's first step). At most `capacity` are kept.
/// Work an attempt leaves on its executor after the call (a coroutine it
/// spawned there) keeps running on that strand, beside later calls given it.
///
/// A service of the context: `shutdown` destroys the idle strands while the
/// strand service is still alive (a strand's implementation unregisters
/// from it when destroyed), and strands given back after that are dropped.
template <class Inner>
class strand_pool : public asio::execution_context::service {
 public:
  using strand_type = asio::strand<Inner>;
  static constexpr std::size_t capacity = 256;

  /// The service's id.
  inline static asio::execution_context::id id;

  /// The pool of `ctx`.
  explicit strand_pool(asio::execution_context& ctx) : asio::execution_context::service(ctx) {
    idle_.reserve(capacity);
  }
  ~strand_pool() override { generation_.fetch_add(1, std::memory_order_relaxed); }

  /// The pool of `ctx`, as `asio::use_service` finds it, without taking the
  /// context's service registry mutex on every call: each thread remembers
  /// the last context it asked for and its pool, until any pool of this type
  /// is destroyed (`generation_`). A context destroyed and another made at its
  /// address: the old pool's destruction happened before the new context was
  /// made, and so before any thread could use the new one, so that thread's
  /// read of the generation sees it (read-write coherence).
  static strand_pool& of(asio::execution_context& ctx) {
    struct memo {
      asio::execution_context* ctx;
      strand_pool* pool;
      std::uint64_t generation;
    };
    constinit thread_local memo m{nullptr, nullptr, 0};
    const std::uint64_t now = generation_.load(std::memory_order_relaxed);
    if (m.ctx == &ctx && m.generation == now) return *m.pool;
    strand_pool& p = asio::use_service<strand_pool>(ctx);
    m = memo{&ctx, &p, now};
    return p;
  }

  /// An idle strand of `ex`'s context, or a new one.
  strand_type take(const Inner& ex) {
    {
      spin_guard g(lock_);
      if (!idle_.empty()) {
        strand_type s = std::move(idle_.back());
        idle_.pop_back();
        return s;
      }
    }
    return asio::make_strand(ex);
  }

  /// Gives `s` back (destroyed when the pool is full or shut down).
  void give_back(strand_type&& s) noexcept {
    strand_type dropped = std::move(s);  // destroyed outside the lock
    spin_guard g(lock_);
    if (!closed_ && idle_.size() < capacity) idle_.push_back(std::move(dropped));
  }

 private:
  void shutdown() override {
    std::vector<strand_type> idle;
    {
      spin_guard g(lock_);
      closed_ = true;
      idle.swap(idle_);
    }
  }

  // Counts the pools of this type destroyed: a thread's remembered pool is
  // valid while it has not moved.
  inline static constinit std::atomic<std::uint64_t> generation_{0};

  spinlock lock_;
  bool closed_ = false;
  std::vector<strand_type> idle_;  // capacity reserved: no allocation in give_back
};

/// The serial executor of one hedged call: `serial_executor(ex)`, except that
/// a strand it would create for an `io_context` or `thread_pool` executor is
/// taken from that context's `strand_pool` and given back when the lease is
/// destroyed.
template <class Executor>
class strand_lease {
 public:
  explicit strand_lease(const Executor& ex) : ex_(lease(ex)) {}
  strand_lease(const strand_lease&) = delete;
  strand_lease& operator=(const strand_lease&) = delete;
  ~strand_lease() {
    if (give_back_) give_back_(pool_, ex_);
  }

  /// The serial executor.
  const Executor& get() const noexcept { return ex_; }

 private:
  // A copy goes back, never the strand moved out of `ex`: an any_io_executor
  // holds a strand too large for its inline storage (a thread_pool's) on the
  // heap, shared by every copy of it, and the attempts' copies (a timer's, a
  // coroutine spawned on it) may outlive the call: moved from, they would
  // hold a null strand.
  template <class Inner>
  static void give_back(void* pool, Executor& ex) noexcept {
    if (const auto* s = ex.template target<asio::strand<Inner>>())
      static_cast<strand_pool<Inner>*>(pool)->give_back(asio::strand<Inner>(*s));
  }

  template <class Inner>
  Executor take(const Inner& inner) {
    auto& pool = strand_pool<Inner>::of(inner.context());
    pool_ = &pool;
    give_back_ = &give_back<Inner>;
    return Executor(pool.take(inner));
  }

  Executor lease(const Executor& ex) {
    if constexpr (is_asio_strand<Executor>::value) {
      // A strand is serial already (serial_executor would wrap a concrete
      // strand in another and fail to compile).
      return ex;
    } else {
      if constexpr (std::is_same_v<Executor, asio::any_io_executor>) {
        using io_ex = asio::io_context::executor_type;
        using pool_ex = asio::thread_pool::executor_type;
        // Only a bare context executor: a strand, or a with_deadline's
        // executor (a strand too), is serial already (serial_executor).
        if (const auto* io = ex.template target<io_ex>()) return take(*io);
        if (const auto* pool = ex.template target<pool_ex>()) return take(*pool);
      }
      return serial_executor(ex);
    }
  }

  void* pool_ = nullptr;
  void (*give_back_)(void*, Executor&) noexcept = nullptr;
  Executor ex_;
};

}  // namespace levee::detail
