// Jinja2's grammar (jinja2/parser.py), as a recursive descent parser over the lexer's tokens.
//   expression: condexpr = or ("if" or ["else" condexpr])*
//   or / and / not / compare (== != < <= > >= in, not in) / + - / ~ / * / // % / ** / unary - +
//   postfix: .name  .0  [subscript or slice]  (call)   then filters "| f(...)" and tests "is [not] t"
#include <algorithm>
#include <set>

#include "chat/jinja.h"

namespace lw::chat::jinja {
namespace {

// Tags this implementation knows but does not run: a template using one fails clearly.
const std::set<std::string> kUnsupportedTags = {"include", "import", "from", "extends", "block", "call",
                                                "filter", "with", "autoescape", "raw", "do", "trans"};

const std::set<std::string> kFilters = {
    "abs", "attr", "batch", "capitalize", "center", "count", "d", "default", "dictsort", "e", "escape",
    "filesizeformat", "first", "float", "forceescape", "format", "groupby", "indent", "int", "items", "join",
    "last", "length", "list", "lower", "map", "max", "min", "pprint", "random", "reject", "rejectattr", "replace",
    "reverse", "round", "safe", "select", "selectattr", "slice", "sort", "string", "striptags", "sum", "title",
    "tojson", "trim", "truncate", "unique", "upper", "urlencode", "urlize", "wordcount", "wordwrap", "xmlattr"};
const std::set<std::string> kTests = {
    "!=", "<", "<=", "==", ">", ">=", "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "escaped",
    "even", "false", "filter", "float", "ge", "greaterthan", "gt", "in", "integer", "iterable", "le", "lessthan",
    "lower", "lt", "mapping", "ne", "none", "number", "odd", "sameas", "sequence", "string", "test", "true",
    "undefined", "upper"};

// Nesting limits: expression trees and statement nesting deeper than this are refused, so that
// parsing, evaluating and freeing them cannot exhaust the stack.
constexpr int kMaxDepth = 256;

class Parser {
 public:
  explicit Parser(const std::vector<Token>& tokens) : t_(tokens) {}

  Body parse_template() {
    Body body = parse_body({});
    if (cur().type != Tok::Eof) fail("unexpected '{% " + peek(1).text + " %}'");
    return body;
  }

 private:
  const std::vector<Token>& t_;
  size_t i_ = 0;
  int macro_depth_ = 0, block_depth_ = 0;

  const Token& cur() const { return t_[i_]; }
  const Token& peek(size_t k) const { return t_[std::min(i_ + k, t_.size() - 1)]; }
  const Token& next() { return t_[i_ < t_.size() - 1 ? i_++ : i_]; }
  [[noreturn]] void fail(const std::string& what) const {
    error("syntax error at line " + std::to_string(cur().line) + ": " + what);
  }
  static std::string describe(const Token& t) {
    switch (t.type) {
      case Tok::Eof: return "end of template";
      case Tok::Text: return "text";
      case Tok::VarBegin: return "'{{'";
      case Tok::VarEnd: return "'}}'";
      case Tok::BlockBegin: return "'{%'";
      case Tok::BlockEnd: return "'%}'";
      case Tok::String: return "string literal";
      case Tok::Int: case Tok::Float: return "number " + t.text;
      default: return "'" + t.text + "'";
    }
  }
  bool is_op(const char* op) const { return cur().type == Tok::Op && cur().text == op; }
  bool is_name(const char* name) const { return cur().type == Tok::Name && cur().text == name; }
  bool skip_op(const char* op) {
    if (!is_op(op)) return false;
    next();
    return true;
  }
  bool skip_name(const char* name) {
    if (!is_name(name)) return false;
    next();
    return true;
  }
  void expect_op(const char* op) {
    if (!skip_op(op)) fail(std::string("expected '") + op + "', got " + describe(cur()));
  }
  std::string expect_name() {
    if (cur().type != Tok::Name) fail("expected a name, got " + describe(cur()));
    return next().text;
  }
  void expect(Tok type, const char* what) {
    if (cur().type != type) fail(std::string("expected ") + what + ", got " + describe(cur()));
    next();
  }
  ExprPtr node(Expr::Kind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }
  // Sets e's depth from its children's; refuses trees nested too deeply.
  ExprPtr sized(ExprPtr e) {
    int d = 0;
    for (auto& a : e->args) d = std::max(d, a ? a->depth : 0);
    for (auto& [k, a] : e->kwargs) d = std::max(d, a->depth);
    e->depth = d + 1;
    if (e->depth > kMaxDepth) fail("expression nested too deeply");
    return e;
  }
  struct Nesting {  // counts recursive descent into statements and sub-expressions
    explicit Nesting(Parser& p) : p_(p) {
      if (++p_.nesting_ > kMaxDepth) p_.fail("template nested too deeply");
    }
    ~Nesting() { --p_.nesting_; }
    Parser& p_;
  };
  int nesting_ = 0;

