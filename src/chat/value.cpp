// Values with Python's semantics: str(), repr(), ==, <, in, arithmetic, len(), iteration and
// json.dumps, over JSON data (null, bool, int, float, str, list, dict).
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "chat/jinja.h"
#include "common/error.h"

namespace lw::chat::jinja {

void error(const std::string& message) { throw lw::Error(message); }

Value make(Json j) {
  Value v;
  v.kind = Value::Kind::Data;
  v.data = std::make_shared<const Json>(std::move(j));
  return v;
}
Value make_seq(Json array, Value::Seq seq, bool tuple_items) {
  Value v = make(std::move(array));
  v.seq = seq;
  v.tuple_items = tuple_items;
  if (seq == Value::Seq::Iterator) v.consumed = std::make_shared<bool>(false);
  return v;
}
Value view(const Value& owner, const Json& part) {
  Value v;
  v.kind = Value::Kind::Data;
  v.data = std::shared_ptr<const Json>(owner.data, &part);
  return v;
}
Value undefined(std::string hint) {
  Value v;
  v.hint = std::move(hint);
  return v;
}
Value callable(std::string name, std::function<Value(CallArgs&)> fn) {
  Value v;
  v.kind = Value::Kind::Callable;
  v.fn = std::make_shared<const Callable>(Callable{std::move(name), std::move(fn)});
  return v;
}

const Value& require_data(const Value& v) {
  if (v.kind == Value::Kind::Undefined) error(v.hint.empty() ? "value is undefined" : v.hint);
  if (v.kind != Value::Kind::Data) error("unsupported construct: a " + type_name(v) + " used as a value");
  return v;
}
const Value& require_plain(const Value& v) {
  if (require_data(v).is_lazy()) error("unsupported construct: a " + type_name(v) + " used as a value (add | list)");
  return v;
}

// ---- UTF-8 --------------------------------------------------------------------------------

std::u32string utf32(const std::string& s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + static_cast<size_t>(n) > s.size()) error("invalid UTF-8 in a string");
    char32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
    for (int k = 1; k < n; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + static_cast<size_t>(k)]);
      if ((cc >> 6) != 2) error("invalid UTF-8 in a string");
      cp = (cp << 6) | (cc & 0x3F);
    }
    out += cp;
    i += static_cast<size_t>(n);
  }
  return out;
}

std::string utf8(const std::u32string& s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) {
    if (c < 0x80) {
      out += static_cast<char>(c);
    } else if (c < 0x800) {
      out += static_cast<char>(0xC0 | (c >> 6));
      out += static_cast<char>(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
      out += static_cast<char>(0xE0 | (c >> 12));
      out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (c & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (c >> 18));
      out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (c & 0x3F));
    }
  }
  return out;
}

bool is_space(char32_t c) {  // Python's str.isspace()
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

std::string strip(const std::string& s, const Value& chars, bool left, bool right) {
  std::u32string u = utf32(s);
  std::u32string set;
  bool whitespace = chars.is_data() && chars.json().is_null();
  if (!whitespace) {
    if (!chars.is_data() || !chars.json().is_string()) error("strip arg must be None or str");
    set = utf32(chars.json().get<std::string>());
  }
  auto drop = [&](char32_t c) { return whitespace ? is_space(c) : set.find(c) != std::u32string::npos; };
  size_t b = 0, e = u.size();
  if (left)
    while (b < e && drop(u[b])) ++b;
  if (right)
    while (e > b && drop(u[e - 1])) --e;
  return utf8(u.substr(b, e - b));
}

// ---- type, truth, str, repr -----------------------------------------------------------------

static std::string json_type_name(const Json& j) {
  switch (j.type()) {
    case Json::value_t::null: return "NoneType";
    case Json::value_t::boolean: return "bool";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned: return "int";
    case Json::value_t::number_float: return "float";
    case Json::value_t::string: return "str";
    case Json::value_t::array: return "list";
    case Json::value_t::object: return "dict";
    default: return "object";
  }
}

std::string type_name(const Value& v) {
  switch (v.kind) {
    case Value::Kind::Undefined: return "Undefined";
    case Value::Kind::Namespace: return "Namespace";
    case Value::Kind::Callable: return "function";
    case Value::Kind::Data:
      if (v.seq == Value::Seq::Tuple) return "tuple";
      if (v.seq == Value::Seq::Iterator) return "generator";
      if (v.seq == Value::Seq::View) return "dict view";
      return json_type_name(v.json());
  }
  return "object";
}

bool truthy(const Value& v) {
  if (v.kind == Value::Kind::Undefined) return false;
  if (v.kind != Value::Kind::Data || v.seq == Value::Seq::Iterator) return true;
  const Json& j = v.json();
  switch (j.type()) {
    case Json::value_t::null: return false;
    case Json::value_t::boolean: return j.get<bool>();
    case Json::value_t::number_integer: return j.get<int64_t>() != 0;
    case Json::value_t::number_unsigned: return j.get<uint64_t>() != 0;
    case Json::value_t::number_float: return j.get<double>() != 0.0;
    case Json::value_t::string: return !j.get_ref<const std::string&>().empty();
    default: return !j.empty();
  }
}

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);  // shortest
  std::string sci(buf, res.ptr);
  bool neg = sci[0] == '-';
  if (neg) sci.erase(0, 1);
  size_t epos = sci.find('e');
  int exp = std::stoi(sci.substr(epos + 1));
  std::string digits = sci.substr(0, epos);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  std::string out;
  if (exp >= -4 && exp < 16) {  // Python's repr: fixed notation in this range
    if (exp < 0) {
      out = "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
    } else if (static_cast<size_t>(exp) + 1 >= digits.size()) {
      out = digits + std::string(static_cast<size_t>(exp) + 1 - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, static_cast<size_t>(exp) + 1) + "." + digits.substr(static_cast<size_t>(exp) + 1);
    }
  } else {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char e[16];
    std::snprintf(e, sizeof e, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    out += e;
  }
  return neg ? "-" + out : out;
}

