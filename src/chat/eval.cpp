// The evaluator: walks the AST with Jinja2's scoping (a for-loop body gets a fresh scope per
// iteration; if bodies share their parent's; macros see the template's top level), default
// Undefined (prints as "", is falsy, iterates as empty; using it as an object is an error), and
// the filters, tests, globals and str/dict methods chat templates use.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <optional>
#include <set>
#include <unordered_map>

#include "chat/chat_template.h"
#include "chat/jinja.h"

namespace lw::chat::jinja {
namespace {

// ---- helpers --------------------------------------------------------------------------------

bool is_str(const Value& v) { return v.is_data() && v.json().is_string(); }
bool is_int(const Value& v) { return v.is_data() && (v.json().is_number_integer() || v.json().is_boolean()); }
const std::string& str_of(const Value& v, const char* what) {
  if (!is_str(v)) error(std::string(what) + " must be a string, not " + type_name(v));
  return v.json().get_ref<const std::string&>();
}
int64_t int_of(const Value& v, const char* what) {
  if (!is_int(v)) error(std::string(what) + " must be an integer, not " + type_name(v));
  const Json& j = v.json();
  if (j.is_number_unsigned() && j.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) error("integer too large");
  return j.is_boolean() ? (j.get<bool>() ? 1 : 0) : j.get<int64_t>();
}
Json to_json(const Value& v) {  // a value as plain JSON (lists and tuples alike)
  if (require_data(v).is_lazy()) error("Object of type " + type_name(v) + " is not JSON serializable");
  return v.json();
}
Json element(const Value& v) {  // a value going into a list, tuple or dict literal
  if (v.is_undefined()) error("unsupported construct: an undefined value in a list, tuple or dict (" + v.hint + ")");
  if (v.markup) error("unsupported construct: a |safe (Markup) value inside a list, tuple or dict");
  if (v.is_data() && (v.seq != Value::Seq::List || v.tuple_items))
    error("unsupported construct: a " + type_name(v) + " inside a list, tuple or dict");
  return to_json(v);
}

// Call arguments by position or keyword, the way Python binds them.
class Args {
 public:
  Args(CallArgs& a, std::string fn, std::vector<std::string> names) : a_(a), fn_(std::move(fn)), names_(std::move(names)) {
    if (a_.args.size() > names_.size()) error(fn_ + "() takes at most " + std::to_string(names_.size()) + " argument(s)");
    for (auto& [k, v] : a_.kwargs) {
      size_t i = 0;
      while (i < names_.size() && names_[i] != k) ++i;
      if (i == names_.size()) error(fn_ + "() got an unexpected keyword argument '" + k + "'");
      if (i < a_.args.size()) error(fn_ + "() got multiple values for argument '" + k + "'");
    }
  }
  const Value* get(size_t i) const {
    if (i < a_.args.size()) return &a_.args[i];
    for (auto& [k, v] : a_.kwargs)
      if (k == names_[i]) return &v;
    return nullptr;
  }
  Value get(size_t i, Value def) const { return get(i) ? *get(i) : def; }
  const Value& need(size_t i) const {
    if (!get(i)) error(fn_ + "() missing required argument '" + names_[i] + "'");
    return *get(i);
  }
  bool flag(size_t i, bool def) const { return get(i) ? truthy(*get(i)) : def; }

