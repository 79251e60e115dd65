// levee: the fleet link's breakers (detail/fleet_state.hpp): attach, one
// round per bucket width, publications, messages, local transitions, the
// registry scan. The decisions are `fleet_decisions`' (sans I/O); here they
// are turned into EVALSHAs and breaker hooks. Compiled once in levee_fleet.
#pragma once

#include <levee/detail/fleet_scripts.hpp>
#include <levee/detail/fleet_state.hpp>
#include <levee/detail/saturating.hpp>

#include <boost/asio/post.hpp>

#include <algorithm>
#include <stdexcept>

namespace levee::detail {

namespace asio = boost::asio;

namespace {

std::int64_t integer(const redisReply* r) {
  return r->type == REDIS_REPLY_INTEGER ? static_cast<std::int64_t>(r->integer) : 0;
}

std::string_view text(const redisReply* r) {
  return {r->str, r->len};
}

// An EVALSHA answered NOSCRIPT (Redis restarted, or its scripts were
// flushed): the same command as EVAL with the script's text.
bool resend_as_eval(std::vector<std::string>& argv, const redisReply* r, const char* script) {
  if (r->type != REDIS_REPLY_ERROR || argv[0] != "EVALSHA" || !text(r).starts_with("NOSCRIPT"))
    return false;
  argv[0] = "EVAL";
  argv[1] = script;
  return true;
}

}  // namespace

// ---- attach -------------------------------------------------------------------

void fleet_state::attach(const std::shared_ptr<fleet_breaker>& b, std::string name) {
  if (b->options().window_type != window_kind::time)
    throw std::invalid_argument("fleet_link::attach: only a time-window breaker can share");
  if (name.empty() || name.find_first_of("{}") != std::string::npos ||
      name.find('\n') != std::string::npos)
    throw std::invalid_argument(
        "fleet_link::attach: the name must not be empty nor hold braces or newlines");
  const breaker_options& bo = b->options();
  auto m = std::make_shared<member>(
      strand_,
      fleet_decisions(fleet_thresholds::of(bo, options_.quorum, options_.fleet_minimum_calls),
                      b->core().counters()));
  m->name = name;
  m->base = options_.key_prefix + ":{" + name + "}";
  m->breaker = b;
  m->buckets = static_cast<std::uint32_t>(bo.window_buckets);
  m->width = bo.window / static_cast<std::int64_t>(bo.window_buckets);
  m->width_us = std::max<std::int64_t>(
      1, std::chrono::duration_cast<std::chrono::microseconds>(m->width).count());
  m->width = std::max<nanos>(m->width, std::chrono::milliseconds(1));  // rounds: <= 1000/s
  std::weak_ptr<fleet_state> weak = weak_from_this();
  std::weak_ptr<member> wm = m;
  m->listen_id = b->telemetry().listen(
      static_cast<event_mask>(event_kind::transition),
      [weak, wm](const breaker_event& e) {
        auto self = weak.lock();
        auto mm = wm.lock();
        if (self && mm) self->on_transition(*mm, e);
      },
      strand_);
  std::shared_ptr<member> old;
  bool stopped = false;
  {
    std::lock_guard g(mutex_);
    stopped = stopped_;
    if (!stopped) {
      auto& slot = members_[name];
      old = std::move(slot);
      slot = m;
      metrics_.breakers = members_.size();
    }
  }
  if (stopped) {
    b->telemetry().unlisten(m->listen_id);
    return;
  }
  if (old) forget(*old);
  asio::post(strand_, [self = shared_from_this(), m] { self->start_member(m); });
}

void fleet_state::attach_registry(breaker_registry& r) {
  asio::post(strand_, [self = shared_from_this(), r = &r] {
    self->registries_.push_back(r);
    if (self->registries_.size() == 1) self->scan();
  });
}

void fleet_state::forget(member& m) {
  if (auto b = m.breaker.lock()) {
    b->telemetry().unlisten(m.listen_id);
    b->fleet_gate(false);
  }
}

void fleet_state::start_member(const std::shared_ptr<member>& m) {
  if (phase_ == phase::ready) gate(*m);
  tick(m);
}

// Under the lock, against `stop`: a breaker is never left gated by a link that
// is gone (`fleet_gate` is one atomic fetch_or, it neither blocks nor calls out).
void fleet_state::gate(member& m) {
  std::lock_guard g(mutex_);
  if (stopped_) return;
  if (auto b = m.breaker.lock()) b->fleet_gate(true);
}

// The registry has no creation hook: every `registry_scan`, attach the names
// its metrics list that the link does not hold.
void fleet_state::scan() {
  if (stopped()) return;
  for (breaker_registry* r : registries_) {
    for (const named_metrics& nm : r->metrics()) {
      auto m = find(nm.name);
      if (m && !m->breaker.expired()) continue;
      auto b = r->get(nm.name);
      try {
        attach(b->shared_state(), nm.name);
      } catch (...) {  // a count-window breaker stays local
      }
    }
  }
  scan_timer_.expires_at(saturating_add(steady::now(), options_.registry_scan));
  scan_timer_.async_wait([weak = weak_from_this()](boost::system::error_code ec) {
    auto self = weak.lock();
    if (!ec && self) self->scan();
  });
}

// ---- rounds -------------------------------------------------------------------

void fleet_state::tick(const std::shared_ptr<member>& m) {
  auto b = m->breaker.lock();
  if (!b || find(m->name) != m) {  // the breaker is gone, or attached again
    std::lock_guard g(mutex_);
    if (auto it = members_.find(m->name); it != members_.end() && it->second == m) {
      members_.erase(it);
      metrics_.breakers = members_.size();
    }
    return;
  }
  m->timer.expires_at(saturating_add(steady::now(), m->width));
  m->timer.async_wait([weak = weak_from_this(), m](boost::system::error_code ec) {
    auto self = weak.lock();
    if (!ec && self) self->tick(m);
  });
  const breaker_counters c = b->core().counters();
  const bool connected = phase_ == phase::ready;
  const std::uint64_t expired = connected && b->fleet_open_expired() ? b->core().generation() : 0;
  const bool probe_running =
      b->core().state() == circuit_state::half_open && b->core().probes_in_flight() > 0;
  round_request q;
  if (!m->decide.tick(c, connected, expired, probe_running, q)) return;
  std::vector<std::string> argv = {
      "EVALSHA",
      round_sha_,
      "1",
      m->base,
      options_.instance_id,
      std::to_string(q.calls),
      std::to_string(q.failures),
      std::to_string(q.slow),
      std::to_string(m->width_us),
      std::to_string(m->buckets),
      q.want_probe ? "1" : "0",
      std::to_string(std::chrono::ceil<std::chrono::milliseconds>(options_.probe_lease).count()),
      std::to_string(q.renew_generation),
      deadline()};
  round(m, std::move(argv));
}

void fleet_state::round(const std::shared_ptr<member>& m, std::vector<std::string> argv) {
  send(argv, [weak = weak_from_this(), m, argv](redisReply* r) mutable {
    auto self = weak.lock();
    if (!self) return;
    if (resend_as_eval(argv, r, round_script)) return self->round(m, std::move(argv));
    m->decide.round_answered();
    self->on_round(*m, r);
  });
}

void fleet_state::on_round(member& m, redisReply* r) {
  if (r->type != REDIS_REPLY_ARRAY || r->elements != round_reply_size ||
      r->element[5]->type != REDIS_REPLY_STRING)
    return teardown("unexpected reply");
  const std::int64_t now = integer(r->element[0]);
  learn_redis_time(now);
  const probe_race race = to_probe_race(integer(r->element[6]));
  if (race == probe_race::given_up) return;  // it did nothing (the link gives up soon)
  const fleet_window window{static_cast<std::uint64_t>(integer(r->element[1])),
                            static_cast<std::uint64_t>(integer(r->element[2])),
                            static_cast<std::uint64_t>(integer(r->element[3])),
                            static_cast<std::uint64_t>(integer(r->element[4]))};
  const fleet_record rec = fleet_record::parse(text(r->element[5]));
  update([](fleet_metrics& x) { ++x.rounds; });
  auto b = m.breaker.lock();
  if (!b) return;
  see(m, *b, rec, now);
  // The fleet's window, with failures from at least `quorum` instances.
  if (m.decide.window_opens(window, b->core().state())) {
    const nanos open_for = b->fleet_open(nanos::zero());
    if (open_for > nanos::zero()) {
      update([](fleet_metrics& x) { ++x.opens_received; });
      publish(m, {"fleet", open_for, 0});
    }
  }
  const probe_decision p = m.decide.on_probe(race, rec.generation);
  switch (p.what) {
    case probe_decision::action::probe:  // the lease: this instance probes for the fleet
      update([](fleet_metrics& x) { ++x.probe_leases_won; });
      b->fleet_half_open(p.generation);
      m.decide.probe_started(b->core().state() == circuit_state::half_open);
      break;
    case probe_decision::action::wait:  // another instance probes, or not yet
      if (p.lost) update([](fleet_metrics& x) { ++x.probe_leases_lost; });
      break;
    case probe_decision::action::half_open:  // no fleet opening: decide alone
      b->fleet_half_open(p.generation);
      break;
    case probe_decision::action::none:
      break;
  }
}

// ---- records ------------------------------------------------------------------

void fleet_state::see(member& m, fleet_breaker& b, const fleet_record& rec, std::int64_t now) {
  const record_decision d = m.decide.on_record(rec, b.core().state(), now);
  switch (d.what) {
    case record_decision::action::open:
      if (b.fleet_open(d.open_for) > nanos::zero()) {
        m.decide.opened_by_fleet();
        update([](fleet_metrics& x) { ++x.opens_received; });
      }
      break;
    case record_decision::action::close:
      b.fleet_close();
      update([](fleet_metrics& x) { ++x.closes_received; });
      break;
    case record_decision::action::stale:
    case record_decision::action::nothing:
    case record_decision::action::join:
      break;
  }
}

void fleet_state::on_message(std::string_view message) {
  const fleet_record rec = fleet_record::parse(message);
  if (rec.kind == 0 || !redis_time_.known()) return;  // no Redis time yet: the next round resyncs
  const auto space = rec.rest.find(' ');
  if (space == std::string::npos) return;
  auto m = find(rec.rest.substr(space + 1));
  if (!m) return;
  if (auto b = m->breaker.lock()) see(*m, *b, rec, redis_now_us());
}

// ---- publications -------------------------------------------------------------

void fleet_state::on_transition(member& m, const breaker_event& e) {
  if (e.kind != event_kind::transition) return;
  const publication p =
      m.decide.on_transition(e.from, e.to, e.reason, e.open_for, phase_ == phase::ready);
  if (p.mode) publish(m, p);
}

void fleet_state::publish(member& m, const publication& p) {
  if (phase_ != phase::ready) return;
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(p.open_for).count();
  std::vector<std::string> argv = {"EVALSHA",
                                   publish_sha_,
                                   "1",
                                   m.base,
                                   p.mode,
                                   options_.instance_id,
                                   std::to_string(std::max<std::int64_t>(us, 0)),
                                   std::to_string(options_.quorum),
                                   std::to_string(m.width_us),
                                   std::to_string(m.buckets),
                                   channel_,
                                   m.name,
                                   std::to_string(p.generation),
                                   std::to_string(keep_ms_),
                                   deadline()};
  auto mm = find(m.name);
  if (mm.get() != &m) return;
  publish_send(mm, std::move(argv), std::string(p.mode));
}

void fleet_state::publish_send(const std::shared_ptr<member>& m, std::vector<std::string> argv,
                               std::string mode) {
  send(argv, [weak = weak_from_this(), m, argv, mode](redisReply* r) mutable {
    auto self = weak.lock();
    if (!self) return;
    if (resend_as_eval(argv, r, publish_script))
      return self->publish_send(m, std::move(argv), std::move(mode));
    if (r->type != REDIS_REPLY_ARRAY || r->elements != publish_reply_size ||
        r->element[0]->type != REDIS_REPLY_INTEGER || r->element[1]->type != REDIS_REPLY_STRING)
      return self->teardown("unexpected reply");
    const std::int64_t now = integer(r->element[2]);
    if (r->element[0]->integer == 1) {
      self->update([&](fleet_metrics& x) {
        if (mode == "close") {
          ++x.closes_published;
        } else {
          ++x.opens_published;
        }
      });
    }
    const fleet_record rec = fleet_record::parse(text(r->element[1]));
    if (rec.kind == 0) return;  // nothing published, nothing to learn
    if (auto b = m->breaker.lock()) self->see(*m, *b, rec, now);
  });
}

}  // namespace levee::detail