  // ---- statements ----

  // Parses nodes until a block tag whose name is in `ends` (left unconsumed, after "{%").
  Body parse_body(const std::set<std::string>& ends) {
    Body body;
    for (;;) {
      const Token& t = cur();
      if (t.type == Tok::Eof) {
        if (!ends.empty()) fail("unexpected end of template, expected '{% " + *ends.begin() + " %}'");
        return body;
      }
      if (t.type == Tok::Text) {
        Node n(Node::Kind::Text, cur().line);
        n.text = next().text;
        body.push_back(std::move(n));
      } else if (t.type == Tok::VarBegin) {
        next();
        Node n(Node::Kind::Output, cur().line);
        n.expr = parse_tuple(true);
        expect(Tok::VarEnd, "'}}'");
        body.push_back(std::move(n));
      } else {  // BlockBegin
        const Token& name = peek(1);
        if (name.type == Tok::Name && ends.count(name.text)) {
          next();
          return body;
        }
        next();
        body.push_back(parse_statement());
      }
    }
  }

  void end_tag() { expect(Tok::BlockEnd, "'%}'"); }
  void end_header() {  // a tag with a body may end in ':' (Python compatibility)
    skip_op(":");
    end_tag();
  }
  std::string dotted_name() {  // filter and test names may be dotted
    std::string name = expect_name();
    while (skip_op(".")) {
      name += '.';
      name += expect_name();
    }
    return name;
  }

  Node parse_statement() {
    Nesting guard(*this);
    if (cur().type != Tok::Name) fail("expected a tag name, got " + describe(cur()));
    std::string tag = cur().text;
    int line = cur().line;
    if (tag == "if") return parse_if();
    if (tag == "for") return parse_for();
    if (tag == "set") return parse_set();
    if (tag == "macro") return parse_macro();
    if (tag == "break" || tag == "continue") {
      if (block_depth_ == 0) fail("'" + tag + "' outside of a loop");
      next();
      end_tag();
      Node n(tag == "break" ? Node::Kind::Break : Node::Kind::Continue, line);
      return n;
    }
    if (tag == "generation") {  // transformers' AssistantTracker: renders its body unchanged
      next();
      end_header();
      Node n(Node::Kind::Scoped, cur().line);
      n.body = parse_body({"endgeneration"});
      next();
      end_tag();
      return n;
    }
    if (kUnsupportedTags.count(tag)) fail("unsupported construct: the '{% " + tag + " %}' tag");
    fail("unknown tag '" + tag + "'");
  }

  Node parse_if() {
    Node n(Node::Kind::If, cur().line);
    next();
    ExprPtr cond = parse_tuple(false);
    for (;;) {
      end_header();
      Body body = parse_body({"elif", "else", "endif"});
      n.branches.emplace_back(std::move(cond), std::move(body));
      std::string tag = next().text;
      if (tag == "elif") {
        cond = parse_tuple(false);
      } else if (tag == "else") {
        end_header();
        n.branches.emplace_back(nullptr, parse_body({"endif"}));
        next();
        end_tag();
        return n;
      } else {
        end_tag();
        return n;
      }
    }
  }

  std::vector<std::string> parse_targets() {
    std::vector<std::string> names;
    bool paren = skip_op("(");
    do {
      names.push_back(expect_name());
    } while (skip_op(",") && cur().type == Tok::Name);
    if (paren) expect_op(")");
    return names;
  }

  Node parse_for() {
    Node n(Node::Kind::For, cur().line);
    next();
    n.targets = parse_targets();
    if (!skip_name("in")) fail("expected 'in' in a for loop, got " + describe(cur()));
    n.expr = parse_tuple(false);
    if (skip_name("if")) n.filter = parse_expression();
    if (is_name("recursive")) fail("unsupported construct: recursive for loops");
    end_header();
    ++block_depth_;
    n.body = parse_body({"else", "endfor"});
    --block_depth_;
    if (next().text == "else") {
      end_header();
      n.else_body = parse_body({"endfor"});
      next();
    }
    end_tag();
    return n;
  }