static bool printable(char32_t c) {  // an approximation of Python's str.isprintable()
  if (c < 0x20 || (c >= 0x7F && c <= 0xA0) || c == 0xAD) return false;
  if ((c >= 0x2000 && c <= 0x200F) || (c >= 0x2028 && c <= 0x202F) || (c >= 0x205F && c <= 0x206F)) return false;
  if (c == 0x1680 || c == 0x3000 || c == 0xFEFF || (c >= 0xD800 && c <= 0xF8FF) || (c >= 0xFFF0 && c <= 0xFFFF))
    return false;
  return c <= 0x10FFFF;
}

static std::string repr_str(const std::string& s) {
  bool has_single = s.find('\'') != std::string::npos, has_double = s.find('"') != std::string::npos;
  char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (char32_t c : utf32(s)) {
    if (c == static_cast<char32_t>(quote) || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (!printable(c)) {
      char buf[16];
      if (c < 0x100) std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned>(c));
      else if (c < 0x10000) std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
      else std::snprintf(buf, sizeof buf, "\\U%08x", static_cast<unsigned>(c));
      out += buf;
    } else {
      out += utf8(std::u32string(1, c));
    }
  }
  return out + quote;
}

std::string repr(const Json& j, bool tuple, bool tuple_items) {
  switch (j.type()) {
    case Json::value_t::null: return "None";
    case Json::value_t::boolean: return j.get<bool>() ? "True" : "False";
    case Json::value_t::number_integer: return std::to_string(j.get<int64_t>());
    case Json::value_t::number_unsigned: return std::to_string(j.get<uint64_t>());
    case Json::value_t::number_float: return float_repr(j.get<double>());
    case Json::value_t::string: return repr_str(j.get_ref<const std::string&>());
    case Json::value_t::array: {
      std::string out = tuple ? "(" : "[";
      for (size_t i = 0; i < j.size(); ++i) out += (i ? ", " : "") + repr(j[i], tuple_items);
      return out + (!tuple ? "]" : j.size() == 1 ? ",)" : ")");
    }
    case Json::value_t::object: {
      std::string out = "{";
      bool first = true;
      for (auto& [k, v] : j.items()) {
        out += (first ? "" : ", ") + repr_str(k) + ": " + repr(v);
        first = false;
      }
      return out + "}";
    }
    default: error("unsupported value type");
  }
}

std::string to_str(const Value& v) {
  if (v.kind == Value::Kind::Undefined) return "";
  if (v.kind != Value::Kind::Data || v.is_lazy())
    error("unsupported construct: printing a " + type_name(v) + " (Jinja prints its Python repr)");
  const Json& j = v.json();
  return j.is_string() ? j.get<std::string>() : repr(j, v.seq == Value::Seq::Tuple, v.tuple_items);
}