 private:
  CallArgs& a_;
  std::string fn_;
  std::vector<std::string> names_;
};

// Python's slice semantics on a sequence of n elements.
std::vector<int64_t> slice_indices(int64_t n, const Value* start, const Value* stop, const Value* step) {
  auto opt = [](const Value* v) -> std::optional<int64_t> {
    if (!v || (v->is_data() && v->json().is_null())) return std::nullopt;
    return int_of(*v, "slice index");
  };
  int64_t st = opt(step).value_or(1);
  if (st == 0) error("slice step cannot be zero");
  auto adjust = [&](std::optional<int64_t> x, int64_t def) {
    if (!x) return def;
    int64_t i = *x;
    if (i < 0) i += n;
    if (i < 0) return st < 0 ? int64_t{-1} : int64_t{0};
    if (i >= n) return st < 0 ? n - 1 : n;
    return i;
  };
  int64_t b = adjust(opt(start), st < 0 ? n - 1 : 0), e = adjust(opt(stop), st < 0 ? -1 : n);
  std::vector<int64_t> out;
  for (int64_t i = b; st > 0 ? i < e : i > e; i += st) out.push_back(i);
  return out;
}

// ---- case mapping (ASCII; cased non-ASCII letters are refused rather than left wrong) ------

bool has_case(char32_t c) {
  static const std::pair<char32_t, char32_t> ranges[] = {
      {0xB5, 0xB5},       {0xC0, 0x2AF},      {0x345, 0x345},     {0x370, 0x58F},     {0x10A0, 0x10FF},
      {0x13A0, 0x13FF},   {0x1C80, 0x1CBF},   {0x1D79, 0x1D8E},   {0x1E00, 0x1FFF},   {0x2126, 0x214E},
      {0x2160, 0x2188},   {0x24B6, 0x24E9},   {0x2C00, 0x2D2F},   {0xA640, 0xA69F},   {0xA722, 0xA7FF},
      {0xAB53, 0xABBF},   {0xFB00, 0xFB17},   {0xFF21, 0xFF5A},   {0x10400, 0x104FF}, {0x10570, 0x105BF},
      {0x10C80, 0x10CFF}, {0x118A0, 0x118DF}, {0x16E40, 0x16E7F}, {0x1E900, 0x1E94F}};
  for (auto [lo, hi] : ranges)
    if (c >= lo && c <= hi) return true;
  return false;
}

enum class Case { Upper, Lower, Capitalize, PyTitle, JinjaTitle };

std::string change_case(const std::string& s, Case mode) {
  std::u32string u = utf32(s);
  auto lower = [](char32_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; };
  auto upper = [](char32_t c) { return c >= 'a' && c <= 'z' ? c - 32 : c; };
  auto letter = [](char32_t c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
  for (size_t i = 0; i < u.size(); ++i) {
    char32_t c = u[i];
    if (c >= 0x80 && has_case(c))
      error("unsupported construct: changing the case of a non-ASCII letter (U+" + [&] {
        char b[16];
        std::snprintf(b, sizeof b, "%04X", static_cast<unsigned>(c));
        return std::string(b);
      }() + ")");
    bool up = false;
    switch (mode) {
      case Case::Upper: up = true; break;
      case Case::Lower: up = false; break;
      case Case::Capitalize: up = i == 0; break;
      case Case::PyTitle: up = i == 0 || !letter(u[i - 1]); break;
      case Case::JinjaTitle: {
        char32_t p = i ? u[i - 1] : ' ';
        up = i == 0 || is_space(p) || p == '-' || p == '(' || p == '{' || p == '[' || p == '<';
        break;
      }
    }
    u[i] = up ? upper(c) : lower(c);
  }
  return utf8(u);
}

// ---- str methods ----------------------------------------------------------------------------

std::string py_replace(const std::string& s, const std::string& old, const std::string& with, int64_t count) {
  std::string out;
  if (old.empty()) {  // inserts `with` around every character
    std::u32string u = utf32(s);
    int64_t n = 0;
    for (char32_t c : u) {
      if (count < 0 || n < count) out += with, ++n;
      out += utf8(std::u32string(1, c));
    }
    if (count < 0 || n < count) out += with;
    return out;
  }
  size_t pos = 0;
  for (int64_t n = 0; count < 0 || n < count; ++n) {
    size_t at = s.find(old, pos);
    if (at == std::string::npos) break;
    out += s.substr(pos, at - pos) + with;
    pos = at + old.size();
  }
  return out + s.substr(pos);
}

Json py_split(const std::string& s, const Value& sep, int64_t maxsplit) {
  Json out = Json::array();
  if (sep.is_data() && sep.json().is_null()) {  // runs of whitespace
    std::u32string u = utf32(s);
    size_t i = 0;
    while (i < u.size()) {
      while (i < u.size() && is_space(u[i])) ++i;
      if (i == u.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
        size_t e = u.size();
        while (e > i && is_space(u[e - 1])) --e;
        out.push_back(utf8(u.substr(i, e - i)));
        break;
      }
      size_t j = i;
      while (j < u.size() && !is_space(u[j])) ++j;
      out.push_back(utf8(u.substr(i, j - i)));
      i = j;
    }
    return out;
  }
  const std::string& d = str_of(sep, "split separator");
  if (d.empty()) error("empty separator");
  size_t pos = 0;
  for (int64_t n = 0; maxsplit < 0 || n < maxsplit; ++n) {
    size_t at = s.find(d, pos);
    if (at == std::string::npos) break;
    out.push_back(s.substr(pos, at - pos));
    pos = at + d.size();
  }
  out.push_back(s.substr(pos));
  return out;
}

bool affix_match(const std::string& s, const Value& arg, bool prefix) {
  std::vector<std::string> options;
  if (arg.is_data() && arg.json().is_array()) {
    for (const Json& x : arg.json()) {
      if (!x.is_string()) error("tuple for startswith/endswith must only contain str");
      options.push_back(x.get<std::string>());
    }
  } else {
    options.push_back(str_of(arg, prefix ? "startswith argument" : "endswith argument"));
  }
  for (const std::string& o : options) {
    if (o.size() > s.size()) continue;
    if (prefix ? s.compare(0, o.size(), o) == 0 : s.compare(s.size() - o.size(), o.size(), o) == 0) return true;
  }
  return false;
}

const std::set<std::string> kOtherStrMethods = {
    "casefold", "center", "encode", "expandtabs", "format", "format_map", "index", "isalnum", "isalpha",
    "isascii", "isdecimal", "isdigit", "isidentifier", "islower", "isnumeric", "isprintable", "isspace",
    "istitle", "isupper", "ljust", "partition", "removeprefix", "removesuffix", "rfind", "rindex", "rjust",
    "rpartition", "rsplit", "splitlines", "swapcase", "translate", "zfill"};
const std::set<std::string> kOtherDictMethods = {"clear", "copy", "fromkeys", "pop", "popitem", "setdefault", "update"};
const std::set<std::string> kListMethods = {"append", "clear", "copy", "count", "extend", "index",
                                            "insert", "pop", "remove", "reverse", "sort"};

Value unsupported_method(const std::string& type, const std::string& name) {
  return callable(name, [type, name](CallArgs&) -> Value {
    error("unsupported construct: the " + type + " method '" + name + "'");
  });
}

std::optional<Value> str_method(const Value& self, const std::string& name) {
  const std::string s = self.json().get<std::string>();
  auto m = [&](std::vector<std::string> params, std::function<Value(const Args&)> fn) {
    return callable(name, [name, params, fn](CallArgs& a) { return fn(Args(a, name, params)); });
  };
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    bool l = name != "rstrip", r = name != "lstrip";
    return m({"chars"}, [s, l, r](const Args& a) { return make(strip(s, a.get(0, make(nullptr)), l, r)); });
  }
  if (name == "startswith" || name == "endswith") {
    bool prefix = name == "startswith";
    return m({"prefix"}, [s, prefix](const Args& a) { return make(affix_match(s, a.need(0), prefix)); });
  }
  if (name == "split")
    return m({"sep", "maxsplit"}, [s](const Args& a) {
      return make(py_split(s, a.get(0, make(nullptr)), a.get(1) ? int_of(*a.get(1), "maxsplit") : -1));
    });
  if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
    Case c = name == "upper" ? Case::Upper : name == "lower" ? Case::Lower : name == "title" ? Case::PyTitle : Case::Capitalize;
    return m({}, [s, c](const Args&) { return make(change_case(s, c)); });
  }
  if (name == "replace")
    return m({"old", "new", "count"}, [s](const Args& a) {
      return make(py_replace(s, str_of(a.need(0), "replace argument"), str_of(a.need(1), "replace argument"),
                             a.get(2) ? int_of(*a.get(2), "count") : -1));
    });
  if (name == "find" || name == "count")
    return m({"sub"}, [s, name](const Args& a) {
      const std::string& sub = str_of(a.need(0), name.c_str());
      if (name == "find") {
        size_t at = s.find(sub);
        return make(at == std::string::npos ? int64_t{-1} : static_cast<int64_t>(utf32(s.substr(0, at)).size()));
      }
      if (sub.empty()) return make(static_cast<int64_t>(utf32(s).size()) + 1);
      int64_t n = 0;
      for (size_t at = s.find(sub); at != std::string::npos; at = s.find(sub, at + sub.size())) ++n;
      return make(n);
    });
  if (name == "join")
    return m({"iterable"}, [s](const Args& a) {
      std::string out;
      bool first = true;
      for (const Value& x : iterate(a.need(0))) {
        out += (first ? "" : s) + str_of(x, "sequence item");
        first = false;
      }
      return make(out);
    });
  if (kOtherStrMethods.count(name)) return unsupported_method("str", name);
  return std::nullopt;
}

std::optional<Value> dict_method(const Value& self, const std::string& name) {
  if (name == "items" || name == "keys" || name == "values")
    return callable(name, [self, name](CallArgs& a) {
      Args(a, name, {});
      Json out = Json::array();
      for (auto& [k, v] : self.json().items()) {
        if (name == "items") out.push_back(Json::array({k, v}));
        else if (name == "keys") out.push_back(k);
        else out.push_back(v);
      }
      return make_seq(std::move(out), Value::Seq::View, name == "items");
    });
  if (name == "get")
    return callable(name, [self](CallArgs& ca) {
      Args a(ca, "get", {"key", "default"});
      const Value& key = a.need(0);
      if (is_str(key)) {
        auto it = self.json().find(key.json().get<std::string>());
        if (it != self.json().end()) return view(self, *it);
      }
      return a.get(1, make(nullptr));
    });
  if (kOtherDictMethods.count(name)) return unsupported_method("dict", name);
  return std::nullopt;
}

std::string object_name(const Value& v) {  // Jinja's object_type_repr, quoted
  if (v.is_data() && v.json().is_null()) return "'None'";
  std::string name = "'";
  name += type_name(v);
  name += " object'";
  return name;
}

// obj.name: Python attribute first (methods), then the item (Jinja's environment.getattr).
Value get_attr(const Value& obj, const std::string& name) {
  if (obj.is_undefined()) require_data(obj);
  std::string hint = object_name(obj) + " has no attribute '" + name + "'";
  if (obj.kind == Value::Kind::Namespace) {
    for (auto& [k, v] : obj.ns->attrs)
      if (k == name) return v;
    return undefined(hint);
  }
  if (!obj.is_data()) return undefined(hint);
  const Json& j = obj.json();
  if (j.is_string() && obj.markup) return unsupported_method("Markup (|safe)", name);
  if (j.is_string())
    if (auto m = str_method(obj, name)) return *m;
  if (j.is_object()) {
    if (auto m = dict_method(obj, name)) return *m;
    auto it = j.find(name);
    if (it != j.end()) return view(obj, *it);
  }
  if (j.is_array() && kListMethods.count(name)) return unsupported_method("list", name);
  return undefined(hint);
}

// obj[key]: the item first, then the attribute (Jinja's environment.getitem).
Value get_item(const Value& obj, const Value& key) {
  if (obj.is_undefined()) require_data(obj);
  if (obj.is_data()) {
    const Json& j = obj.json();
    if (j.is_object() && is_str(key)) {
      auto it = j.find(key.json().get<std::string>());
      if (it != j.end()) return view(obj, *it);
    } else if ((j.is_array() || j.is_string()) && is_int(key)) {
      int64_t i = int_of(key, "index");
      if (j.is_array()) {
        int64_t n = static_cast<int64_t>(j.size());
        if (i < 0) i += n;
        if (i >= 0 && i < n && !obj.is_lazy()) {  // iterators and dict views have no subscripts
          Value v = view(obj, j[static_cast<size_t>(i)]);
          if (obj.tuple_items) v.seq = Value::Seq::Tuple;
          return v;
        }
      } else {
        std::u32string u = utf32(j.get_ref<const std::string&>());
        int64_t n = static_cast<int64_t>(u.size());
        if (i < 0) i += n;
        if (i >= 0 && i < n) return make(utf8(u.substr(static_cast<size_t>(i), 1)));
      }
      return undefined(object_name(obj) + " has no element " + std::to_string(int_of(key, "index")));
    }
  }
  if (is_str(key)) return get_attr(obj, key.json().get<std::string>());
  return undefined(object_name(obj) + " has no element " + (key.is_data() ? repr(key.json()) : "?"));
}

// Jinja's make_attrgetter: "a.b" walks attributes, digits index lists.
Value get_path(const Value& obj, const std::string& path) {
  Value v = obj;
  size_t pos = 0;
  for (;;) {
    size_t dot = path.find('.', pos);
    std::string part = path.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
    bool digits = !part.empty() && part.find_first_not_of("0123456789") == std::string::npos;
    v = digits ? get_item(v, make(static_cast<int64_t>(std::stoll(part)))) : get_item(v, make(part));
    if (dot == std::string::npos) return v;
    pos = dot + 1;
  }
}

// ---- tests ----------------------------------------------------------------------------------

bool apply_test(const std::string& name, const Value& v, CallArgs& a) {
  auto arg = [&](const char* what) -> const Value& { return Args(a, name, {what}).need(0); };
  static const std::set<std::string> no_args = {"defined", "undefined", "none",    "boolean", "true",   "false",
                                                "integer", "float",     "number",  "string",  "mapping",
                                                "iterable", "sequence", "callable", "odd",    "even"};
  if (no_args.count(name) && (!a.args.empty() || !a.kwargs.empty()))
    error("test '" + name + "' takes no arguments");
  const bool data = v.is_data();
  const Json* j = data ? &v.json() : nullptr;
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return data && j->is_null();
  if (name == "boolean") return data && j->is_boolean();
  if (name == "true") return data && j->is_boolean() && j->get<bool>();
  if (name == "false") return data && j->is_boolean() && !j->get<bool>();
  if (name == "integer") return data && j->is_number_integer();
  if (name == "float") return data && j->is_number_float();
  if (name == "number") return data && (j->is_number() || j->is_boolean());
  if (name == "string") return data && j->is_string();
  if (name == "mapping") return data && j->is_object();
  if (name == "iterable") return v.is_undefined() || (data && (j->is_string() || j->is_array() || j->is_object()));
  if (name == "sequence") return v.is_undefined() || (data && !v.is_lazy() && (j->is_string() || j->is_array() || j->is_object()));
  if (name == "callable") return v.kind == Value::Kind::Callable;
  if (name == "eq" || name == "equalto" || name == "==") return equals(v, arg("other"));
  if (name == "ne" || name == "!=") return !equals(v, arg("other"));
  if (name == "lt" || name == "lessthan" || name == "<") return less(v, arg("other"));
  if (name == "le" || name == "<=") return !less(arg("other"), v);
  if (name == "gt" || name == "greaterthan" || name == ">") return less(arg("other"), v);
  if (name == "ge" || name == ">=") return !less(v, arg("other"));
  if (name == "in") return contains(arg("seq"), v);
  if (name == "odd") return equals(arithmetic("%", v, make(2)), make(1));
  if (name == "even") return equals(arithmetic("%", v, make(2)), make(0));
  if (name == "divisibleby") return equals(arithmetic("%", v, arg("num")), make(0));
  if (name == "sameas") {
    const Value& o = arg("other");
    if (data && o.is_data() && (j->is_null() || j->is_boolean()) && (o.json().is_null() || o.json().is_boolean()))
      return *j == o.json();
    error("unsupported construct: the 'sameas' test on " + type_name(v));
  }
  if (!jinja_has_test(name)) error("no test named '" + name + "' found");
  error("unsupported construct: the test '" + name + "'");
}

// ---- the evaluator --------------------------------------------------------------------------

struct Scope {
  Scope* parent = nullptr;
  std::unordered_map<std::string, Value> vars;

