// levee: a small number per thread, used to spread writes over shards.
#pragma once

#include <atomic>

namespace levee::detail {

[[gnu::noinline]] inline unsigned assign_thread_slot() noexcept {
  static std::atomic<unsigned> next{0};
  return next.fetch_add(1, std::memory_order_relaxed) + 1;
}

/// The calling thread's slot: threads get 0, 1, 2, ... in the order they first
/// ask. Breakers map slots onto their shards, so that threads which share a
/// breaker write to different cache lines. Constant-initialised thread_local:
/// no initialisation guard on the hot path. The initial-exec TLS model keeps
/// it two instructions (a GOT load and a %fs access) from position-independent
/// code too (lib/ is built with -fPIC: the default model there calls
/// `__tls_get_addr`, 30 instructions, on every call). Its price: four bytes of
/// static TLS, which a shared object holding levee and loaded with dlopen
/// takes from glibc's spare static TLS.
inline unsigned thread_slot() noexcept {
  constinit thread_local unsigned slot_plus_one [[gnu::tls_model("initial-exec")]] = 0;
  if (slot_plus_one == 0) [[unlikely]]
    slot_plus_one = assign_thread_slot();
  return slot_plus_one - 1;
}

}  // namespace levee::detail