// ---- comparison -----------------------------------------------------------------------------

static bool is_number(const Json& j) { return j.is_number() || j.is_boolean(); }
static bool is_int(const Json& j) { return j.is_number_integer() || j.is_boolean(); }
static int64_t as_int(const Json& j) {
  if (j.is_boolean()) return j.get<bool>() ? 1 : 0;
  if (j.is_number_unsigned()) {
    uint64_t u = j.get<uint64_t>();
    if (u > static_cast<uint64_t>(INT64_MAX)) error("integer too large");
    return static_cast<int64_t>(u);
  }
  return j.get<int64_t>();
}
static double as_float(const Json& j) { return is_int(j) ? static_cast<double>(as_int(j)) : j.get<double>(); }

static bool json_equals(const Json& a, const Json& b) {
  if (is_number(a) && is_number(b)) {
    if (is_int(a) && is_int(b)) return as_int(a) == as_int(b);
    return as_float(a) == as_float(b);
  }
  if (a.type() != b.type()) return false;
  if (a.is_array()) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i)
      if (!json_equals(a[i], b[i])) return false;
    return true;
  }
  if (a.is_object()) {  // Python dicts compare without regard to order
    if (a.size() != b.size()) return false;
    for (auto& [k, v] : a.items()) {
      auto it = b.find(k);
      if (it == b.end() || !json_equals(v, *it)) return false;
    }
    return true;
  }
  return a == b;
}

bool equals(const Value& a, const Value& b) {
  if ((a.is_data() && a.is_lazy()) || (b.is_data() && b.is_lazy()))
    error("unsupported construct: comparing a " + type_name(a.is_lazy() ? a : b));
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Value::Kind::Undefined: return true;
    case Value::Kind::Namespace: return a.ns == b.ns;
    case Value::Kind::Callable: return a.fn == b.fn;
    case Value::Kind::Data: return json_equals(a.json(), b.json());
  }
  return false;
}

static bool json_less(const Json& a, const Json& b, const std::string& ta, const std::string& tb) {
  if (is_number(a) && is_number(b)) {
    if (is_int(a) && is_int(b)) return as_int(a) < as_int(b);
    return as_float(a) < as_float(b);
  }
  if (a.is_string() && b.is_string()) return a.get_ref<const std::string&>() < b.get_ref<const std::string&>();
  if (a.is_array() && b.is_array()) {
    for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
      if (!json_equals(a[i], b[i])) return json_less(a[i], b[i], json_type_name(a[i]), json_type_name(b[i]));
    }
    return a.size() < b.size();
  }
  error("'<' not supported between instances of '" + ta + "' and '" + tb + "'");
}

bool less(const Value& a, const Value& b) {
  return json_less(require_plain(a).json(), require_plain(b).json(), type_name(a), type_name(b));
}

bool contains(const Value& haystack, const Value& needle) {
  if (haystack.is_undefined()) return false;
  const Json& h = require_data(haystack).json();
  if (h.is_string()) {
    const Json& n = require_data(needle).json();
    if (!n.is_string()) error("'in <string>' requires string as left operand, not " + type_name(needle));
    return h.get_ref<const std::string&>().find(n.get_ref<const std::string&>()) != std::string::npos;
  }
  if (h.is_array()) {
    for (const Value& item : iterate(haystack))  // consumes an iterator, as Python does
      if (equals(item, needle)) return true;
    return false;
  }
  if (h.is_object()) {
    if (needle.is_data() && (needle.json().is_array() || needle.json().is_object()) && needle.seq != Value::Seq::Tuple)
      error("unhashable type: '" + type_name(needle) + "'");
    if (!needle.is_data() || !needle.json().is_string()) return false;
    return h.contains(needle.json().get<std::string>());
  }
  error("argument of type '" + type_name(haystack) + "' is not iterable");
}

// ---- arithmetic -----------------------------------------------------------------------------

static Value checked(bool (*op)(int64_t, int64_t, int64_t*), int64_t x, int64_t y) {
  int64_t r = 0;
  if (op(x, y, &r)) error("integer overflow");
  return make(r);
}
static bool add(int64_t x, int64_t y, int64_t* r) { return __builtin_add_overflow(x, y, r); }
static bool sub(int64_t x, int64_t y, int64_t* r) { return __builtin_sub_overflow(x, y, r); }
static bool mul(int64_t x, int64_t y, int64_t* r) { return __builtin_mul_overflow(x, y, r); }