  const Value* find(const std::string& name) const {
    for (const Scope* s = this; s; s = s->parent) {
      auto it = s->vars.find(name);
      if (it != s->vars.end()) return &it->second;
    }
    return nullptr;
  }
};

enum class Flow { Normal, Break, Continue };

class Evaluator {
 public:
  Evaluator(const Body& program, const Json& context) : program_(program) {
    Value ctx = make(context);
    for (auto& [k, v] : context.items()) globals_.vars[k] = view(ctx, v);
    add_globals();
    root_.parent = &globals_;
  }

  std::string run() {
    try {
      exec(program_, root_);
    } catch (const TemplateException&) {
      throw;
    } catch (const lw::Error& e) {
      error("line " + std::to_string(line_) + ": " + e.what());
    }
    return std::move(out_);
  }

 private:
  const Body& program_;
  Scope globals_, root_;
  std::string out_;
  int line_ = 0;
  int calls_ = 0;  // macro calls in progress

  // ---- statements ----

  Flow exec(const Body& body, Scope& scope) {
    for (const Node& n : body) {
      line_ = n.line;
      switch (n.kind) {
        case Node::Kind::Text: out_ += n.text; break;
        case Node::Kind::Output: out_ += to_str(eval(*n.expr, scope)); break;
        case Node::Kind::If:
          for (auto& [cond, branch] : n.branches) {
            if (!cond || truthy(eval(*cond, scope))) {
              Flow f = exec(branch, scope);
              if (f != Flow::Normal) return f;
              break;
            }
          }
          break;
        case Node::Kind::For: exec_for(n, scope); break;
        case Node::Kind::Set: exec_set(n, scope); break;
        case Node::Kind::SetBlock: {
          std::string saved;
          std::swap(saved, out_);
          Scope inner{&scope, {}};
          exec(n.body, inner);
          std::swap(saved, out_);
          scope.vars[n.targets[0]] = make(saved);
          break;
        }
        case Node::Kind::Macro: define_macro(n, scope); break;
        case Node::Kind::Break: return Flow::Break;
        case Node::Kind::Continue: return Flow::Continue;
        case Node::Kind::Scoped: {
          Scope inner{&scope, {}};
          exec(n.body, inner);
          break;
        }
      }
    }
    return Flow::Normal;
  }