  Node parse_set() {
    Node n(Node::Kind::Set, cur().line);
    next();
    std::string first = expect_name();
    if (skip_op(".")) {
      n.targets = {first};
      n.attr = expect_name();
    } else {
      n.targets = {first};
      while (skip_op(",")) n.targets.push_back(expect_name());
    }
    if (skip_op("=")) {
      n.expr = parse_tuple(true);
      end_tag();
      return n;
    }
    if (!n.attr.empty() || n.targets.size() != 1) fail("expected '=' in a set tag");
    if (is_op("|")) fail("unsupported construct: filtered block set");
    end_header();
    n.kind = Node::Kind::SetBlock;
    n.body = parse_body({"endset"});
    next();
    end_tag();
    return n;
  }

  Node parse_macro() {
    if (macro_depth_ > 0 || block_depth_ > 0) fail("unsupported construct: a macro defined inside a block");
    Node n(Node::Kind::Macro, cur().line);
    next();
    n.text = expect_name();
    expect_op("(");
    while (!skip_op(")")) {
      if (!n.params.empty()) expect_op(",");
      if (skip_op(")")) break;
      std::string p = expect_name();
      ExprPtr def;
      if (skip_op("=")) def = parse_expression();
      n.params.emplace_back(p, std::move(def));
    }
    end_header();
    ++macro_depth_;
    n.body = parse_body({"endmacro"});
    --macro_depth_;
    next();
    if (cur().type == Tok::Name) next();  // {% endmacro name %}
    end_tag();
    return n;
  }

  // ---- expressions ----

  // Jinja's parse_tuple: "a, b" without parentheses is a tuple.
  ExprPtr parse_tuple(bool with_condexpr) {
    int line = cur().line;
    ExprPtr first = with_condexpr ? parse_expression() : parse_or();
    if (!is_op(",")) return first;
    auto t = node(Expr::Kind::Tuple, line);
    t->args.push_back(std::move(first));
    while (skip_op(",")) {
      if (cur().type == Tok::VarEnd || cur().type == Tok::BlockEnd || is_op(")") || is_name("if")) break;
      t->args.push_back(with_condexpr ? parse_expression() : parse_or());
    }
    return sized(std::move(t));
  }

  ExprPtr parse_expression() {
    int line = cur().line;
    ExprPtr expr = parse_or();
    while (skip_name("if")) {
      auto c = node(Expr::Kind::Cond, line);
      c->args.push_back(parse_or());
      c->args.push_back(std::move(expr));
      c->args.push_back(skip_name("else") ? parse_expression() : nullptr);
      expr = sized(std::move(c));
    }
    return expr;
  }

  ExprPtr binary(Expr::Kind kind, ExprPtr a, ExprPtr b, const std::string& op = "") {
    auto e = node(kind, a->line);
    e->name = op;
    e->args.push_back(std::move(a));
    e->args.push_back(std::move(b));
    return sized(std::move(e));
  }

  ExprPtr parse_or() {
    ExprPtr e = parse_and();
    while (skip_name("or")) e = binary(Expr::Kind::Or, std::move(e), parse_and());
    return e;
  }
  ExprPtr parse_and() {
    ExprPtr e = parse_not();
    while (skip_name("and")) e = binary(Expr::Kind::And, std::move(e), parse_not());
    return e;
  }
  ExprPtr parse_not() {
    if (is_name("not")) {
      Nesting guard(*this);
      auto e = node(Expr::Kind::Not, next().line);
      e->args.push_back(parse_not());
      return sized(std::move(e));
    }
    return parse_compare();
  }
  ExprPtr parse_compare() {
    ExprPtr first = parse_math1();
    ExprPtr cmp;
    for (;;) {
      std::string op;
      if (cur().type == Tok::Op && (cur().text == "==" || cur().text == "!=" || cur().text == "<" ||
                                     cur().text == "<=" || cur().text == ">" || cur().text == ">=")) {
        op = next().text;
      } else if (skip_name("in")) {
        op = "in";
      } else if (is_name("not") && peek(1).type == Tok::Name && peek(1).text == "in") {
        next();
        next();
        op = "notin";
      } else {
        break;
      }
      if (!cmp) {
        cmp = node(Expr::Kind::Compare, first->line);
        cmp->args.push_back(std::move(first));
      }
      cmp->ops.push_back(op);
      cmp->args.push_back(parse_math1());
      cmp = sized(std::move(cmp));
    }
    return cmp ? std::move(cmp) : std::move(first);
  }
  ExprPtr parse_math1() {
    ExprPtr e = parse_concat();
    while (is_op("+") || is_op("-")) {
      std::string op = next().text;
      e = binary(Expr::Kind::Binary, std::move(e), parse_concat(), op);
    }
    return e;
  }
  ExprPtr parse_concat() {
    ExprPtr e = parse_math2();
    while (skip_op("~")) e = binary(Expr::Kind::Binary, std::move(e), parse_math2(), "~");
    return e;
  }
  ExprPtr parse_math2() {
    ExprPtr e = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      std::string op = next().text;
      e = binary(Expr::Kind::Binary, std::move(e), parse_pow(), op);
    }
    return e;
  }
  ExprPtr parse_pow() {
    ExprPtr e = parse_unary(true);
    while (skip_op("**")) e = binary(Expr::Kind::Binary, std::move(e), parse_unary(true), "**");
    return e;
  }
  ExprPtr parse_unary(bool with_filter) {
    Nesting guard(*this);
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      Expr::Kind kind = cur().text == "-" ? Expr::Kind::Neg : Expr::Kind::Pos;
      e = node(kind, next().line);
      e->args.push_back(parse_unary(false));
      e = sized(std::move(e));
    } else {
      e = parse_primary();
    }
    e = parse_postfix(std::move(e));
    if (with_filter) e = parse_filters(std::move(e));
    return e;
  }