// CPython's float_divmod: floor division and modulo with Python's signs and rounding.
static std::pair<double, double> py_divmod(double vx, double wx) {
  double mod = std::fmod(vx, wx);
  double div = (vx - mod) / wx;
  if (mod != 0) {
    if ((wx < 0) != (mod < 0)) {
      mod += wx;
      div -= 1.0;
    }
  } else {
    mod = std::copysign(0.0, wx);
  }
  double floordiv;
  if (div != 0) {
    floordiv = std::floor(div);
    if (div - floordiv > 0.5) floordiv += 1.0;
  } else {
    floordiv = std::copysign(0.0, vx / wx);
  }
  return {floordiv, mod};
}

Value arithmetic(const std::string& op, const Value& av, const Value& bv) {
  if (op == "~") return make(to_str(av) + to_str(bv));
  if (av.markup || bv.markup) error("unsupported construct: arithmetic on a |safe (Markup) value");
  if (op == "%" && av.is_data() && av.json().is_string()) error("unsupported construct: '%' string formatting");
  const Json& a = require_data(av).json();
  const Json& b = require_data(bv).json();
  if (av.is_lazy() || bv.is_lazy())
    error("unsupported operand type(s) for " + op + ": '" + type_name(av) + "' and '" + type_name(bv) + "'");
  auto type_error = [&]() -> Value {
    error("unsupported operand type(s) for " + op + ": '" + type_name(av) + "' and '" + type_name(bv) + "'");
  };
  if (is_number(a) && is_number(b)) {
    if (is_int(a) && is_int(b) && op != "/") {
      int64_t x = as_int(a), y = as_int(b);
      if (op == "+") return checked(add, x, y);
      if (op == "-") return checked(sub, x, y);
      if (op == "*") return checked(mul, x, y);
      if (op == "//" || op == "%") {
        if (y == 0) error("integer division or modulo by zero");
        if (x == INT64_MIN && y == -1) error("integer overflow");
        int64_t q = x / y, m = x % y;
        if (m != 0 && ((m < 0) != (y < 0))) {
          --q;
          m += y;
        }
        return make(op == "//" ? q : m);
      }
      if (op == "**") {
        if (y < 0) return make(std::pow(static_cast<double>(x), static_cast<double>(y)));
        int64_t p = 1, base = x;
        for (int64_t e = y; e > 0; e >>= 1) {  // square and multiply
          if (e & 1) p = checked(mul, p, base).json().get<int64_t>();
          if (e > 1) base = checked(mul, base, base).json().get<int64_t>();
        }
        return make(p);
      }
    }
    double x = as_float(a), y = as_float(b);
    if (op == "+") return make(x + y);
    if (op == "-") return make(x - y);
    if (op == "*") return make(x * y);
    if (op == "/" || op == "//" || op == "%") {
      if (y == 0) error("division by zero");
      if (op == "/") return make(x / y);
      auto [div, mod] = py_divmod(x, y);
      return make(op == "//" ? div : mod);
    }
    if (op == "**") return make(std::pow(x, y));
    return type_error();
  }
  if (op == "+" && a.is_string() && b.is_string()) return make(a.get<std::string>() + b.get<std::string>());
  if (op == "+" && a.is_array() && b.is_array()) {
    Json r = a;
    for (const Json& x : b) r.push_back(x);
    return make(std::move(r));
  }
  if (op == "*" && ((is_int(a) && (b.is_string() || b.is_array())) || (is_int(b) && (a.is_string() || a.is_array())))) {
    const Json& seq = is_int(a) ? b : a;
    int64_t n = is_int(a) ? as_int(a) : as_int(b);
    Json r = seq.is_string() ? Json("") : Json::array();
    for (int64_t k = 0; k < n; ++k) {
      if (seq.is_string()) r.get_ref<std::string&>() += seq.get_ref<const std::string&>();
      else
        for (const Json& x : seq) r.push_back(x);
    }
    return make(std::move(r));
  }
  return type_error();
}

Value negate(const Value& v) {
  const Json& j = require_data(v).json();
  if (is_int(j)) {
    int64_t x = as_int(j);
    if (x == INT64_MIN) error("integer overflow");
    return make(-x);
  }
  if (j.is_number_float()) return make(-j.get<double>());
  error("bad operand type for unary -: '" + type_name(v) + "'");
}

// ---- length and iteration -------------------------------------------------------------------

