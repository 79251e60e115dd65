#include <flaky/schedule.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <sstream>

namespace flaky {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

std::optional<double> parse_number(std::string_view text) {
  double value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(value))
    return std::nullopt;
  return value;
}

std::optional<latency_spec> parse_latency(std::string_view text) {
  latency_spec l;
  if (text.substr(0, 5) == "ramp:") {
    l.shape = latency_spec::kind::ramp;
    text.remove_prefix(5);
  } else if (text.substr(0, 4) == "exp:") {
    l.shape = latency_spec::kind::exponential;
    auto mean = parse_duration(text.substr(4));
    if (!mean) return std::nullopt;
    l.low = *mean;
    return l;
  }
  const auto dots = text.find("..");
  if (dots == std::string_view::npos) {
    if (l.shape == latency_spec::kind::ramp) return std::nullopt;
    auto fixed = parse_duration(text);
    if (!fixed) return std::nullopt;
    l.low = l.high = *fixed;
    return l;
  }
  auto low = parse_duration(text.substr(0, dots));
  auto high = parse_duration(text.substr(dots + 2));
  if (!low || !high) return std::nullopt;
  if (l.shape != latency_spec::kind::ramp) {
    l.shape = latency_spec::kind::uniform;
    if (*high < *low) return std::nullopt;
  }
  l.low = *low;
  l.high = *high;
  return l;
}

}  // namespace

nanos latency_spec::sample(double progress, std::mt19937_64& rng) const {
  switch (shape) {
    case kind::fixed:
      return low;
    case kind::uniform:
      return nanos(std::uniform_int_distribution<std::int64_t>(low.count(), high.count())(rng));
    case kind::ramp:
      return nanos(static_cast<std::int64_t>(static_cast<double>(low.count()) +
                                             (static_cast<double>(high.count() - low.count())) *
                                                 std::clamp(progress, 0.0, 1.0)));
    case kind::exponential:
      return nanos(static_cast<std::int64_t>(std::exponential_distribution<double>(
          1.0 / static_cast<double>(std::max<std::int64_t>(1, low.count())))(rng)));
  }
  return low;
}

std::optional<nanos> parse_duration(std::string_view text) {
  text = trim(text);
  if (text == "0") return nanos(0);
  struct unit {
    std::string_view suffix;
    double ns;
  };
  for (const unit u : {unit{"ms", 1e6}, unit{"us", 1e3}, unit{"ns", 1.0}, unit{"s", 1e9},
                       unit{"m", 60e9}, unit{"h", 3600e9}}) {
    if (text.size() > u.suffix.size() && text.substr(text.size() - u.suffix.size()) == u.suffix) {
      auto value = parse_number(text.substr(0, text.size() - u.suffix.size()));
      if (!value || *value < 0) return std::nullopt;
      return nanos(static_cast<std::int64_t>(std::llround(*value * u.ns)));
    }
  }
  return std::nullopt;
}

