// levee: which operations' initiations the current thread is inside, so that
// an operation resumes its caller inline only from a handler of its own.
#pragma once

namespace levee::detail {

/// Marks, for its lifetime, that this thread is inside the initiation of the
/// operation `op` (any address that names it). An operation that completes
/// by dispatching its caller's handler asks `inside(op)` first: true, its
/// completion came inline, within the initiation (an awaitable that
/// completed through inline dispatches only), and it must post instead;
/// resuming the caller there would nest each next call in the last.
///
/// The marks form a list through the stack, innermost first, one node per
/// initiation running on this thread (nested when a call's first step makes
/// another such call inline). `inside` walks it: usually one node or none.
class initiation_mark {
 public:
  explicit initiation_mark(const void* op) noexcept : op_(op), outer_(top()) { top() = this; }
  initiation_mark(const initiation_mark&) = delete;
  initiation_mark& operator=(const initiation_mark&) = delete;
  ~initiation_mark() { top() = outer_; }

  /// Whether this thread is inside `op`'s initiation.
  static bool inside(const void* op) noexcept {
    for (const initiation_mark* m = top(); m; m = m->outer_)
      if (m->op_ == op) return true;
    return false;
  }

 private:
  static const initiation_mark*& top() noexcept {
    constinit thread_local const initiation_mark* innermost = nullptr;
    return innermost;
  }

  const void* op_;
  const initiation_mark* outer_;
};

}  // namespace levee::detail
