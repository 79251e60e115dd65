// levee: the fleet link's rounds (fleet/impl/fleet_state.hpp): one round per
// bucket width per breaker, the poll for the probe lease, error replies,
// publications, messages, local transitions. The decisions are `fleet_decisions`' (sans I/O); here
// they are turned into EVALSHAs and breaker hooks. Compiled once in levee_fleet.
#pragma once

#include <levee/core/detail/saturating.hpp>
#include <levee/fleet/detail/fleet_scripts.hpp>
#include <levee/fleet/impl/fleet_state.hpp>

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
  send_round(m, b);
}

void fleet_state::send_round(const std::shared_ptr<member>& m, const fleet_hook& b) {
  const breaker_counters c = b.counters();
  const bool connected = phase_ == phase::ready;
  const std::uint64_t expired = connected && b.open_expired() ? b.generation() : 0;
  // OPEN, its timer expired: the poll watches for the first call refused.
  if (expired != 0 && !m->polling && !m->erroring) {
    m->polling = true;
    poll(m);
  }
  const bool probe_running = b.state() == circuit_state::half_open && b.probes_in_flight() > 0;
  round_request q;
  if (!m->decide.tick(c, connected, expired, probe_running, q)) return;
  if (q.want_probe) m->raced = expired;  // the poll does not race again for it
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

void fleet_state::poll(const std::shared_ptr<member>& m) {
  const nanos period = std::min<nanos>(m->width, std::chrono::milliseconds(5));
  m->poll.expires_at(saturating_add(steady::now(), period));
  m->poll.async_wait([weak = weak_from_this(), m](boost::system::error_code ec) {
    auto self = weak.lock();
    if (!ec && self) self->on_poll(m);
  });
}

// A local read every 5 ms while OPEN with its timer expired: nothing goes to
// Redis until a call was refused (this instance has a call to make).
void fleet_state::on_poll(const std::shared_ptr<member>& m) {
  auto b = m->breaker.lock();
  if (!b || phase_ != phase::ready || m->erroring || !b.open_expired()) {
    m->polling = false;
    return;
  }
  const std::uint64_t g = b.generation();
  if (m->raced != g && steady::now() >= m->poll_after && !m->decide.in_flight() &&
      m->decide.wants_probe(b.counters(), g))
    send_round(m, b);
  poll(m);
}

void fleet_state::command_error(member& m, std::string_view error) {
  update([&](fleet_metrics& x) {
    ++x.errors;
    ++x.command_errors;
    x.last_error = error;
  });
  if (m.erroring) return;
  m.erroring = true;
  m.decide.disconnected();
  if (auto b = m.breaker.lock()) b.gate(false);  // local meanwhile
  fleet_event e = event(fleet_event_kind::command_error, std::string(error));
  e.breaker = m.name;
  emit(std::move(e));
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
  if (r->type == REDIS_REPLY_ERROR) return command_error(m, text(r));
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
  if (m.erroring) {  // its commands succeed again: linked again
    m.erroring = false;
    gate(m);
  }
  see(m, b, rec, now);
  // The fleet's window, with failures from at least `quorum` instances.
  if (m.decide.window_opens(window, b.state())) {
    const nanos open_for = b.open(nanos::zero());
    if (open_for > nanos::zero()) {
      update([](fleet_metrics& x) { ++x.opens_received; });
      fleet_event e = event(fleet_event_kind::fleet_opened);
      e.breaker = m.name;
      emit(std::move(e));
      publish(m, {"fleet", open_for, 0});
    }
  }
  const probe_decision p = m.decide.on_probe(race, rec.generation);
  switch (p.what) {
    case probe_decision::action::probe:  // the lease: this instance probes for the fleet
      update([](fleet_metrics& x) { ++x.probe_leases_won; });
      b.half_open(p.generation);
      m.decide.probe_started(b.state() == circuit_state::half_open);
      break;
    case probe_decision::action::wait:  // another instance probes, or not yet
      if (p.lost) {
        update([](fleet_metrics& x) { ++x.probe_leases_lost; });
      } else {  // not yet: the poll races again at the fleet's half-open time
        m.raced = 0;
        const std::int64_t left =
            std::max<std::int64_t>(m.decide.half_open_us() - redis_now_us(), 0);
        m.poll_after = saturating_add(steady::now(), nanos(std::chrono::microseconds(left)));
      }
      break;
    case probe_decision::action::half_open:  // no fleet opening: decide alone
      b.half_open(p.generation);
      break;
    case probe_decision::action::none:
      break;
  }
}

// ---- records ------------------------------------------------------------------

void fleet_state::see(member& m, const fleet_hook& b, const fleet_record& rec, std::int64_t now) {
  const record_decision d = m.decide.on_record(rec, b.state(), now);
  // Who published it: the record's id (a message has the name after it). The
  // breaker's own transition event carries it too.
  detail::fleet_origin origin;
  if (d.what == record_decision::action::open || d.what == record_decision::action::close) {
    origin.instance = rec.rest.substr(0, rec.rest.find(' '));
    origin.generation = rec.generation;
  }
  const auto who = [&](fleet_event_kind k) {
    fleet_event e = event(k);
    e.breaker = m.name;
    e.instance = origin.instance;
    e.generation = origin.generation;
    emit(std::move(e));
  };
  switch (d.what) {
    case record_decision::action::open:
      if (b.open(d.open_for, &origin) > nanos::zero()) {
        m.decide.opened_by_fleet();
        update([](fleet_metrics& x) { ++x.opens_received; });
        who(fleet_event_kind::fleet_opened);
      }
      break;
    case record_decision::action::close:
      b.close(&origin);
      update([](fleet_metrics& x) { ++x.closes_received; });
      who(fleet_event_kind::fleet_closed);
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
  if (auto b = m->breaker.lock()) see(*m, b, rec, redis_now_us());
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
  publish_send(mm, std::move(argv), std::string(p.mode), std::chrono::system_clock::now());
}

void fleet_state::publish_send(const std::shared_ptr<member>& m, std::vector<std::string> argv,
                               std::string mode, std::chrono::system_clock::time_point sent) {
  send(argv, [weak = weak_from_this(), m, argv, mode, sent](redisReply* r) mutable {
    auto self = weak.lock();
    if (!self) return;
    if (resend_as_eval(argv, r, publish_script))
      return self->publish_send(m, std::move(argv), std::move(mode), sent);
    if (r->type == REDIS_REPLY_ERROR) return self->command_error(*m, text(r));
    if (r->type != REDIS_REPLY_ARRAY || r->elements != publish_reply_size ||
        r->element[0]->type != REDIS_REPLY_INTEGER || r->element[1]->type != REDIS_REPLY_STRING)
      return self->teardown("unexpected reply");
    const std::int64_t now = integer(r->element[2]);
    const fleet_record rec = fleet_record::parse(text(r->element[1]));
    if (r->element[0]->integer == 1) {
      self->update([&](fleet_metrics& x) {
        if (mode == "close") {
          ++x.closes_published;
        } else {
          ++x.opens_published;
        }
      });
      fleet_event e = event(fleet_event_kind::published, mode == "close" ? "close" : "open");
      e.breaker = m->name;
      e.instance = self->options_.instance_id;
      e.generation = rec.generation;
      e.when = sent;  // sent: the followers' events come after it
      self->emit(std::move(e));
    }
    if (rec.kind == 0) return;  // nothing published, nothing to learn
    if (auto b = m->breaker.lock()) self->see(*m, b, rec, now);
  });
}

}  // namespace levee::detail