  void bind(Scope& scope, const std::vector<std::string>& names, const Value& v) {
    if (names.size() == 1) {
      scope.vars[names[0]] = v;
      return;
    }
    std::vector<Value> parts = iterate(v);
    if (parts.size() != names.size())
      error(std::string(parts.size() < names.size() ? "not enough" : "too many") + " values to unpack (expected " +
            std::to_string(names.size()) + ", got " + std::to_string(parts.size()) + ")");
    for (size_t i = 0; i < names.size(); ++i) scope.vars[names[i]] = parts[i];
  }

  void exec_for(const Node& n, Scope& scope) {
    Value seq = eval(*n.expr, scope);
    if (seq.kind == Value::Kind::Namespace || seq.kind == Value::Kind::Callable)
      error("'" + type_name(seq) + "' object is not iterable");
    std::vector<Value> items = iterate(seq);
    if (n.filter) {
      std::vector<Value> kept;
      for (const Value& item : items) {
        Scope tmp{&scope, {}};
        bind(tmp, n.targets, item);
        if (truthy(eval(*n.filter, tmp))) kept.push_back(item);
      }
      items = std::move(kept);
    }
    if (items.empty()) {
      exec(n.else_body, scope);
      return;
    }
    const int64_t len = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < len; ++i) {
      Scope inner{&scope, {}};
      bind(inner, n.targets, items[static_cast<size_t>(i)]);
      inner.vars["loop"] = loop_object(items, i);
      if (exec(n.body, inner) == Flow::Break) break;
    }
  }

