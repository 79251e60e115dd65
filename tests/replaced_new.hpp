// Test support: every form of the global operator new and delete replaced,
// over malloc, aligned_alloc and free, so that no block from a sanitizer's
// own new reaches free. Each allocating form calls the program's two hooks,
// which it defines: `levee_test_new(n)` and `levee_test_new_aligned(n, a)`,
// each returning a block or throwing std::bad_alloc. Include it in one
// translation unit of a program (its own target: the replacement is global).
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>

void* levee_test_new(std::size_t n);
void* levee_test_new_aligned(std::size_t n, std::align_val_t a);

void* operator new(std::size_t n) {
  return levee_test_new(n);
}
void* operator new[](std::size_t n) {
  return levee_test_new(n);
}
void* operator new(std::size_t n, std::align_val_t a) {
  return levee_test_new_aligned(n, a);
}
void* operator new[](std::size_t n, std::align_val_t a) {
  return levee_test_new_aligned(n, a);
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return levee_test_new(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return levee_test_new(n);
  } catch (...) {
    return nullptr;
  }
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete[](void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
  std::free(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  std::free(p);
}
void operator delete(void* p, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}