int64_t length(const Value& v) {
  if (v.is_undefined()) return 0;
  const Json& j = require_data(v).json();
  if (v.seq == Value::Seq::Iterator) error("object of type 'generator' has no len()");
  if (j.is_string()) return static_cast<int64_t>(utf32(j.get_ref<const std::string&>()).size());
  if (j.is_array() || j.is_object()) return static_cast<int64_t>(j.size());
  error("object of type '" + type_name(v) + "' has no len()");
}

std::vector<Value> iterate(const Value& v) {
  std::vector<Value> out;
  if (v.is_undefined()) return out;
  const Json& j = require_data(v).json();
  if (j.is_array()) {
    if (v.consumed) {  // Python iterators run once
      if (*v.consumed) error("unsupported construct: iterating a generator twice (add | list)");
      *v.consumed = true;
    }
    for (const Json& x : j) {
      out.push_back(view(v, x));
      if (v.tuple_items) out.back().seq = Value::Seq::Tuple;
    }
  } else if (j.is_object()) {
    for (auto& [k, x] : j.items()) out.push_back(make(k));
  } else if (j.is_string()) {
    for (char32_t c : utf32(j.get_ref<const std::string&>())) out.push_back(make(utf8(std::u32string(1, c))));
  } else {
    error("'" + type_name(v) + "' object is not iterable");
  }
  return out;
}

// ---- json.dumps -----------------------------------------------------------------------------

static void dump_string(std::string& out, const std::string& s, bool ensure_ascii) {
  out += '"';
  for (char32_t c : utf32(s)) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default: {
        char buf[16];
        if (c < 0x20 || (ensure_ascii && c >= 0x7F)) {
          if (c >= 0x10000) {
            unsigned v = static_cast<unsigned>(c) - 0x10000;
            std::snprintf(buf, sizeof buf, "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
          } else {
            std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
          }
          out += buf;
        } else {
          out += utf8(std::u32string(1, c));
        }
      }
    }
  }
  out += '"';
}

static void dump(std::string& out, const Json& j, int indent, int level, bool ensure_ascii, bool sort_keys,
                 const std::string& item_sep, const std::string& key_sep) {
  auto newline = [&](int lvl) {
    if (indent < 0) return;
    out += '\n';
    out.append(static_cast<size_t>(indent * lvl), ' ');
  };
  switch (j.type()) {
    case Json::value_t::null: out += "null"; return;
    case Json::value_t::boolean: out += j.get<bool>() ? "true" : "false"; return;
    case Json::value_t::number_integer: out += std::to_string(j.get<int64_t>()); return;
    case Json::value_t::number_unsigned: out += std::to_string(j.get<uint64_t>()); return;
    case Json::value_t::number_float: {
      double d = j.get<double>();
      out += std::isnan(d) ? "NaN" : std::isinf(d) ? (d > 0 ? "Infinity" : "-Infinity") : float_repr(d);
      return;
    }
    case Json::value_t::string: dump_string(out, j.get_ref<const std::string&>(), ensure_ascii); return;
    case Json::value_t::array:
      if (j.empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t i = 0; i < j.size(); ++i) {
        if (i) out += item_sep;
        newline(level + 1);
        dump(out, j[i], indent, level + 1, ensure_ascii, sort_keys, item_sep, key_sep);
      }
      newline(level);
      out += ']';
      return;
    case Json::value_t::object: {
      if (j.empty()) {
        out += "{}";
        return;
      }
      std::vector<std::pair<std::string, const Json*>> items;
      for (auto& [k, v] : j.items()) items.emplace_back(k, &v);
      if (sort_keys) std::stable_sort(items.begin(), items.end(), [](auto& x, auto& y) { return x.first < y.first; });
      out += '{';
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += item_sep;
        newline(level + 1);
        dump_string(out, items[i].first, ensure_ascii);
        out += key_sep;
        dump(out, *items[i].second, indent, level + 1, ensure_ascii, sort_keys, item_sep, key_sep);
      }
      newline(level);
      out += '}';
      return;
    }
    default: error("unsupported value type");
  }
}

std::string dump_json(const Json& j, int indent, bool ensure_ascii, bool sort_keys, const std::string& item_sep,
                      const std::string& key_sep) {
  std::string out;
  dump(out, j, indent, 0, ensure_ascii, sort_keys, item_sep, key_sep);
  return out;
}

}  // namespace lw::chat::jinja