  static Value loop_object(const std::vector<Value>& items, int64_t i) {
    const int64_t len = static_cast<int64_t>(items.size());
    Value v;
    v.kind = Value::Kind::Namespace;
    v.ns = std::make_shared<Namespace>();
    auto& a = v.ns->attrs;
    a.emplace_back("index", make(i + 1));
    a.emplace_back("index0", make(i));
    a.emplace_back("revindex", make(len - i));
    a.emplace_back("revindex0", make(len - i - 1));
    a.emplace_back("first", make(i == 0));
    a.emplace_back("last", make(i == len - 1));
    a.emplace_back("length", make(len));
    a.emplace_back("depth", make(1));
    a.emplace_back("depth0", make(0));
    if (i > 0) a.emplace_back("previtem", items[static_cast<size_t>(i - 1)]);
    if (i + 1 < len) a.emplace_back("nextitem", items[static_cast<size_t>(i + 1)]);
    a.emplace_back("cycle", callable("cycle", [i](CallArgs& c) {
                     if (c.args.empty() || !c.kwargs.empty()) error("loop.cycle() needs positional arguments");
                     return c.args[static_cast<size_t>(i) % c.args.size()];
                   }));
    a.emplace_back("changed", unsupported_method("loop", "changed"));
    return v;
  }

  void exec_set(const Node& n, Scope& scope) {
    Value v = eval(*n.expr, scope);
    if (n.attr.empty()) {
      bind(scope, n.targets, v);
      return;
    }
    const Value* target = scope.find(n.targets[0]);
    if (!target || target->kind != Value::Kind::Namespace || n.targets[0] == "loop")
      error("cannot assign attribute on non-namespace object");
    if (n.attr[0] == '_') error("chat templates cannot store underscore-prefixed attributes on a namespace");
    for (auto& [k, old] : target->ns->attrs)
      if (k == n.attr) {
        old = v;
        return;
      }
    target->ns->attrs.emplace_back(n.attr, v);
  }

  void define_macro(const Node& n, Scope& scope) {
    const Node* macro = &n;
    scope.vars[n.text] = callable(n.text, [this, macro](CallArgs& a) {
      const auto& params = macro->params;
      if (a.args.size() > params.size())
        error("macro '" + macro->text + "' takes not more than " + std::to_string(params.size()) + " argument(s)");
      Scope inner{&root_, {}};
      for (size_t i = 0; i < params.size(); ++i) {
        const Value* given = i < a.args.size() ? &a.args[i] : nullptr;
        for (auto& [k, v] : a.kwargs)
          if (k == params[i].first) given = &v;
        inner.vars[params[i].first] = given                ? *given
                                      : params[i].second ? eval(*params[i].second, inner)
                                                         : undefined("parameter '" + params[i].first + "' was not provided");
      }
      for (auto& [k, v] : a.kwargs) {
        bool known = false;
        for (auto& p : params) known |= p.first == k;
        if (!known) error("macro '" + macro->text + "' takes no keyword argument '" + k + "'");
      }
      if (++calls_ > 256) error("macro calls nested too deeply (recursion?)");
      std::string saved;
      std::swap(saved, out_);
      int line = line_;
      exec(macro->body, inner);
      line_ = line;
      std::swap(saved, out_);
      --calls_;
      return make(saved);
    });
  }

  // ---- expressions ----

  Value eval(const Expr& e, Scope& scope) {
    if (e.line) line_ = e.line;
    switch (e.kind) {
      case Expr::Kind::Const: return make(e.value);
      case Expr::Kind::Name: {
        const Value* v = scope.find(e.name);
        return v ? *v : undefined("'" + e.name + "' is undefined");
      }
      case Expr::Kind::List:
      case Expr::Kind::Tuple: {
        Json out = Json::array();
        for (auto& x : e.args) out.push_back(element(eval(*x, scope)));
        return make_seq(std::move(out), e.kind == Expr::Kind::Tuple ? Value::Seq::Tuple : Value::Seq::List);
      }
      case Expr::Kind::Dict: {
        Json out = Json::object();
        for (size_t i = 0; i < e.args.size(); i += 2) {
          Value k = eval(*e.args[i], scope);
          out[str_of(k, "dict key")] = element(eval(*e.args[i + 1], scope));
        }
        return make(std::move(out));
      }
      case Expr::Kind::Attr: return get_attr(eval(*e.args[0], scope), e.name);
      case Expr::Kind::Item: {
        Value obj = eval(*e.args[0], scope);
        return get_item(obj, eval(*e.args[1], scope));
      }
      case Expr::Kind::Slice: return eval_slice(e, scope);
      case Expr::Kind::Call: {
        Value fn = eval(*e.args[0], scope);
        CallArgs a = eval_args(e, scope);
        if (fn.kind != Value::Kind::Callable) {
          if (fn.is_undefined()) require_data(fn);
          error("'" + type_name(fn) + "' object is not callable");
        }
        return fn.fn->fn(a);
      }
      case Expr::Kind::Filter: {
        Value in = eval(*e.args[0], scope);
        CallArgs a = eval_args(e, scope);
        return apply_filter(e.name, in, a);
      }
      case Expr::Kind::Test: {
        Value in = eval(*e.args[0], scope);
        CallArgs a = eval_args(e, scope);
        return make(apply_test(e.name, in, a) != e.negated);
      }
      case Expr::Kind::Not: return make(!truthy(eval(*e.args[0], scope)));
      case Expr::Kind::Neg: return negate(eval(*e.args[0], scope));
      case Expr::Kind::Pos: {
        Value v = eval(*e.args[0], scope);
        if (!v.is_data() || !(v.json().is_number() || v.json().is_boolean()))
          error("bad operand type for unary +: '" + type_name(v) + "'");
        return v;
      }
      case Expr::Kind::Binary: {
        Value a = eval(*e.args[0], scope);
        return arithmetic(e.name, a, eval(*e.args[1], scope));
      }
      case Expr::Kind::Compare: {
        Value left = eval(*e.args[0], scope);
        for (size_t i = 0; i < e.ops.size(); ++i) {
          Value right = eval(*e.args[i + 1], scope);
          if (!compare(e.ops[i], left, right)) return make(false);
          left = right;
        }
        return make(true);
      }
      case Expr::Kind::And: {
        Value a = eval(*e.args[0], scope);
        return truthy(a) ? eval(*e.args[1], scope) : a;
      }
      case Expr::Kind::Or: {
        Value a = eval(*e.args[0], scope);
        return truthy(a) ? a : eval(*e.args[1], scope);
      }
      case Expr::Kind::Cond:
        if (truthy(eval(*e.args[0], scope))) return eval(*e.args[1], scope);
        if (e.args[2]) return eval(*e.args[2], scope);
        return undefined("the inline if-expression on line " + std::to_string(e.line) +
                         " evaluated to false and no else section was defined");
    }
    error("internal error: unknown expression");
  }

