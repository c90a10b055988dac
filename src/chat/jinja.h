// A small Jinja2 for chat templates: lexer -> parser (AST) -> evaluator over JSON values.
// It follows Jinja2 3.1 as transformers configures it (trim_blocks, lstrip_blocks, loop controls,
// raise_exception, strftime_now, namespace, dict, tojson = json.dumps) and Python's semantics for
// values. Anything it does not implement fails with an lw::Error naming the construct.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace lw::chat::jinja {

using Json = nlohmann::ordered_json;  // ordered: Python dicts keep insertion order

// ---- lexer ----------------------------------------------------------------------------------

enum class Tok { Text, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, String, Int, Float, Op, Eof };

struct Token {
  Tok type;
  std::string text;  // Text: the data; Name/Op: the name or operator; String: the decoded value
  int64_t int_value = 0;
  double float_value = 0;
  int line = 1;
};

std::vector<Token> lex(const std::string& source);

// ---- AST ------------------------------------------------------------------------------------

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;
using Kwargs = std::vector<std::pair<std::string, ExprPtr>>;

struct Expr {
  enum class Kind {
    Const,    // value
    Name,     // name
    List,     // args = items
    Tuple,    // args = items (a list at run time)
    Dict,     // args = key0, value0, key1, value1, ...
    Attr,     // args[0].name
    Item,     // args[0][args[1]]
    Slice,    // args[0][args[1]:args[2]:args[3]] (null entries = omitted)
    Call,     // args[0](args[1..], kwargs)
    Filter,   // args[0] | name(args[1..], kwargs)
    Test,     // args[0] is [not] name(args[1..], kwargs)
    Not,      // not args[0]
    Neg,      // -args[0]
    Pos,      // +args[0]
    Binary,   // args[0] name args[1], name in + - * / // % ** ~
    Compare,  // args[0] ops[0] args[1] ops[1] args[2] ... (chained)
    And,
    Or,
    Cond,     // args[1] if args[0] else args[2] (args[2] may be null)
  };
  Kind kind;
  int line = 0;
  Json value;                     // Const
  std::string name;               // Name, Attr, Filter, Test, Binary operator
  std::vector<ExprPtr> args;
  Kwargs kwargs;
  std::vector<std::string> ops;   // Compare: ==, !=, <, <=, >, >=, in, notin
  bool negated = false;           // Test: "is not"
  int depth = 1;                  // of this subtree (bounded, so that recursion stays shallow)
};

struct Node;
using Body = std::vector<Node>;

struct Node {
  enum class Kind { Text, Output, If, For, Set, SetBlock, Macro, Break, Continue, Scoped };
  Node(Kind k, int l) : kind(k), line(l) {}
  Kind kind;
  int line = 0;
  std::string text;                        // Text: data; Macro: name
  ExprPtr expr;                            // Output, Set value, For iterable
  std::vector<std::string> targets;        // For/Set names (several = tuple unpacking)
  std::string attr;                        // Set: "targets[0].attr = ..." on a namespace
  ExprPtr filter;                          // For: "for x in xs if filter"
  std::vector<std::pair<ExprPtr, Body>> branches;  // If: (condition, body); else has no condition
  Body body, else_body;                    // For, SetBlock, Macro, Scoped (generation)
  std::vector<std::pair<std::string, ExprPtr>> params;  // Macro parameters and defaults
};

Body parse(const std::vector<Token>& tokens);
bool jinja_has_filter(const std::string& name);  // one of Jinja's built-in filters
bool jinja_has_test(const std::string& name);

// ---- values ---------------------------------------------------------------------------------

struct Namespace;
struct Callable;

// A Jinja value: Undefined, JSON data (shared, so views into a big context copy nothing), a
// namespace() object, or something callable (a global, a macro, a bound method).
struct Value {
  enum class Kind { Undefined, Data, Namespace, Callable };
  Kind kind = Kind::Undefined;
  std::shared_ptr<const Json> data;
  std::shared_ptr<Namespace> ns;
  std::shared_ptr<const Callable> fn;
  std::string hint;  // Undefined: Jinja's message when it is used ("'x' is undefined")
  // Which Python sequence a JSON array stands for. Tuples print as tuples; iterators (what Jinja's
  // select, map, items and reverse filters return: always true, no len(), one pass, no
  // subscripts) and dict views (dict.items(), .keys(), .values(): no subscripts) behave as in Python.
  enum class Seq { List, Tuple, Iterator, View };
  Seq seq = Seq::List;
  bool tuple_items = false;         // its elements are tuples: (key, value) pairs
  std::shared_ptr<bool> consumed;   // Iterator: it has been iterated (Python's run once)
  bool markup = false;              // a string from |safe: Jinja's Markup, only printed or tested here

  bool is_lazy() const { return seq == Seq::Iterator || seq == Seq::View; }

  const Json& json() const { return *data; }
  bool is_data() const { return kind == Kind::Data; }
  bool is_undefined() const { return kind == Kind::Undefined; }
};

struct Namespace {
  std::vector<std::pair<std::string, Value>> attrs;
};
struct CallArgs {
  std::vector<Value> args;
  std::vector<std::pair<std::string, Value>> kwargs;
};
struct Callable {
  std::string name;
  std::function<Value(CallArgs&)> fn;
};

Value make(Json j);
Value make_seq(Json array, Value::Seq seq, bool tuple_items = false);
Value view(const Value& owner, const Json& part);  // a Value aliasing part of owner's data
Value undefined(std::string hint);
Value callable(std::string name, std::function<Value(CallArgs&)> fn);

// Python semantics (value.cpp). Errors throw lw::Error.
[[noreturn]] void error(const std::string& message);
std::string type_name(const Value& v);                 // Python's: str, int, dict, NoneType, ...
bool truthy(const Value& v);
std::string to_str(const Value& v);                    // str(v); Undefined -> ""
std::string repr(const Json& j, bool tuple = false, bool tuple_items = false);  // repr(v)
std::string float_repr(double d);                      // repr(float)
bool equals(const Value& a, const Value& b);           // ==
bool less(const Value& a, const Value& b);             // <, TypeError on mismatched types
bool contains(const Value& haystack, const Value& needle);  // needle in haystack
Value arithmetic(const std::string& op, const Value& a, const Value& b);
Value negate(const Value& v);
std::string dump_json(const Json& j, int indent, bool ensure_ascii, bool sort_keys,
                      const std::string& item_sep, const std::string& key_sep);
const Value& require_data(const Value& v);             // throws Jinja's UndefinedError
const Value& require_plain(const Value& v);            // data, and not an iterator or dict view

// UTF-8 text as Python sees it: code points.
std::u32string utf32(const std::string& s);
std::string utf8(const std::u32string& s);
bool is_space(char32_t c);
std::string strip(const std::string& s, const Value& chars, bool left, bool right);  // chars None: whitespace
int64_t length(const Value& v);                        // len(v)
std::vector<Value> iterate(const Value& v);            // iter(v): list items, dict keys, characters

// ---- evaluator ------------------------------------------------------------------------------

std::string render(const Body& program, const Json& context);

}  // namespace lw::chat::jinja
