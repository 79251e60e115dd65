// levee: the fleet's two Lua scripts and the keys they use in Redis.
//
// The link (fleet/impl/fleet_state.hpp) runs them with EVALSHA (EVAL after a
// NOSCRIPT: Redis restarted or flushed its scripts); each runs atomically in
// Redis. Only the link includes this file; the decisions taken on their
// replies are in fleet/detail/fleet_decisions.hpp.
//
// Keys. Every key of one breaker starts with `KEYS[1]`, the breaker's base
// `<key_prefix>:{<breaker name>}` (one hash tag per breaker: in a Redis
// cluster all of a breaker's keys live in the slot of `KEYS[1]`):
//
//   <base>:b:<bucket>  hash {c, f, s}: the fleet's calls, failures and slow
//                      calls in that bucket; expires after window + 1 bucket
//   <base>:i:<bucket>  set: the instances with failures or slow calls in that
//                      bucket; expires after window + 1 bucket
//   <base>:state       string, the record: "o <gen> <half-open time, us> <id>"
//                      (an opening) or "c <gen> 0 <id>" (a closing); an
//                      opening expires at its half-open time + max(1 s, 10
//                      leases), a closing after one window
//   <base>:gen         integer: the generation, INCR at every publication;
//                      never expires (one small key per breaker name). When
//                      it is missing (Redis lost its data) it starts from
//                      Redis time in us, above every generation handed out
//                      before (unless Redis's clock went back); the links
//                      also forget the generations they saw when they
//                      reconnect (fleet/detail/fleet_decisions.hpp)
//   <base>:probe       string, the probe lease: "<id> <gen>"; expires after
//                      `probe_lease`, renewed by the winner while it probes
//
// `<bucket>` is floor(Redis time in us / bucket width in us): the bucket
// comes from the server's clock, so the instances' clock skew does not
// matter. Publications go to the channel `<key_prefix>:fleet` as the record
// followed by a space and the breaker's name.
//
// Deadlines. Both scripts take a deadline in Redis time (us; 0: none) and do
// nothing once Redis time is past it: a command the link gave up (a stopped
// Redis runs what was queued when it continues) changes nothing.
#pragma once

#include <cstddef>

namespace levee::detail {

/// The round: one per bucket width per breaker.
///
/// Adds this instance's counts since the last round to the current bucket,
/// records the instance among the bucket's failing instances when it had
/// failures or slow calls, renews the probe lease this instance holds, and,
/// when asked, races for the probe lease of a fleet opening whose half-open
/// time has come (`SET NX PX`).
///
/// KEYS[1]  the breaker's base, `<key_prefix>:{<name>}`
/// ARGV[1]  this instance's id
/// ARGV[2]  calls since the last round (successes + failures)
/// ARGV[3]  failures since the last round
/// ARGV[4]  slow calls since the last round
/// ARGV[5]  the bucket width, us
/// ARGV[6]  the number of buckets in the window
/// ARGV[7]  1: race for the probe lease (this breaker is OPEN, its timer
///          expired while gated); 0: do not
/// ARGV[8]  the probe lease, ms
/// ARGV[9]  the generation of the lease this instance holds while its probe
///          runs: renewed (PEXPIRE) when the lease still reads "<id> <gen>";
///          "0": none
/// ARGV[10] the deadline, Redis time in us (0: none)
///
/// Reply, an array of 7:
///   [1] Redis time, us
///   [2] [3] [4] the fleet's calls, failures and slow calls over the window
///               (the last ARGV[6] buckets, this round's counts included)
///   [5] the number of distinct failing instances in the window (SUNION)
///   [6] the record (<base>:state), "" when there is none
///   [7] the probe race (`probe_race` in fleet/detail/fleet_decisions.hpp): -2 past the deadline
///   (nothing
///       was done, [2]..[6] are zeros), -1 no fleet opening (no record, or a
///       closing), 0 lost (another instance holds the lease), 1 won, 2 the
///       half-open time has not come; -1 also when ARGV[7] is 0
inline constexpr const char* round_script = R"lua(
local base, id = KEYS[1], ARGV[1]
local c, f, s = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local width, n = tonumber(ARGV[5]), tonumber(ARGV[6])
local want, lease, renew = tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9]
local deadline = tonumber(ARGV[10])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if deadline > 0 and now > deadline then return {now, 0, 0, 0, 0, '', -2} end
local idx = math.floor(now / width)
local ttl = math.ceil(width * (n + 1) / 1000)
if c > 0 then
  local k = base .. ':b:' .. string.format('%d', idx)
  redis.call('HINCRBY', k, 'c', c)
  if f > 0 then redis.call('HINCRBY', k, 'f', f) end
  if s > 0 then redis.call('HINCRBY', k, 's', s) end
  redis.call('PEXPIRE', k, ttl)
end
if f > 0 or s > 0 then
  local k = base .. ':i:' .. string.format('%d', idx)
  redis.call('SADD', k, id)
  redis.call('PEXPIRE', k, ttl)
