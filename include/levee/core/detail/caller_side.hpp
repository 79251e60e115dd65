// levee: the caller's side of a call launched ahead of its caller's wait (a
// hedge's, a race's): the handler that resumes the caller, its
// cancellation slot, its executor's work, and the resumption.
#pragma once

#include <levee/core/detail/initiation_mark.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>

#include <memory>
#include <optional>
#include <tuple>
#include <utility>

namespace levee::detail {

namespace asio = boost::asio;

/// The caller's side of an operation whose work runs on a strand of its own
/// (`Derived::child_ex_`) and was launched before the caller waits
/// (hedge/detail/hedge_op.hpp, timeout/detail/race_launch.hpp). `Derived`
/// derives from `std::enable_shared_from_this<Derived>` and from this, and
/// gives it, on the strand: `install(handler_type)` (the caller waits: store
/// the handler with `store`, deliver if done),
/// `on_caller_cancel(asio::cancellation_type)` and `take_result()`; it
/// befriends this class, which reaches those and `child_ex_`.
template <class Derived, class Executor, class Signature>
class caller_side {
 public:
  using handler_type = asio::any_completion_handler<Signature>;

  /// The caller waits: `h` resumes it (the initiation of what it awaits).
  void await(handler_type h) {
    caller_slot_ = asio::get_associated_cancellation_slot(h);
    if (caller_slot_.is_connected()) {
      caller_slot_.assign([weak = derived().weak_from_this()](asio::cancellation_type type) {
        if (auto self = weak.lock())
          asio::post(self->child_ex_, [self, type] { self->on_caller_cancel(type); });
      });
    }
    work_.emplace(caller_ex_);
    // While the dispatch runs inline, this thread is inside the caller's
    // initiation (`deliver`).
    const initiation_mark here(&handler_);
    asio::dispatch(derived().child_ex_,
                   [self = derived().shared_from_this(), h = std::move(h)]() mutable {
                     self->install(std::move(h));
                   });
  }

  /// A cancellation reached the caller during the launch, before its slot
  /// was hooked: passed on to what runs, on the strand, before the caller
  /// waits (dispatched now, `install` after it).
  void cancel(asio::cancellation_type type) {
    asio::dispatch(derived().child_ex_,
                   [self = derived().shared_from_this(), type] { self->on_caller_cancel(type); });
  }

 protected:
  explicit caller_side(const Executor& caller_ex) : caller_ex_(caller_ex) {}

  const Executor& caller_executor() const noexcept { return caller_ex_; }

  /// On the strand: the caller's handler, from `install`.
  void store(handler_type h) { handler_.emplace(std::move(h)); }

  /// On the strand: whether the caller waits (its handler is stored), so
  /// that its frames are held by this operation.
  bool waiting() const noexcept { return handler_.has_value(); }

  /// On the strand: resumes the caller with `Derived::take_result()` (a
  /// tuple of the handler's arguments, moved out), once, if it waits (else
  /// the result waits for `install`). Dispatched, as Asio's own
  /// operations complete through the handler's executor: `deliver` runs in
  /// a handler of its own (the work's end after it waited, a timer's, or
  /// `install` when it was queued on the strand), so a caller resumed
  /// inline here runs one level down, and its next call's initiation
  /// unwinds it: the stack does not grow from call to call. Posted when
  /// this thread is still inside this operation's `await` (the work ended
  /// between the launch and the wait, on another thread, or through inline
  /// dispatches inside the launch): resuming the caller there would nest
  /// each next call in the last.
  void deliver() {
    if (delivered_ || !handler_) return;
    delivered_ = true;
    auto resume = [self = derived().shared_from_this(), args = derived().take_result()]() mutable {
      caller_side& me = *self;
      if (me.caller_slot_.is_connected()) me.caller_slot_.clear();
      handler_type h = std::move(*me.handler_);
      me.work_.reset();
      self.reset();
      std::apply(std::move(h), std::move(args));
    };
    if (initiation_mark::inside(&handler_))
      asio::post(work_->get_executor(), std::move(resume));
    else
      asio::dispatch(work_->get_executor(), std::move(resume));
  }

 private:
  Derived& derived() noexcept { return static_cast<Derived&>(*this); }

  Executor caller_ex_;
  std::optional<handler_type> handler_;  // on the strand, once the caller waits
  std::optional<asio::executor_work_guard<Executor>> work_;
  asio::cancellation_slot caller_slot_;
  bool delivered_ = false;  // on the strand: the caller's resumption is on its way
};

}  // namespace levee::detail