std::optional<phase> parse_phase(std::string_view spec, std::string& error) {
  std::istringstream in{std::string(spec)};
  std::string name, duration;
  if (!(in >> name >> duration)) {
    error = "a phase is 'NAME DURATION [key=value ...]': got '" + std::string(spec) + "'";
    return std::nullopt;
  }
  phase p;
  p.name = name;
  auto d = parse_duration(duration);
  if (!d || *d <= nanos(0)) {
    error = "phase '" + name + "': bad duration '" + duration + "' (use 10s, 200ms, 1.5m ...)";
    return std::nullopt;
  }
  p.duration = *d;
  std::string item;
  while (in >> item) {
    const auto eq = item.find('=');
    if (eq == std::string::npos) {
      error = "phase '" + name + "': expected key=value, got '" + item + "'";
      return std::nullopt;
    }
    const std::string key = item.substr(0, eq);
    const std::string value = item.substr(eq + 1);
    auto bad = [&](const char* what) {
      error = "phase '" + name + "': " + key + "=" + value + ": " + what;
      return std::nullopt;
    };
    if (key == "errors" || key == "reset") {
      auto v = parse_number(value);
      if (!v || *v < 0 || *v > 1) return bad("must be a fraction in [0, 1]");
      (key == "errors" ? p.error_rate : p.reset_rate) = *v;
    } else if (key == "status") {
      auto v = parse_number(value);
      if (!v || *v < 100 || *v > 599 || *v != std::floor(*v)) return bad("must be an HTTP status");
      p.error_status = static_cast<unsigned>(*v);
    } else if (key == "retry_after") {
      auto v = parse_number(value);
      if (!v || *v < 0 || *v != std::floor(*v)) return bad("must be whole seconds");
      p.retry_after = static_cast<unsigned>(*v);
    } else if (key == "latency") {
      auto l = parse_latency(value);
      if (!l) return bad("use 200ms, 100ms..2s, ramp:200ms..8s or exp:200ms");
      p.latency = *l;
    } else if (key == "refuse") {
      if (value != "0" && value != "1") return bad("must be 0 or 1");
      p.refuse = value == "1";
    } else if (key == "capacity") {
      auto v = parse_number(value);
      if (!v || *v < 0 || *v != std::floor(*v)) return bad("must be a whole number of requests");
      p.capacity = static_cast<std::size_t>(*v);
    } else {
      return bad("unknown key (errors, status, retry_after, latency, refuse, reset, capacity)");
    }
  }
  return p;
}

std::optional<std::vector<phase>> parse_schedule(std::string_view text, std::string& error) {
  std::vector<phase> schedule;
  std::size_t line_no = 0;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    ++line_no;
    if (const auto hash = line.find('#'); hash != std::string_view::npos)
      line = line.substr(0, hash);
    line = trim(line);
    if (line.empty()) continue;
    auto p = parse_phase(line, error);
    if (!p) {
      error = "line " + std::to_string(line_no) + ": " + error;
      return std::nullopt;
    }
    schedule.push_back(std::move(*p));
  }
  if (schedule.empty()) {
    error = "the schedule has no phase";
    return std::nullopt;
  }
  return schedule;
}

std::vector<phase> seed_schedule() {
  std::string error;
  auto s = parse_schedule(
      "healthy   40s latency=200ms capacity=100\n"
      "degrading 60s errors=0.15 latency=ramp:200ms..8s capacity=100\n"
      "outage    40s errors=1 latency=8s capacity=100\n"
      "healed    60s latency=200ms capacity=100\n",
      error);
  return *s;
}

std::string describe(const std::vector<phase>& schedule) {
  std::ostringstream out;
  for (const auto& p : schedule) {
    out << "  " << p.name << ": "
        << std::chrono::duration_cast<std::chrono::milliseconds>(p.duration).count() << " ms";
    if (p.error_rate > 0) out << ", " << p.error_rate * 100 << " % answered " << p.error_status;
    if (p.reset_rate > 0) out << ", " << p.reset_rate * 100 << " % reset";
    if (p.refuse) out << ", connections refused";
    const auto ms = [](nanos d) {
      return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
    };
    switch (p.latency.shape) {
      case latency_spec::kind::fixed:
        out << ", latency " << ms(p.latency.low) << " ms";
        break;
      case latency_spec::kind::uniform:
        out << ", latency " << ms(p.latency.low) << ".." << ms(p.latency.high) << " ms";
        break;
      case latency_spec::kind::ramp:
        out << ", latency rising " << ms(p.latency.low) << " -> " << ms(p.latency.high) << " ms";
        break;
      case latency_spec::kind::exponential:
        out << ", latency exponential, mean " << ms(p.latency.low) << " ms";
        break;
    }
    if (p.capacity) out << ", slows down beyond " << p.capacity << " requests in flight";
    out << '\n';
  }
  return out.str();
}

}  // namespace flaky
