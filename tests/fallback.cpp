// The fallback layer, in both forms, on virtual time.
#include <levee/pipeline/fallback.hpp>

#include "support.hpp"

#include <stdexcept>
#include <string>

using namespace levee_test;

namespace {
using ec_int = std::tuple<boost::system::error_code, int>;
const boost::system::error_code reset = make_error_code(boost::system::errc::connection_reset);
}  // namespace

TEST_CASE("fallback: a value for a rejection, in the tuple form") {
  virtual_time vt;
  asio::io_context ioc;
  breaker b(ioc);
  fake_service api;
  levee::fallback<ec_int> fb(
      {.on = levee::fallback_on::rejection, .value = ec_int(boost::system::error_code(), -1)});

  b.force_open();
  auto r = run(ioc, fb(b(api.call_ec({}))));
  REQUIRE(r->value);
  CHECK_FALSE(std::get<0>(*r->value));
  CHECK(std::get<1>(*r->value) == -1);
  CHECK(api.started == 0);
  CHECK(fb.metrics().rejections == 1);
  CHECK(fb.metrics().used() == 1);

  // on = rejection: a failure is returned unchanged, not answered for.
  b.reset();
  r = run(ioc, fb(b(api.call_ec(reset))));
  REQUIRE(r->value);
  CHECK(std::get<0>(*r->value) == reset);
  CHECK(fb.metrics().used() == 1);

  // The way back: the breaker admits, the call's own answer comes through.
  r = run(ioc, fb(b(api.call_ec({}))));
  REQUIRE(r->value);
  CHECK(*r->value == ec_int(boost::system::error_code(), 42));
  CHECK(fb.metrics().used() == 1);
  CHECK(fb.metrics().failures == 0);
}

TEST_CASE("fallback: a function for a failure, in the exception form") {
  virtual_time vt;
  asio::io_context ioc;
  breaker b(ioc);
  fake_service api;
  std::string seen;
  levee::fallback<int> fb(
      {.on = levee::fallback_on::failure, .function = [&](const levee::call_result& r) {
         seen = r.threw() ? "threw" : "returned";
         return 7;
       }});
  auto r = run(ioc, fb(b(api.call(false))));
  CHECK(r->value == 7);
  CHECK_FALSE(r->error);
  CHECK(seen == "threw");
  CHECK(fb.metrics().failures == 1);

  // on = failure: a rejection is rethrown unchanged.
  b.force_open();
  r = run(ioc, fb(b(api.call(true))));
  CHECK(r->thrown_code() == levee::error::circuit_open);
  CHECK(fb.metrics().used() == 1);

  b.reset();
  r = run(ioc, fb(b(api.call(true))));
  CHECK(r->value == 42);
  CHECK(fb.metrics().used() == 1);
}

TEST_CASE("fallback: both, with a classifier that reads values, never a cancellation") {
  virtual_time vt;
  asio::io_context ioc;
  levee::fallback<int> fb({.value = 0, .classifier = [](const levee::call_result& r) {
                             if (const int* v = r.value<int>(); v && *v >= 500)
                               return levee::outcome::failure;
                             return levee::default_classify(r);
                           }});
  auto status = [](int s) -> asio::awaitable<int> { co_return s; };
  CHECK(run(ioc, fb(status(503)))->value == 0);
  CHECK(run(ioc, fb(status(200)))->value == 200);
  auto timed_out = []() -> asio::awaitable<int> {
    throw boost::system::system_error(levee::error::timeout);
    co_return 1;
  };
  CHECK(run(ioc, fb(timed_out()))->value == 0);
  auto aborted = []() -> asio::awaitable<int> {
    throw boost::system::system_error(asio::error::operation_aborted);
    co_return 1;
  };
  CHECK(run(ioc, fb(aborted()))->thrown_code() == asio::error::operation_aborted);
  CHECK(fb.metrics().failures == 2);
  CHECK(fb.metrics().rejections == 0);
}

TEST_CASE("fallback: the completion-token form, with a plain callback") {
  virtual_time vt;
  asio::io_context ioc;
  fake_service api;
  levee::fallback<int> fb({.value = -1});
  int got = 0;
  fb.async_run(ioc.get_executor(), api.call(false), [&](std::exception_ptr e, int v) {
    CHECK_FALSE(e);
    got = v;
  });
  settle(ioc);
  CHECK(got == -1);
  CHECK(fb.metrics().failures == 1);
}

TEST_CASE("fallback: options are validated by name") {
  using opts = levee::fallback_options<int>;
  auto message = [](opts o) -> std::string {
    try {
      levee::fallback<int> fb(std::move(o));
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "";
  };
  CHECK(message(opts{}).find("fallback_options::value") != std::string::npos);
  CHECK(message(opts{.value = 1, .function = [](const levee::call_result&) { return 2; }})
            .find("fallback_options::value") != std::string::npos);
  CHECK(message(opts{.on = static_cast<levee::fallback_on>(0), .value = 1})
            .find("fallback_options::on") != std::string::npos);
  CHECK(message(opts{.value = 1}).empty());
}