  ExprPtr parse_primary() {
    const Token& t = cur();
    auto e = node(Expr::Kind::Const, t.line);
    switch (t.type) {
      case Tok::Name:
        if (t.text == "true" || t.text == "True") e->value = true;
        else if (t.text == "false" || t.text == "False") e->value = false;
        else if (t.text == "none" || t.text == "None") e->value = nullptr;
        else {
          e->kind = Expr::Kind::Name;
          e->name = t.text;
        }
        next();
        return e;
      case Tok::String: {
        std::string s;
        while (cur().type == Tok::String) s += next().text;  // adjacent literals concatenate
        e->value = s;
        return e;
      }
      case Tok::Int: e->value = next().int_value; return e;
      case Tok::Float: e->value = next().float_value; return e;
      case Tok::Op:
        if (skip_op("(")) {
          if (skip_op(")")) {
            e->kind = Expr::Kind::Tuple;
            return e;
          }
          ExprPtr inner = parse_tuple(true);
          expect_op(")");
          return inner;
        }
        if (skip_op("[")) {
          e->kind = Expr::Kind::List;
          while (!skip_op("]")) {
            if (!e->args.empty()) expect_op(",");
            if (skip_op("]")) break;
            e->args.push_back(parse_expression());
          }
          return sized(std::move(e));
        }
        if (skip_op("{")) {
          e->kind = Expr::Kind::Dict;
          while (!skip_op("}")) {
            if (!e->args.empty()) expect_op(",");
            if (skip_op("}")) break;
            e->args.push_back(parse_expression());
            expect_op(":");
            e->args.push_back(parse_expression());
          }
          return sized(std::move(e));
        }
        break;
      default: break;
    }
    fail("unexpected " + describe(t));
  }