  static bool compare(const std::string& op, const Value& a, const Value& b) {
    if (op == "==") return equals(a, b);
    if (op == "!=") return !equals(a, b);
    if (op == "<") return less(a, b);
    if (op == "<=") return !less(b, a);
    if (op == ">") return less(b, a);
    if (op == ">=") return !less(a, b);
    if (op == "in") return contains(b, a);
    return !contains(b, a);  // notin
  }

  CallArgs eval_args(const Expr& e, Scope& scope) {
    CallArgs a;
    for (size_t i = 1; i < e.args.size(); ++i) a.args.push_back(eval(*e.args[i], scope));
    for (auto& [k, v] : e.kwargs) a.kwargs.emplace_back(k, eval(*v, scope));
    return a;
  }

  Value eval_slice(const Expr& e, Scope& scope) {
    Value obj = eval(*e.args[0], scope);
    Value parts[3];
    const Value* ptr[3] = {nullptr, nullptr, nullptr};
    for (int i = 0; i < 3; ++i)
      if (e.args[static_cast<size_t>(i) + 1]) {
        parts[i] = eval(*e.args[static_cast<size_t>(i) + 1], scope);
        ptr[i] = &parts[i];
      }
    const Json& j = require_data(obj).json();
    if (j.is_array() && !obj.is_lazy()) {
      Json out = Json::array();
      for (int64_t i : slice_indices(static_cast<int64_t>(j.size()), ptr[0], ptr[1], ptr[2]))
        out.push_back(j[static_cast<size_t>(i)]);
      return make_seq(std::move(out), obj.seq, obj.tuple_items);
    }
    if (j.is_string()) {
      std::u32string u = utf32(j.get_ref<const std::string&>()), out;
      for (int64_t i : slice_indices(static_cast<int64_t>(u.size()), ptr[0], ptr[1], ptr[2]))
        out += u[static_cast<size_t>(i)];
      return make(utf8(out));
    }
    // Jinja compiles slices to a plain Python subscript, which fails on anything else.
    if (j.is_object()) error("unhashable type: 'slice'");
    error("'" + type_name(obj) + "' object is not subscriptable");
  }

  // ---- filters ----

