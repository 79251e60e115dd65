// levee's benchmarks: every operator new of the program counted (calls per
// thread, live bytes and blocks), so that a benchmark can report allocations
// per call and bytes per breaker. Included by one source file per program:
// it replaces the global operator new and delete.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

namespace {
std::atomic<std::int64_t> g_live_bytes{0};   // bytes asked for, live
std::atomic<std::int64_t> g_live_blocks{0};  // blocks, live
thread_local std::uint64_t t_allocations = 0;

void* counted_alloc(std::size_t n, std::size_t align) {
  ++t_allocations;
  // A header in front of each block remembers its size, for live bytes.
  const std::size_t header = align > 16 ? align : 16;
  void* raw = align > 16 ? std::aligned_alloc(align, (n + header + align - 1) / align * align)
                         : std::malloc(n + header);
  if (!raw) throw std::bad_alloc();
  std::memcpy(raw, &n, sizeof n);
  std::memcpy(static_cast<char*>(raw) + sizeof n, &header, sizeof header);
  g_live_bytes.fetch_add(static_cast<std::int64_t>(n), std::memory_order_relaxed);
  g_live_blocks.fetch_add(1, std::memory_order_relaxed);
  return static_cast<char*>(raw) + header;
}

void counted_free(void* p, std::size_t align) noexcept {
  if (!p) return;
  const std::size_t header = align > 16 ? align : 16;
  char* raw = static_cast<char*>(p) - header;
  std::size_t n;
  std::memcpy(&n, raw, sizeof n);
  g_live_bytes.fetch_sub(static_cast<std::int64_t>(n), std::memory_order_relaxed);
  g_live_blocks.fetch_sub(1, std::memory_order_relaxed);
  std::free(raw);
}
}  // namespace

void* operator new(std::size_t n) {
  return counted_alloc(n, 16);
}
void* operator new[](std::size_t n) {
  return counted_alloc(n, 16);
}
void* operator new(std::size_t n, std::align_val_t a) {
  return counted_alloc(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a) {
  return counted_alloc(n, static_cast<std::size_t>(a));
}
// The nothrow forms too: a sanitizer's runtime replaces the nothrow new
// itself, and a block from it must not reach the counted delete.
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return counted_alloc(n, 16);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return counted_alloc(n, 16);
  } catch (...) {
    return nullptr;
  }
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
  counted_free(p, 16);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  counted_free(p, 16);
}
void operator delete(void* p) noexcept {
  counted_free(p, 16);
}
void operator delete[](void* p) noexcept {
  counted_free(p, 16);
}
void operator delete(void* p, std::size_t) noexcept {
  counted_free(p, 16);
}
void operator delete[](void* p, std::size_t) noexcept {
  counted_free(p, 16);
}
void operator delete(void* p, std::align_val_t a) noexcept {
  counted_free(p, static_cast<std::size_t>(a));
}
void operator delete[](void* p, std::align_val_t a) noexcept {
  counted_free(p, static_cast<std::size_t>(a));
}
void operator delete(void* p, std::size_t, std::align_val_t a) noexcept {
  counted_free(p, static_cast<std::size_t>(a));
}
void operator delete[](void* p, std::size_t, std::align_val_t a) noexcept {
  counted_free(p, static_cast<std::size_t>(a));
}
