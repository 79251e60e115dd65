// levee: a registry's options from a JSON document, compiled once in
// levee::config (lib/config.cpp), with Boost.JSON.
#pragma once

#include <levee/config/config.hpp>
#include <levee/config/impl/members.hpp>

#include <boost/json/parse_options.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/stream_parser.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <string>
#include <utility>

namespace levee {

namespace {
std::string joined(const std::vector<std::string>& errors) {
  std::string all;
  for (const auto& e : errors) {
    if (!all.empty()) all += '\n';
    all += e;
  }
  return all;
}
}  // namespace

config_error::config_error(std::vector<std::string> errors)
    : std::invalid_argument(joined(errors)), errors_(std::move(errors)) {}

namespace detail::config {
namespace {

namespace json = boost::json;

// `path.name`, or `name` at the top.
std::string child(const std::string& path, std::string_view name) {
  return path.empty() ? std::string(name) : path + "." + std::string(name);
}

// Reads `obj`'s members into `o`, each by the table `members`, except the
// `sections` (handled by the caller).
template <class O, class Members>
void read_object(reader& r, const json::object& obj, const std::string& path, O& o,
                 const Members& members, std::initializer_list<std::string_view> sections) {
  for (const auto& kv : obj) {
    const std::string_view name = kv.key();
    if (std::find(sections.begin(), sections.end(), name) != sections.end()) continue;
    const bool known = std::apply(
        [&](const auto&... m) {
          return ((m.name == name ? (read_member(r, child(path, name), kv.value(), o.*m.ptr), true)
                                  : false) ||
                  ...);
        },
        members);
    if (known) continue;
    if (name == "classifier")
      r.error(child(path, name), "is a function: set it in code (the base options), not in a file");
    else
      r.error(child(path, name), "unknown name");
  }
}

// Runs `validate(o)` until it passes, reporting each failure by its member's
// path and resetting that member to `fallback`'s value to find the next one.
template <class O, class Members>
void check(reader& r, const std::string& path, O& o, const O& fallback, const Members& members) {
  std::string last;
  for (int i = 0; i < 64; ++i) {
    try {
      validate(o);
      return;
    } catch (const std::invalid_argument& e) {
      const std::string what = e.what();  // "type::member rule"
      if (what == last) return;           // resetting did not help: reported already
      last = what;
      const auto sep = what.find("::");
      const auto space = what.find(' ', sep == std::string::npos ? 0 : sep);
      if (sep == std::string::npos || space == std::string::npos) {
        r.error(path.empty() ? "document" : path, what);
        return;
      }
      const std::string member = what.substr(sep + 2, space - sep - 2);
      r.error(child(path, member), what.substr(space + 1));
      std::apply(
          [&](const auto&... m) {
            ((m.name == member ? (void)(o.*m.ptr = fallback.*m.ptr) : void()), ...);
          },
          members);
    }
  }
}

const json::object* object_at(reader& r, const json::value& v, const std::string& path) {
  if (const auto* obj = v.if_object()) return obj;
  r.error(path, "must be an object");
  return nullptr;
}

// A breaker's object, with its "limit" section: `breaker` and `limit` start
// as what the object changes.
void read_key(reader& r, const json::object& obj, const std::string& path, breaker_options& breaker,
              std::optional<adaptive_limit_options>& limit,
              const adaptive_limit_options& limit_base, bool null_limit_allowed) {
  const breaker_options breaker_start = breaker;
  read_object(r, obj, path, breaker, breaker_members, {"limit"});
  check(r, path, breaker, breaker_start, breaker_members);
  const auto* section = obj.if_contains("limit");
  if (!section) return;
  const std::string limit_path = child(path, "limit");
  if (section->is_null() && null_limit_allowed) {
    limit.reset();
    return;
  }
  const auto* limit_obj = section->if_object();
  if (!limit_obj) {
    r.error(limit_path, null_limit_allowed ? "must be an object or null" : "must be an object");
    return;
  }
  adaptive_limit_options l = limit_base;
  read_object(r, *limit_obj, limit_path, l, limit_members, {});
  check(r, limit_path, l, limit_base, limit_members);
  limit = std::move(l);
}

registry_options read_document(reader& r, const json::value& doc, const registry_options& base) {
  registry_options out;
  out.defaults = base.defaults;
  out.idle_timeout = base.idle_timeout;
  out.max_breakers = base.max_breakers;
  out.limits = base.limits;
  const auto* root = object_at(r, doc, "document");
  if (!root) return out;
  read_object(r, *root, "", out, registry_members, {"defaults", "endpoints"});
  check(r, "", out, base, registry_members);

  const adaptive_limit_options limit_start = base.limits ? *base.limits : adaptive_limit_options{};
  if (const auto* d = root->if_contains("defaults")) {
    if (const auto* obj = object_at(r, *d, "defaults"))
      read_key(r, *obj, "defaults", out.defaults, out.limits, limit_start, true);
  }
  // Endpoints start from the document's defaults (their bad members reset).
  adaptive_limit_options endpoint_limit = out.limits ? *out.limits : limit_start;
  if (const auto* e = root->if_contains("endpoints")) {
    if (const auto* endpoints = object_at(r, *e, "endpoints")) {
      for (const auto& kv : *endpoints) {
        const std::string path =
            "endpoints[" + json::serialize(json::value(json::string(kv.key()))) + "]";
        const auto* obj = object_at(r, kv.value(), path);
        if (!obj) continue;
        key_options k{.breaker = out.defaults, .limit = std::nullopt};
        read_key(r, *obj, path, k.breaker, k.limit, endpoint_limit, false);
        out.overrides.insert_or_assign(std::string(kv.key()), std::move(k));
      }
    }
  }
  return out;
}

// "line 3, column 14": 1-based, counted in bytes.
std::string position(std::string_view text, std::size_t offset) {
  std::size_t line = 1, column = 1;
  for (std::size_t i = 0; i < offset && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  return "line " + std::to_string(line) + ", column " + std::to_string(column);
}

}  // namespace
}  // namespace detail::config

registry_options parse_registry_config(std::string_view text, const registry_options& base) {
  namespace json = boost::json;
  detail::config::reader r;
  json::parse_options opts;
  opts.allow_comments = true;
  opts.allow_trailing_commas = true;
  json::stream_parser p(json::storage_ptr(), opts);
  boost::system::error_code ec;
  const std::size_t used = p.write_some(text.data(), text.size(), ec);
  if (!ec) p.finish(ec);
  if (ec) throw config_error({detail::config::position(text, used) + ": " + ec.message()});
  const registry_options out = detail::config::read_document(r, p.release(), base);
  if (!r.errors.empty()) throw config_error(std::move(r.errors));
  validate(out);  // every rule was checked above: this cannot throw
  return out;
}

registry_options read_registry_config(const std::string& path, const registry_options& base) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw config_error({path + ": cannot be read: " + std::strerror(errno)});
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw config_error({path + ": cannot be read"});
  return parse_registry_config(text.str(), base);
}

}  // namespace levee
