// Unit tests of the Jinja implementation: expressions, filters, tests, loops, scoping and
// whitespace control (the "snippets" of goldens.json were rendered by transformers' own Jinja
// environment), then errors: syntax errors, unsupported constructs, undefined values, and the
// template's own raise_exception.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "chat/chat_template.h"

namespace {

using Json = nlohmann::ordered_json;
using lw::chat::render_chat_template;
using lw::chat::render_jinja;

std::string render(const std::string& source, const Json& vars = Json::object()) { return render_jinja(source, vars); }

// The message of the lw::Error that rendering throws ("" if it does not throw).
std::string error_of(const std::string& source, const Json& vars = Json::object()) {
  try {
    render_jinja(source, vars);
  } catch (const lw::Error& e) {
    return e.what();
  }
  return "";
}

const Json& snippets() {
  static const Json s = [] {
    std::ifstream f(std::string(LW_SOURCE_DIR) + "/tests/fixtures/chat_templates/goldens.json");
    std::stringstream ss;
    ss << f.rdbuf();
    return Json::parse(ss.str())["snippets"];
  }();
  return s;
}

class Snippet : public ::testing::TestWithParam<size_t> {};

TEST_P(Snippet, RendersLikeJinja) {
  const Json& c = snippets()[GetParam()];
  std::string source = c["template"].get<std::string>();
  SCOPED_TRACE(source);
  if (c.contains("output")) {
    std::string got;
    ASSERT_NO_THROW(got = render(source, c["variables"]));
    EXPECT_EQ(got, c["output"].get<std::string>());
  } else {
    EXPECT_THROW(render(source, c["variables"]), lw::Error);
  }
}

std::vector<size_t> all_snippets() {
  std::vector<size_t> v(snippets().size());
  for (size_t i = 0; i < v.size(); ++i) v[i] = i;
  return v;
}

INSTANTIATE_TEST_SUITE_P(Jinja, Snippet, ::testing::ValuesIn(all_snippets()),
                         [](const ::testing::TestParamInfo<size_t>& p) {
                           std::string name = snippets()[p.param]["name"].get<std::string>();
                           for (char& ch : name)
                             if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return name + "_" + std::to_string(p.param);
                         });

// ---- expressions and statements, spelled out ----

TEST(Expressions, ArithmeticAndPrecedence) {
  EXPECT_EQ(render("{{ 1 + 2 * 3 }}|{{ (1 + 2) * 3 }}|{{ 10 - 2 - 3 }}|{{ -7 // 2 }}|{{ -7 % 3 }}|{{ 7 / 2 }}"),
            "7|9|5|-4|2|3.5");
  EXPECT_EQ(render("{{ 'a' ~ 1 ~ none ~ true }}|{{ [1] + [2] }}|{{ 'ab' * 2 }}"), "a1NoneTrue|[1, 2]|abab");
  EXPECT_EQ(render("{{ x | length - 1 }}", {{"x", {1, 2, 3}}}), "2");
}

TEST(Expressions, ComparisonsAndLogic) {
  EXPECT_EQ(render("{{ 1 == 1.0 }}{{ 'a' != 'b' }}{{ 1 < 2 < 3 }}{{ 2 in [1, 2] }}{{ 'x' not in 'abc' }}"),
            "TrueTrueTrueTrueTrue");
  EXPECT_EQ(render("{{ 0 or 'x' }}|{{ '' and 'y' }}|{{ not none }}"), "x||True");
  // Python dict equality ignores order.
  EXPECT_EQ(render("{{ a == b }}", {{"a", {{"x", 1}, {"y", 2}}}, {"b", {{"y", 2}, {"x", 1}}}}), "True");
}

TEST(Expressions, SubscriptsAttributesAndSlices) {
  Json vars = {{"m", {{"role", "user"}, {"content", "héllo"}}}, {"l", {1, 2, 3}}};
  EXPECT_EQ(render("{{ m.role }}{{ m['role'] }}{{ l[-1] }}{{ l.0 }}[{{ m.nothing }}][{{ l[9] }}]", vars), "useruser31[][]");
  EXPECT_EQ(render("{{ l[::-1] }}{{ l[1:] }}{{ m.content[1:3] }}{{ m.content[::-1] }}", vars), "[3, 2, 1][2, 3]élolléh");
  EXPECT_EQ(render("{{ m.content | length }}", vars), "5");  // code points, not bytes
}

TEST(Statements, LoopVariablesAndControl) {
  EXPECT_EQ(render("{% for x in 'abc' %}{{ loop.index }}{{ loop.first }}{{ loop.last }}{{ loop.length }} {% endfor %}"),
            "1TrueFalse3 2FalseFalse3 3FalseTrue3 ");
  EXPECT_EQ(render("{% for x in [1,2,3,4,5] %}{% if x == 2 %}{% continue %}{% elif x == 4 %}{% break %}{% endif %}{{ x }}"
                   "{% else %}none{% endfor %}"),
            "13");
  EXPECT_EQ(render("{% for k, v in d.items() %}{{ k }}{{ v }}{% endfor %}", {{"d", {{"b", 1}, {"a", 2}}}}), "b1a2");
  EXPECT_EQ(render("{% for x in [1,2,3,4] if x > 2 %}{{ loop.index }}{{ x }}{% endfor %}"), "1324");
}

TEST(Statements, ScopingFollowsJinja) {
  // A loop body's assignments stay in that iteration; if bodies share their parent's scope.
  EXPECT_EQ(render("{% set a = 1 %}{% for i in [1, 2] %}{{ a }}{% set a = 5 %}{{ a }}{% endfor %}{{ a }}"), "15151");
  EXPECT_EQ(render("{% if true %}{% set b = 2 %}{% endif %}{{ b }}"), "2");
  // namespace() is how a loop changes something outside it.
  EXPECT_EQ(render("{% set ns = namespace(n=0) %}{% for i in [1, 2, 3] %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}"),
            "6");
  // Macros see the template's top-level variables, not the caller's loop variables.
  EXPECT_EQ(render("{% macro m() %}[{{ g }}{{ i }}]{% endmacro %}{% set g = 'G' %}{% for i in [1] %}{{ m() }}{% endfor %}"),
            "[G]");
}

TEST(Whitespace, TrimAndLstripBlocks) {
  // trim_blocks drops the newline after a block tag; lstrip_blocks the indentation before it.
  EXPECT_EQ(render("<\n  {% if true %}\n  x\n  {% endif %}\n>"), "<\n  x\n>");
  // Not for {{ }}: their surroundings stay.
  EXPECT_EQ(render("<\n  {{ 'x' }}\n>"), "<\n  x\n>");
  // "-" strips every whitespace character on its side, newlines included; "+" keeps.
  EXPECT_EQ(render("a \n {{- 'b' -}} \n c"), "abc");
  EXPECT_EQ(render("a\n  {%+ if true %}b{% endif %}"), "a\n  b");
  // One trailing newline of the template is dropped (keep_trailing_newline=False).
  EXPECT_EQ(render("x\n"), "x");
  EXPECT_EQ(render("x\n\n"), "x\n");
}

TEST(Filters, TojsonMatchesJsonDumps) {
  Json v = {{"b", {1, 2.5, nullptr, true}}, {"a", "é\"\n"}};
  EXPECT_EQ(render("{{ v | tojson }}", {{"v", v}}), "{\"b\": [1, 2.5, null, true], \"a\": \"é\\\"\\n\"}");
  EXPECT_EQ(render("{{ v | tojson(indent=2) }}", {{"v", {{"k", Json::array({1})}}}}), "{\n  \"k\": [\n    1\n  ]\n}");
  EXPECT_EQ(render("{{ 1.0 | tojson }} {{ 1e22 | tojson }}"), "1.0 1e+22");
}

TEST(Filters, Common) {
  EXPECT_EQ(render("{{ ' x ' | trim }}|{{ 'Ab' | upper }}{{ 'Ab' | lower }}|{{ missing | default('d') }}|{{ [1, 2] | join('-') }}"),
            "x|ABab|d|1-2");
  EXPECT_EQ(render("{{ ['a','b'] | first }}{{ ['a','b'] | last }}|{{ 'hi you' | title }}|{{ 'hI' | capitalize }}"), "ab|Hi You|Hi");
  EXPECT_EQ(render("{{ m | selectattr('role', 'equalto', 'user') | map(attribute='c') | list }}",
                   {{"m", {{{"role", "user"}, {"c", 1}}, {{"role", "bot"}, {"c", 2}}}}}),
            "[1]");
}

TEST(Filters, GeneratorsAndDictViewsBehaveAsInPython) {
  // select/reject/map/items/reverse return generators in Jinja: always true, even when empty...
  EXPECT_EQ(render("{% if l | selectattr('role', 'eq', 'x') %}true{% endif %}", {{"l", Json::array()}}), "true");
  EXPECT_EQ(render("{% if l | selectattr('role', 'eq', 'x') | list %}{% else %}false{% endif %}", {{"l", Json::array()}}),
            "false");
  // ...without len(), one pass only, and printing them is refused (Jinja prints a Python repr).
  EXPECT_NE(error_of("{{ [1] | select | length }}").find("has no len()"), std::string::npos);
  EXPECT_NE(error_of("{% set g = [1] | select %}{{ g | list }}{{ g | list }}").find("twice"), std::string::npos);
  EXPECT_NE(error_of("{{ [1] | select }}").find("printing a generator"), std::string::npos);
  // dict views: no subscripts, printing refused, but len() and membership work.
  EXPECT_EQ(render("[{{ d.items()[0] }}]{{ d.keys() | length }}{{ 'a' in d.keys() }}", {{"d", {{"a", 1}}}}), "[]1True");
}

// ---- render_chat_template: what apply_chat_template adds ----

TEST(ChatTemplate, DefinesToolsDocumentsAndGenerationPrompt) {
  EXPECT_EQ(render_chat_template("{{ tools is none }}{{ documents is none }}{{ add_generation_prompt }}",
                                 {{"messages", Json::array()}}),
            "TrueTrueFalse");
}

TEST(ChatTemplate, NormalisesMessages) {
  Json ctx = {{"messages", {{{"role", "assistant"}, {"content", nullptr}, {"thinking", "hmm"}}}}};
  // None-valued keys are dropped; reasoning is aliased to reasoning_content (and thinking).
  EXPECT_EQ(render_chat_template("{{ messages[0].content is defined }}|{{ messages[0].reasoning_content }}|"
                                 "{{ messages[0] | tojson }}",
                                 ctx),
            "False|hmm|{\"thinking\": \"hmm\", \"role\": \"assistant\", \"reasoning_content\": \"hmm\"}");
}

TEST(ChatTemplate, StrftimeNow) {
  std::string year = render("{{ strftime_now('%Y') }}");
  EXPECT_EQ(year.size(), 4u);
  EXPECT_EQ(year.substr(0, 1), "2");
}

// ---- errors ----

TEST(Errors, RaiseExceptionCarriesTheTemplatesMessage) {
  try {
    render("{% if true %}{{ raise_exception('Roles must alternate: ' ~ 3) }}{% endif %}");
    FAIL() << "no exception";
  } catch (const lw::chat::TemplateException& e) {
    EXPECT_STREQ(e.what(), "Roles must alternate: 3");
  }
  EXPECT_THROW(render("{{ raise_exception('x') }}"), lw::Error);  // TemplateException is an lw::Error
}

TEST(Errors, SyntaxErrorsNameTheLineAndProblem) {
  EXPECT_NE(error_of("{% if x %}a").find("expected '{% elif %}'"), std::string::npos) << error_of("{% if x %}a");
  EXPECT_NE(error_of("line1\n{{ 1 + }}").find("line 2"), std::string::npos) << error_of("line1\n{{ 1 + }}");
  EXPECT_NE(error_of("{{ 'abc }}").find("unterminated string"), std::string::npos);
  EXPECT_NE(error_of("{{ x").find("missing '}}'"), std::string::npos);
  EXPECT_NE(error_of("{% endfor %}").find("unknown tag 'endfor'"), std::string::npos);
  EXPECT_NE(error_of("{% frobnicate %}").find("unknown tag 'frobnicate'"), std::string::npos);
  EXPECT_NE(error_of("{# never closed").find("unclosed comment"), std::string::npos);
  EXPECT_NE(error_of("{{ a b }}").find("expected '}}'"), std::string::npos) << error_of("{{ a b }}");
  EXPECT_NE(error_of("{% break %}").find("outside of a loop"), std::string::npos);
  // Like Jinja, unknown filter and test names fail when the template is compiled...
  EXPECT_NE(error_of("{{ x | toon }}").find("syntax error at line 1: no filter named 'toon'"), std::string::npos);
  EXPECT_NE(error_of("{% if true %}{% for m in l %}{{ m is prime }}{% endfor %}{% endif %}").find("no test named 'prime'"),
            std::string::npos);
  // ...except in an if or an inline if, where they fail only if they run.
  EXPECT_EQ(render("{% if false %}{{ x | toon }}{% endif %}{{ 'a' if true else x is prime }}"), "a");
  EXPECT_NE(error_of("{% if true %}{{ x | toon }}{% endif %}").find("no filter named 'toon'"), std::string::npos);
  // Filters Jinja has but this does not are only an error when they run.
  EXPECT_EQ(render("{% if false %}{{ x | wordwrap }}{% endif %}ok"), "ok");
  for (const char* s : {"{% if x %}a", "{{ 1 + }}", "{{ a b }}"})
    EXPECT_EQ(error_of(s).rfind("chat template: syntax error at line", 0), 0u) << error_of(s);
}

TEST(Errors, UnsupportedConstructsAreNamed) {
  struct Case {
    const char* source;
    const char* names;
  };
  for (const Case& c : std::vector<Case>{
           {"{% include 'x.jinja' %}", "'{% include %}' tag"},
           {"{% extends 'base' %}", "'{% extends %}' tag"},
           {"{% raw %}{{ x }}{% endraw %}", "{% raw %} blocks"},
           {"{% filter upper %}x{% endfilter %}", "'{% filter %}' tag"},
           {"{{ 'x' | wordwrap(3) }}", "the filter 'wordwrap'"},
           {"{{ 'x' is escaped }}", "the test 'escaped'"},
           {"{{ 'a b'.format(1) }}", "the str method 'format'"},
           {"{{ [1].append(2) }}", "the list method 'append'"},
           {"{{ cycler(1, 2) }}", "the global 'cycler'"},
           {"{{ '%s' % 'x' }}", "'%' string formatting"},
           {"{{ 'é' | upper }}", "non-ASCII letter (U+00E9)"},
           {"{{ f(*args) }}", "*args / **kwargs"},
           {"{% for x in y recursive %}{% endfor %}", "recursive for loops"},
           {"{% for x in [1] %}{% macro m() %}{% endmacro %}{% endfor %}", "a macro defined inside a block"},
           {"{{ [1, nothing] }}", "an undefined value in a list, tuple or dict ('nothing' is undefined)"},
           {"{{ ('a' | safe) + 'b' }}", "arithmetic on a |safe (Markup) value"},
           {"{{ ('a,b' | safe).split(',') }}", "method 'split'"},
           {"{{ ('a' | safe) | upper }}", "the filter 'upper' on a |safe (Markup) value"},
       }) {
    std::string e = error_of(c.source);
    EXPECT_NE(e.find("unsupported construct"), std::string::npos) << c.source << " -> " << e;
    EXPECT_NE(e.find(c.names), std::string::npos) << c.source << " -> " << e;
  }
}

TEST(Errors, UndefinedValuesFailWhereJinjaFails) {
  // Printing, testing and iterating undefined values is fine...
  EXPECT_EQ(render("[{{ x }}]{{ x is defined }}{% for a in x %}a{% endfor %}{{ x | length }}{{ m.y is defined }}",
                   {{"m", Json::object()}}),
            "[]False0False");
  // ...using one as an object or in arithmetic is not.
  EXPECT_NE(error_of("{{ x.y }}").find("'x' is undefined"), std::string::npos) << error_of("{{ x.y }}");
  EXPECT_NE(error_of("{{ x + 1 }}").find("'x' is undefined"), std::string::npos);
  EXPECT_NE(error_of("{{ m.a.b }}", {{"m", Json::object()}}).find("'dict object' has no attribute 'a'"), std::string::npos);
  EXPECT_NE(error_of("{{ x | tojson }}").find("not JSON serializable"), std::string::npos);
  EXPECT_NE(error_of("{{ x() }}").find("'x' is undefined"), std::string::npos);
}

TEST(Errors, PythonTypeErrors) {
  EXPECT_NE(error_of("{{ 'a' + 1 }}").find("unsupported operand type(s) for +: 'str' and 'int'"), std::string::npos);
  EXPECT_NE(error_of("{{ 1 < 'a' }}").find("'<' not supported"), std::string::npos);
  EXPECT_NE(error_of("{{ 1 // 0 }}").find("division"), std::string::npos);
  EXPECT_NE(error_of("{{ true[::-1] }}").find("'bool' object is not subscriptable"), std::string::npos);
  EXPECT_NE(error_of("{{ d[1:] }}", {{"d", Json::object()}}).find("unhashable type: 'slice'"), std::string::npos);
  EXPECT_NE(error_of("{% for x in 3 %}{% endfor %}").find("'int' object is not iterable"), std::string::npos);
  EXPECT_NE(error_of("{% set d = {} %}{% set d.a = 1 %}").find("non-namespace"), std::string::npos);
  EXPECT_NE(error_of("{% set ns = namespace() %}{% set ns._x = 1 %}").find("underscore"), std::string::npos);
  EXPECT_NE(error_of("{{ 9223372036854775807 + 1 }}").find("integer overflow"), std::string::npos);
  // Runtime errors name the line too.
  EXPECT_EQ(error_of("a\nb\n{{ 'a' + 1 }}").rfind("chat template: line 3: ", 0), 0u) << error_of("a\nb\n{{ 'a' + 1 }}");
}

TEST(Errors, PathologicalNestingIsRefusedNotACrash) {
  EXPECT_NE(error_of("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}").find("nested too deeply"),
            std::string::npos);
  std::string chain = "{{ 1";
  for (int i = 0; i < 5000; ++i) chain += " + 1";
  EXPECT_NE(error_of(chain + " }}").find("nested too deeply"), std::string::npos);
  std::string ifs;
  for (int i = 0; i < 5000; ++i) ifs += "{% if true %}";
  EXPECT_NE(error_of(ifs).find("nested too deeply"), std::string::npos);
  EXPECT_NE(error_of("{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}").find("nested too deeply"),
            std::string::npos);
  // Long flat templates are fine.
  std::string flat;
  for (int i = 0; i < 5000; ++i) flat += "{{ 1 + 1 }}";
  EXPECT_EQ(render(flat).size(), 5000u);
}

TEST(Errors, BadInput) {
  EXPECT_THROW(render_chat_template("x", Json::array()), lw::Error);
  EXPECT_THROW(render_chat_template("x", {{"messages", "not a list"}}), lw::Error);
  EXPECT_THROW(render("{{ s | length }}", {{"s", std::string("\xff")}}), lw::Error);  // invalid UTF-8
}

}  // namespace