  Value apply_filter(const std::string& name, const Value& in, CallArgs& ca) {
    auto A = [&](std::vector<std::string> names) { return Args(ca, name, std::move(names)); };
    auto text = [&]() { return to_str(in); };  // Jinja's soft_str: Undefined -> ""
    static const std::set<std::string> markup_ok = {"safe", "string", "length", "count", "default", "d"};
    if (in.markup && !markup_ok.count(name)) error("unsupported construct: the filter '" + name + "' on a |safe (Markup) value");
    if (name == "trim") return make(strip(text(), A({"chars"}).get(0, make(nullptr)), true, true));
    if (name == "length" || name == "count") {
      A({});
      if (in.kind == Value::Kind::Namespace || in.kind == Value::Kind::Callable)
        error("object of type '" + type_name(in) + "' has no len()");
      return make(length(in));
    }
    if (name == "upper" || name == "lower" || name == "capitalize" || name == "title") {
      A({});
      Case c = name == "upper" ? Case::Upper : name == "lower" ? Case::Lower : name == "title" ? Case::JinjaTitle : Case::Capitalize;
      return make(change_case(text(), c));
    }
    if (name == "string" || name == "safe") {  // safe: Markup(value), a string that stays Markup
      A({});
      Value v = make(text());
      v.markup = name == "safe" || in.markup;
      return v;
    }
    if (name == "default" || name == "d") {
      Args a = A({"default_value", "boolean"});
      bool use = in.is_undefined() || (a.flag(1, false) && !truthy(in));
      return use ? a.get(0, make("")) : in;
    }
    if (name == "tojson") {
      Args a = A({"ensure_ascii", "indent", "separators", "sort_keys"});
      int indent = -1;
      if (const Value* v = a.get(1); v && !(v->is_data() && v->json().is_null()))
        indent = static_cast<int>(std::max<int64_t>(0, int_of(*v, "tojson indent")));
      std::string item_sep = indent < 0 ? ", " : ",", key_sep = ": ";
      if (const Value* v = a.get(2); v && !(v->is_data() && v->json().is_null())) {
        const Json& s = require_data(*v).json();
        if (!s.is_array() || s.size() != 2 || !s[0].is_string() || !s[1].is_string())
          error("tojson separators must be two strings");
        item_sep = s[0].get<std::string>();
        key_sep = s[1].get<std::string>();
      }
      if (in.is_undefined()) error("Object of type Undefined is not JSON serializable");
      return make(dump_json(to_json(in), indent, a.flag(0, false), a.flag(3, false), item_sep, key_sep));
    }
    if (name == "first" || name == "last") {
      A({});
      if (name == "last" && in.is_data() && in.seq == Value::Seq::Iterator) error("'generator' object is not reversible");
      std::vector<Value> items = iterate(in);
      if (items.empty()) return undefined("No " + name + " item, sequence was empty.");
      return name == "first" ? items.front() : items.back();
    }
    if (name == "join") {
      Args a = A({"d", "attribute"});
      std::string sep = a.get(0) ? to_str(*a.get(0)) : "", out;
      const Value* attr = a.get(1);
      bool first = true;
      for (const Value& item : iterate(in)) {
        Value x = attr && !(attr->is_data() && attr->json().is_null()) ? get_path(item, to_str(*attr)) : item;
        out += (first ? "" : sep) + to_str(x);
        first = false;
      }
      return make(out);
    }
    if (name == "list") {
      A({});
      Json out = Json::array();
      for (const Value& x : iterate(in)) out.push_back(x.json());
      return make_seq(std::move(out), Value::Seq::List, in.is_data() && in.tuple_items);
    }
    if (name == "reverse") {
      A({});
      if (is_str(in)) {
        std::u32string u = utf32(in.json().get<std::string>());
        return make(utf8(std::u32string(u.rbegin(), u.rend())));
      }
      // reversed() of a sequence is an iterator; an iterator is read into a list first.
      bool was_iterator = require_data(in).seq == Value::Seq::Iterator;
      std::vector<Value> items = iterate(in);
      Json out = Json::array();
      for (auto it = items.rbegin(); it != items.rend(); ++it) out.push_back(it->json());
      return make_seq(std::move(out), was_iterator ? Value::Seq::List : Value::Seq::Iterator, in.tuple_items);
    }
    if (name == "items") {
      A({});
      if (in.is_undefined()) return make_seq(Json::array(), Value::Seq::Iterator, true);
      if (!in.is_data() || !in.json().is_object()) error("Can only get item pairs from a mapping.");
      Json out = Json::array();
      for (auto& [k, v] : in.json().items()) out.push_back(Json::array({k, v}));
      return make_seq(std::move(out), Value::Seq::Iterator, true);
    }
    if (name == "replace") {
      Args a = A({"old", "new", "count"});
      return make(py_replace(text(), to_str(a.need(0)), to_str(a.need(1)),
                             a.get(2) && !(a.get(2)->is_data() && a.get(2)->json().is_null()) ? int_of(*a.get(2), "count") : -1));
    }
    if (name == "indent") return indent(str_of(require_data(in), "indent input"), A({"width", "first", "blank"}));
    if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") return select(name, in, ca);
    if (name == "map") return map(in, ca);
    if (name == "abs") {
      A({});
      const Json& j = require_data(in).json();
      if (j.is_number_float()) return make(std::abs(j.get<double>()));
      int64_t x = int_of(in, "abs argument");
      return x < 0 ? negate(in) : make(x);
    }
    if (name == "int" || name == "float") return to_number(name, in, ca);
    if (name == "round") {
      Args a = A({"precision", "method"});
      int64_t precision = a.get(0) ? int_of(*a.get(0), "precision") : 0;
      std::string method = a.get(1) ? to_str(*a.get(1)) : "common";
      const Json& j = require_data(in).json();
      double x = j.is_number_float() ? j.get<double>() : static_cast<double>(int_of(in, "round value"));
      double scale = std::pow(10.0, static_cast<double>(precision));
      if (method == "ceil") return make(std::ceil(x * scale) / scale);
      if (method == "floor") return make(std::floor(x * scale) / scale);
      if (method != "common") error("method must be common, ceil or floor");
      if (!j.is_number_float()) {  // Python's round() of an int is an int
        if (precision >= 0) return make(int_of(in, "round value"));
        return make(static_cast<int64_t>(std::nearbyint(x * scale) / scale));
      }
      if (precision < 0) return make(std::nearbyint(x * scale) / scale);
      // Python's round(): correctly rounded, ties to even -- as printf rounds.
      char buf[512];
      std::snprintf(buf, sizeof buf, "%.*f", static_cast<int>(std::min<int64_t>(precision, 300)), x);
      return make(std::strtod(buf, nullptr));
    }
    if (!jinja_has_filter(name)) error("no filter named '" + name + "' found");
    error("unsupported construct: the filter '" + name + "'");
  }