  ExprPtr parse_postfix(ExprPtr e) {
    for (;;) {
      int line = cur().line;
      if (skip_op(".")) {
        if (cur().type == Tok::Name) {
          auto a = node(Expr::Kind::Attr, line);
          a->name = next().text;
          a->args.push_back(std::move(e));
          e = sized(std::move(a));
        } else if (cur().type == Tok::Int) {
          auto a = node(Expr::Kind::Item, line);
          a->args.push_back(std::move(e));
          auto k = node(Expr::Kind::Const, line);
          k->value = next().int_value;
          a->args.push_back(std::move(k));
          e = sized(std::move(a));
        } else {
          fail("expected a name or number after '.', got " + describe(cur()));
        }
      } else if (skip_op("[")) {
        e = parse_subscript(std::move(e), line);
      } else if (is_op("(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr target, int line) {
    // [index], a slice [start:stop:step], or a tuple index [a, b] / [] (which finds nothing).
    std::vector<ExprPtr> items;
    ExprPtr slice;
    while (!skip_op("]")) {
      if (!items.empty() || slice) expect_op(",");
      ExprPtr parts[3];
      bool is_slice = false;
      if (!is_op(":")) parts[0] = parse_expression();
      if (skip_op(":")) {
        is_slice = true;
        if (!is_op(":") && !is_op("]") && !is_op(",")) parts[1] = parse_expression();
        if (skip_op(":") && !is_op("]") && !is_op(",")) parts[2] = parse_expression();
      }
      if (!is_slice) {
        items.push_back(std::move(parts[0]));
        continue;
      }
      if (slice || !items.empty()) fail("unsupported construct: a slice inside a tuple subscript");
      slice = node(Expr::Kind::Slice, line);
      slice->args.push_back(std::move(target));
      for (auto& p : parts) slice->args.push_back(std::move(p));
      slice = sized(std::move(slice));
    }
    if (slice) {
      if (!items.empty()) fail("unsupported construct: a slice inside a tuple subscript");
      return slice;
    }
    auto e = node(Expr::Kind::Item, line);
    e->args.push_back(std::move(target));
    if (items.size() == 1) {
      e->args.push_back(std::move(items[0]));
    } else {
      auto key = node(Expr::Kind::Tuple, line);
      key->args = std::move(items);
      e->args.push_back(sized(std::move(key)));
    }
    return sized(std::move(e));
  }

  // "(" args ")" into e->args (after whatever is already there) and e->kwargs.
  void parse_args(Expr& e) {
    expect_op("(");
    bool first = true;
    while (!skip_op(")")) {
      if (!first) expect_op(",");
      first = false;
      if (skip_op(")")) break;
      if (is_op("*") || is_op("**")) fail("unsupported construct: *args / **kwargs in a call");
      if (cur().type == Tok::Name && peek(1).type == Tok::Op && peek(1).text == "=") {
        std::string key = next().text;
        next();
        e.kwargs.emplace_back(key, parse_expression());
      } else {
        if (!e.kwargs.empty()) fail("positional argument after a keyword argument");
        e.args.push_back(parse_expression());
      }
    }
  }

  ExprPtr parse_call(ExprPtr callee) {
    auto e = node(Expr::Kind::Call, callee->line);
    e->args.push_back(std::move(callee));
    parse_args(*e);
    return sized(std::move(e));
  }

  ExprPtr parse_filters(ExprPtr e) {
    for (;;) {
      int line = cur().line;
      if (skip_op("|")) {
        auto f = node(Expr::Kind::Filter, line);
        f->name = dotted_name();
        f->args.push_back(std::move(e));
        if (is_op("(")) parse_args(*f);
        e = sized(std::move(f));
      } else if (skip_name("is")) {
        auto t = node(Expr::Kind::Test, line);
        t->negated = skip_name("not");
        t->name = dotted_name();
        t->args.push_back(std::move(e));
        const Token& c = cur();
        if (is_op("(")) {
          parse_args(*t);
        } else if ((c.type == Tok::Name && c.text != "else" && c.text != "or" && c.text != "and") ||
                   c.type == Tok::String || c.type == Tok::Int || c.type == Tok::Float || is_op("[") || is_op("{")) {
          if (is_name("is")) fail("cannot chain tests with 'is'");
          t->args.push_back(parse_postfix(parse_primary()));  // "x is equalto 3"
        }
        e = sized(std::move(t));
      } else if (is_op("(")) {
        e = parse_call(std::move(e));
      } else {
        return e;
      }
    }
  }
};

// Jinja checks filter and test names when it compiles a template, except in "soft" frames (an if's
// tests and bodies, an inline if-expression), where an unknown name fails only if it runs. A for
// loop's body and condition and a macro's body are not soft. (Whether this implementation supports
// a name Jinja knows is found out when it runs.)
void check_names(const Expr* e, bool soft) {
  if (!e) return;
  if (e->kind == Expr::Kind::Cond) soft = true;
  if (!soft && e->kind == Expr::Kind::Filter && !kFilters.count(e->name))
    error("syntax error at line " + std::to_string(e->line) + ": no filter named '" + e->name + "'");
  if (!soft && e->kind == Expr::Kind::Test && !kTests.count(e->name))
    error("syntax error at line " + std::to_string(e->line) + ": no test named '" + e->name + "'");
  for (auto& a : e->args) check_names(a.get(), soft);
  for (auto& [k, a] : e->kwargs) check_names(a.get(), soft);
}

void check_names(const Body& body, bool soft) {
  for (const Node& n : body) {
    check_names(n.expr.get(), soft);
    switch (n.kind) {
      case Node::Kind::If:
        for (auto& [cond, branch] : n.branches) {
          check_names(cond.get(), true);
          check_names(branch, true);
        }
        break;
      case Node::Kind::For:
        check_names(n.filter.get(), false);
        check_names(n.body, false);
        check_names(n.else_body, false);
        break;
      case Node::Kind::Macro:
        for (auto& [name, def] : n.params) check_names(def.get(), false);
        check_names(n.body, false);
        break;
      case Node::Kind::SetBlock:
      case Node::Kind::Scoped: check_names(n.body, false); break;
      default: break;
    }
  }
}

}  // namespace

bool jinja_has_filter(const std::string& name) { return kFilters.count(name) > 0; }
bool jinja_has_test(const std::string& name) { return kTests.count(name) > 0; }

Body parse(const std::vector<Token>& tokens) {
  Body program = Parser(tokens).parse_template();
  check_names(program, false);
  return program;
}

}  // namespace lw::chat::jinja