end
local tc, tf, ts = 0, 0, 0
local sets = {}
for i = idx - n + 1, idx do
  local v = redis.call('HMGET', base .. ':b:' .. string.format('%d', i), 'c', 'f', 's')
  tc = tc + (tonumber(v[1]) or 0)
  tf = tf + (tonumber(v[2]) or 0)
  ts = ts + (tonumber(v[3]) or 0)
  sets[#sets + 1] = base .. ':i:' .. string.format('%d', i)
end
local failing = #redis.call('SUNION', unpack(sets))
local rec = redis.call('GET', base .. ':state')
if renew ~= '0' and redis.call('GET', base .. ':probe') == id .. ' ' .. renew then
  redis.call('PEXPIRE', base .. ':probe', lease)
end
local probe = -1
if want == 1 and rec then
  local kind, gen, half = string.match(rec, '^(%a) (%d+) (%d+)')
  if kind == 'o' then
    if now >= tonumber(half) then
      if redis.call('SET', base .. ':probe', id .. ' ' .. gen, 'NX', 'PX', lease) then
        probe = 1
      else
        probe = 0
      end
    else
      probe = 2
    end
  end
end
return {now, tc, tf, ts, failing, rec or '', probe}
)lua";

/// The number of elements in the round script's reply.
inline constexpr std::size_t round_reply_size = 7;

/// A publication: an opening or a closing of the fleet, by one instance.
///
/// Modes (ARGV[1]):
///   open    a local trip (CLOSED -> OPEN on this instance's own window):
///           this instance is added to the current bucket's failing set, and
///           the opening is published only when the window's failing
///           instances are at least the quorum
///   fleet   an opening on the fleet's window: the same quorum rule (this
///           instance not added)
///   reopen  the prober's probe failed: published only when the record is
///           still the opening of generation ARGV[9]
///   close   the prober's probe succeeded: a closing record, only when the
///           record is still the opening of generation ARGV[9]
/// 'open', 'fleet' and 'reopen' publish nothing while a live opening holds
/// (one whose half-open time is still ahead): the caller adopts it instead.
/// Publishing INCRs <base>:gen, SETs the record (an opening's half-open time
/// is Redis time + ARGV[3]), DELetes the probe lease and PUBLISHes
/// "<record> <name>" on ARGV[7].
///
/// KEYS[1]  the breaker's base, `<key_prefix>:{<name>}`
/// ARGV[1]  the mode: open, fleet, reopen or close
/// ARGV[2]  this instance's id
/// ARGV[3]  how long the opening lasts, us (close: 0)
/// ARGV[4]  the quorum
/// ARGV[5]  the bucket width, us
/// ARGV[6]  the number of buckets in the window
/// ARGV[7]  the channel, `<key_prefix>:fleet`
/// ARGV[8]  the breaker's name
/// ARGV[9]  reopen, close: the generation of the opening probed; else "0"
/// ARGV[10] an opening record lives this much longer than its half-open
///          time, ms
/// ARGV[11] the deadline, Redis time in us (0: none)
///
/// Reply, an array of 3:
///   [1] 1 published, 0 not (past the deadline, a live opening holds, no
///       quorum, or not the prober's opening)
///   [2] the record now ("" when there is none, or past the deadline)
///   [3] Redis time, us
inline constexpr const char* publish_script = R"lua(
local base, mode, id = KEYS[1], ARGV[1], ARGV[2]
local open_for, quorum = tonumber(ARGV[3]), tonumber(ARGV[4])
local width, n = tonumber(ARGV[5]), tonumber(ARGV[6])
local channel, name, gen_arg, keep = ARGV[7], ARGV[8], ARGV[9], tonumber(ARGV[10])
local deadline = tonumber(ARGV[11])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if deadline > 0 and now > deadline then return {0, '', now} end
local rec = redis.call('GET', base .. ':state')
local kind, gen, half
if rec then kind, gen, half = string.match(rec, '^(%a) (%d+) (%d+)') end
local function next_gen()
  local g = redis.call('INCR', base .. ':gen')
  if g == 1 then
    g = now
    redis.call('SET', base .. ':gen', string.format('%d', g))
  end
  return g
end
if mode == 'close' then
  if kind ~= 'o' or gen ~= gen_arg then return {0, rec or '', now} end
  local g = next_gen()
  local r = 'c ' .. string.format('%d', g) .. ' 0 ' .. id
  redis.call('SET', base .. ':state', r, 'PX', math.ceil(width * n / 1000))
  redis.call('DEL', base .. ':probe')
  redis.call('PUBLISH', channel, r .. ' ' .. name)
  return {1, r, now}
end
if kind == 'o' and tonumber(half) > now then return {0, rec, now} end
if mode == 'open' or mode == 'fleet' then
  local idx = math.floor(now / width)
  if mode == 'open' then
    local k = base .. ':i:' .. string.format('%d', idx)
    redis.call('SADD', k, id)
    redis.call('PEXPIRE', k, math.ceil(width * (n + 1) / 1000))
  end
  local sets = {}
  for i = idx - n + 1, idx do sets[#sets + 1] = base .. ':i:' .. string.format('%d', i) end
  if #redis.call('SUNION', unpack(sets)) < quorum then return {0, rec or '', now} end
elseif kind ~= 'o' or gen ~= gen_arg then
  return {0, rec or '', now}
end
local g = next_gen()
local r = 'o ' .. string.format('%d', g) .. ' ' .. string.format('%d', now + open_for) .. ' ' .. id
redis.call('SET', base .. ':state', r, 'PX', math.ceil(open_for / 1000) + keep)
redis.call('DEL', base .. ':probe')
redis.call('PUBLISH', channel, r .. ' ' .. name)
return {1, r, now}
)lua";

/// The number of elements in the publish script's reply.
inline constexpr std::size_t publish_reply_size = 3;

}  // namespace levee::detail