  static Value indent(const std::string& s, const Args& a) {
    std::string pad;
    const Value* w = a.get(0);
    if (w && is_str(*w)) pad = w->json().get<std::string>();
    else pad = std::string(static_cast<size_t>(std::max<int64_t>(0, w ? int_of(*w, "indent width") : 4)), ' ');
    bool first = a.flag(1, false), blank = a.flag(2, false);
    // Python's str.splitlines() of s + "\n".
    std::u32string u = utf32(s + "\n");
    std::vector<std::string> lines;
    std::u32string cur;
    for (size_t i = 0; i < u.size(); ++i) {
      char32_t c = u[i];
      bool brk = c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D || c == 0x1E ||
                 c == 0x85 || c == 0x2028 || c == 0x2029;
      if (!brk) {
        cur += c;
        continue;
      }
      if (c == '\r' && i + 1 < u.size() && u[i + 1] == '\n') ++i;
      lines.push_back(utf8(cur));
      cur.clear();
    }
    if (!cur.empty()) lines.push_back(utf8(cur));
    std::string rv;
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i) rv += "\n";
      if (i && (blank || !lines[i].empty())) rv += pad;
      rv += lines[i];
    }
    if (first) rv = pad + rv;
    return make(rv);
  }

  Value select(const std::string& name, const Value& in, CallArgs& ca) {
    bool attr = name == "selectattr" || name == "rejectattr";
    bool keep_if = name == "select" || name == "selectattr";
    size_t at = 0;
    std::string attribute;
    if (attr) {
      if (ca.args.empty()) error(name + "() needs an attribute name");
      attribute = str_of(ca.args[at++], "attribute");
    }
    std::string test;
    if (at < ca.args.size()) test = str_of(ca.args[at++], "test name");
    CallArgs test_args;
    test_args.args.assign(ca.args.begin() + static_cast<std::ptrdiff_t>(at), ca.args.end());
    test_args.kwargs = ca.kwargs;
    Json out = Json::array();
    for (const Value& item : iterate(in)) {
      Value x = attr ? get_path(item, attribute) : item;
      CallArgs copy = test_args;
      bool ok = test.empty() ? truthy(x) : apply_test(test, x, copy);
      if (ok == keep_if) out.push_back(item.json());
    }
    return make_seq(std::move(out), Value::Seq::Iterator, in.is_data() && in.tuple_items);
  }

  Value map(const Value& in, CallArgs& ca) {
    Json out = Json::array();
    if (ca.args.empty()) {
      Args a(ca, "map", {"attribute", "default"});
      std::string attribute = to_str(a.need(0));
      for (const Value& item : iterate(in)) {
        Value x = get_path(item, attribute);
        if (x.is_undefined() && a.get(1)) x = *a.get(1);
        out.push_back(to_json(x));
      }
      return make_seq(std::move(out), Value::Seq::Iterator);
    }
    std::string filter = str_of(ca.args[0], "filter name");
    CallArgs rest;
    rest.args.assign(ca.args.begin() + 1, ca.args.end());
    rest.kwargs = ca.kwargs;
    for (const Value& item : iterate(in)) {
      CallArgs copy = rest;
      out.push_back(to_json(apply_filter(filter, item, copy)));
    }
    return make_seq(std::move(out), Value::Seq::Iterator);
  }

  static Value to_number(const std::string& name, const Value& in, CallArgs& ca) {
    Args a(ca, name, name == "int" ? std::vector<std::string>{"default", "base"} : std::vector<std::string>{"default"});
    Value def = a.get(0, name == "int" ? make(0) : make(0.0));
    require_data(in);  // int(Undefined) raises in Jinja
    const Json& j = in.json();
    double d = 0;
    if (j.is_number() || j.is_boolean()) {
      if (name == "int" && (j.is_number_integer() || j.is_boolean())) return make(int_of(in, "value"));
      d = j.is_number_float() ? j.get<double>() : static_cast<double>(int_of(in, "value"));
    } else if (j.is_string()) {
      std::string s = strip(j.get<std::string>(), make(nullptr), true, true);
      try {
        size_t used = 0;
        if (name == "int") {
          int64_t base = a.get(1) ? int_of(*a.get(1), "base") : 10;
          int64_t v = std::stoll(s, &used, static_cast<int>(base));
          if (used == s.size()) return make(v);
        }
        d = std::stod(s, &used);
        if (used != s.size()) return def;
      } catch (const std::exception&) {
        return def;
      }
    } else {
      return def;
    }
    if (name == "float") return make(d);
    if (!std::isfinite(d) || d >= 9.2e18 || d <= -9.2e18) return def;
    return make(static_cast<int64_t>(d));
  }

  // ---- globals ----

  void add_globals() {
    auto set = [&](const std::string& name, std::function<Value(CallArgs&)> fn) {
      if (!globals_.vars.count(name)) globals_.vars[name] = callable(name, std::move(fn));
    };
    set("raise_exception", [](CallArgs& ca) -> Value {
      Args a(ca, "raise_exception", {"message"});
      throw TemplateException(to_str(a.need(0)));
    });
    set("strftime_now", [](CallArgs& ca) {
      Args a(ca, "strftime_now", {"format"});
      std::string fmt = str_of(a.need(0), "strftime_now format");
      std::time_t now = std::time(nullptr);
      std::tm tm{};
      localtime_r(&now, &tm);
      char buf[512];
      size_t n = fmt.empty() ? 0 : std::strftime(buf, sizeof buf, fmt.c_str(), &tm);
      if (n == 0 && !fmt.empty()) error("strftime_now: format produced no output");
      return make(std::string(buf, n));
    });
    set("range", [](CallArgs& ca) {
      if (!ca.kwargs.empty() || ca.args.empty() || ca.args.size() > 3) error("range() takes 1 to 3 arguments");
      int64_t start = 0, stop = 0, step = 1;
      if (ca.args.size() == 1) stop = int_of(ca.args[0], "range argument");
      else {
        start = int_of(ca.args[0], "range argument");
        stop = int_of(ca.args[1], "range argument");
        if (ca.args.size() == 3) step = int_of(ca.args[2], "range argument");
      }
      if (step == 0) error("range() arg 3 must not be zero");
      Json out = Json::array();
      for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
        if (out.size() >= 100000) error("range too big, maximum size for range is 100000");
        out.push_back(i);
      }
      return make(std::move(out));
    });
    auto mapping = [](CallArgs& ca, const char* fn) {
      if (ca.args.size() > 1) error(std::string(fn) + "() takes at most 1 positional argument");
      Json out = Json::object();
      if (!ca.args.empty()) {
        const Json& j = require_data(ca.args[0]).json();
        if (!j.is_object()) error(std::string(fn) + "() positional argument must be a mapping");
        out = j;
      }
      for (auto& [k, v] : ca.kwargs) out[k] = to_json(v);
      return out;
    };
    set("dict", [mapping](CallArgs& ca) { return make(mapping(ca, "dict")); });
    set("namespace", [](CallArgs& ca) {
      Value v;
      v.kind = Value::Kind::Namespace;
      v.ns = std::make_shared<Namespace>();
      if (ca.args.size() > 1) error("namespace() takes at most 1 positional argument");
      auto add = [&](const std::string& k, Value x) {
        if (!k.empty() && k[0] == '_') error("chat templates cannot store underscore-prefixed attributes on a namespace");
        for (auto& [name, old] : v.ns->attrs)
          if (name == k) {
            old = std::move(x);
            return;
          }
        v.ns->attrs.emplace_back(k, std::move(x));
      };
      if (!ca.args.empty()) {
        const Value& m = ca.args[0];
        if (!m.is_data() || !m.json().is_object()) error("namespace() positional argument must be a mapping");
        for (auto& [k, x] : m.json().items()) add(k, view(m, x));
      }
      for (auto& [k, x] : ca.kwargs) add(k, x);
      return v;
    });
    for (const char* name : {"lipsum", "cycler", "joiner"}) {
      std::string n = name;
      set(n, [n](CallArgs&) -> Value { error("unsupported construct: the global '" + n + "'"); });
    }
  }
};

}  // namespace

std::string render(const Body& program, const Json& context) { return Evaluator(program, context).run(); }

}  // namespace lw::chat::jinja
