#!/usr/bin/env python3
"""Writes tests/fixtures/chat_templates/goldens.json: every chat template in that folder rendered by
transformers itself over a set of conversations, for the C++ renderer (src/chat) to match byte
for byte.

Rendering goes through transformers.utils.chat_template_utils.render_jinja_template, after the
message normalisation apply_chat_template does (_normalize_chat_messages), with the special tokens
passed as template variables -- i.e. exactly apply_chat_template(..., tokenize=False). A case whose
rendering raises records the exception's type and message instead of an output ("TemplateError"
is the template's own raise_exception).

    python3 scripts/make_chat_goldens.py            # needs transformers 5.x and jinja2 >= 3.1.6
"""

import json
import pathlib
import sys

import jinja2
import transformers
from transformers.utils.chat_template_utils import (
    _compile_jinja_template,
    _normalize_chat_messages,
    render_jinja_template,
)

ROOT = pathlib.Path(__file__).resolve().parent.parent
DIR = ROOT / "tests" / "fixtures" / "chat_templates"

# Special tokens of each family's tokenizer (tokenizer_config.json); None = not set (then the
# template does not see the variable at all, as with Qwen's bos_token).
FAMILIES = {
    "llama2": ("<s>", "</s>"),
    "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama3.1": ("<|begin_of_text|>", "<|eot_id|>"),
    "mistral-v0.1": ("<s>", "</s>"),
    "mistral-v0.3": ("<s>", "</s>"),
    "qwen2": (None, "<|im_end|>"),
    "qwen2.5": (None, "<|im_end|>"),
    "qwen3": (None, "<|im_end|>"),
    "smollm2": ("<|im_start|>", "<|im_end|>"),
    "gemma2": ("<bos>", "<eos>"),
    "gemma3": ("<bos>", "<eos>"),
    "phi3": ("<s>", "<|endoftext|>"),
    "phi3.5": ("<s>", "<|endoftext|>"),
}

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
U1 = {"role": "user", "content": "What is the capital of France?"}
A1 = {"role": "assistant", "content": "The capital of France is Paris."}
U2 = {"role": "user", "content": "And of Germany?"}
A2 = {"role": "assistant", "content": "Berlin."}
U3 = {"role": "user", "content": "Thanks!"}

COMMON = {
    "user_only": [U1],
    "system_user": [SYSTEM, U1],
    "system_user_assistant_user": [SYSTEM, U1, A1, U2],
    "multi_turn": [U1, A1, U2, A2, U3],
    "tricky_text": [
        {"role": "user", "content": "  Line one\nLine two  \n"},
        {"role": "assistant", "content": " Ünïcödé 世界 🌍 — «ok»\n\n"},
        {"role": "user", "content": "\tTabs, \"quotes\", 'single', {{ braces }} {% tags %} \\n \u3000x\u00a0"},
    ],
}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
TOOL_CALL = {
    "role": "assistant",
    "content": None,  # dropped by apply_chat_template's normalisation
    "tool_calls": [
        {"id": "call12345", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    ],
}
TOOL_RESULT = {"role": "tool", "tool_call_id": "call12345", "name": "get_weather", "content": "22 degrees, sunny"}
TOOL_CONVERSATION = [
    {"role": "user", "content": "What's the weather in Paris?"},
    TOOL_CALL,
    TOOL_RESULT,
    {"role": "assistant", "content": "It is 22 degrees and sunny in Paris."},
]
NOT_ALTERNATING = [U1, {"role": "user", "content": "Hello again?"}]

# (family, case name, context) beyond the common cases.
SPECIFIC = [
    ("llama2", "not_alternating", {"messages": NOT_ALTERNATING}),
    ("llama3.1", "date_string", {"messages": [SYSTEM, U1], "date_string": "01 Jan 2025", "add_generation_prompt": True}),
    ("llama3.1", "tools_in_user_message", {"messages": [SYSTEM, U1], "tools": [WEATHER_TOOL], "add_generation_prompt": True}),
    ("llama3.1", "tools_in_system_message",
     {"messages": [U1], "tools": [WEATHER_TOOL], "tools_in_user_message": False, "add_generation_prompt": True}),
    ("llama3.1", "builtin_tools",
     {"messages": [U1], "builtin_tools": ["brave_search", "code_interpreter", "wolfram_alpha"], "add_generation_prompt": True}),
    ("llama3.1", "tool_call_and_result",
     {"messages": TOOL_CONVERSATION, "tools": [WEATHER_TOOL], "tools_in_user_message": False}),
    ("llama3.1", "tools_without_user_message", {"messages": [SYSTEM], "tools": [WEATHER_TOOL]}),
    ("mistral-v0.1", "system_message", {"messages": [SYSTEM, U1]}),
    ("mistral-v0.1", "not_alternating", {"messages": NOT_ALTERNATING}),
    ("mistral-v0.3", "tools", {"messages": [SYSTEM, U1, A1, U2], "tools": [WEATHER_TOOL]}),
    ("mistral-v0.3", "tool_call_and_result", {"messages": TOOL_CONVERSATION, "tools": [WEATHER_TOOL]}),
    ("mistral-v0.3", "bad_tool_call_id",
     {"messages": [U1, {**TOOL_CALL, "tool_calls": [{**TOOL_CALL["tool_calls"][0], "id": "short"}]}]}),
    ("mistral-v0.3", "not_alternating", {"messages": NOT_ALTERNATING}),
    ("mistral-v0.3", "equal_user_messages", {"messages": [U1, A1, U1], "tools": [WEATHER_TOOL]}),
    ("qwen2.5", "tools", {"messages": [SYSTEM, U1], "tools": [WEATHER_TOOL], "add_generation_prompt": True}),
    ("qwen2.5", "tool_call_and_result", {"messages": TOOL_CONVERSATION, "tools": [WEATHER_TOOL]}),
    ("qwen3", "enable_thinking_false", {"messages": [U1], "enable_thinking": False, "add_generation_prompt": True}),
    ("qwen3", "enable_thinking_true", {"messages": [U1], "enable_thinking": True, "add_generation_prompt": True}),
    ("qwen3", "think_in_history",
     {"messages": [U1, {"role": "assistant", "content": "<think>\nParis is in France.\n</think>\n\nParis."}, U2,
                   {"role": "assistant", "content": "<think>\nGermany: Berlin.\n</think>\n\nBerlin."}]}),
    ("qwen3", "reasoning_content",
     {"messages": [U1, {"role": "assistant", "content": "Paris.", "reasoning_content": "Easy one."}],
      "enable_thinking": True}),
    ("qwen3", "tools", {"messages": [SYSTEM, U1], "tools": [WEATHER_TOOL], "add_generation_prompt": True}),
    ("qwen3", "tool_call_and_result", {"messages": TOOL_CONVERSATION, "tools": [WEATHER_TOOL]}),
    ("gemma2", "system_message", {"messages": [SYSTEM, U1]}),
    ("gemma2", "not_alternating", {"messages": NOT_ALTERNATING}),
    ("gemma3", "content_parts",
     {"messages": [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                   {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " Describe this. "}]}],
      "add_generation_prompt": True}),
    ("gemma3", "not_alternating", {"messages": NOT_ALTERNATING}),
    ("phi3.5", "empty_system_message", {"messages": [{"role": "system", "content": ""}, U1], "add_generation_prompt": True}),
]


# Small templates for the evaluator's unit tests, rendered by the same Jinja environment
# transformers compiles chat templates with: (name, template, variables).
SNIPPETS = [
    # text and whitespace control
    ("text", "plain text", {}),
    ("trailing newline dropped", "a\n", {}),
    ("two trailing newlines", "a\n\n", {}),
    ("crlf normalised", "a\r\nb\rc", {}),
    ("comment", "a{# gone #}b", {}),
    ("trim_blocks", "{% if true %}\nx\n{% endif %}\ny", {}),
    ("trim_blocks comment", "a{# c #}\nb", {}),
    ("lstrip_blocks", "a\n    {% if true %}\n    b\n    {% endif %}\nc", {}),
    ("lstrip_blocks at start", "  \t{% if true %}x{% endif %}", {}),
    ("lstrip not for output", "a\n  {{ 'b' }}\n", {}),
    ("lstrip not after text", "a  {% if true %}b{% endif %}", {}),
    ("minus strips", "a   {{- 'b' -}}   c  {%- if true -%}  d  {%- endif %}  e", {}),
    ("minus strips newlines", "a\n\n  {%- if true %}\n\nb{% endif -%}\n\n  c", {}),
    ("plus keeps", "a\n  {%+ if true %}b{% endif +%}\nc", {}),
    ("output keeps newline", "{{ 'a' }}\n{{ 'b' }}\n", {}),
    ("comment minus", "a  {#- c -#}  b", {}),
    ("block end then spaces", "{% if true %}  \nx{% endif %}", {}),
    # literals and operators
    ("numbers", "{{ 1 + 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 * 3 - 1 }} {{ -4 }} {{ 1.5 + 1 }} {{ 7 / 2 }} {{ 4 / 2 }} {{ 2 ** 10 }} {{ 2 ** -1 }}", {}),
    ("float floor division and modulo", "{{ 1 // 0.1 }} {{ 1 % 0.1 }} {{ 0.0 % -0.1 }} {{ -(0 % -0.1) }} {{ -7.5 // 2 }} {{ -7.5 % 2 }} {{ 7 % -2.5 }}", {}),
    ("floats", "{{ 0.1 + 0.2 }} {{ 1e20 }} {{ 1.5e-7 }} {{ 100.0 }} {{ 1e16 }} {{ 123456789.125 }} {{ 3.0 * 2 }}", {}),
    ("none and bools", "{{ none }} {{ true }} {{ false }} {{ None }} {{ True }}", {}),
    ("string escapes", "{{ 'a\\nb\\t\\\"c\\\"' }}|{{ \"it's\" }}|{{ 'x\\u00e9\\x41' }}|{{ '\\q' }}", {}),
    ("adjacent strings", "{{ 'a' 'b' \"c\" }}", {}),
    ("concat", "{{ 'n=' ~ 3 ~ none ~ true ~ 1.5 ~ missing }}", {}),
    ("string plus", "{{ 'a' + 'b' }}{{ [1] + [2, 3] }}{{ 'ab' * 2 }}{{ 2 * [0] }}", {}),
    ("comparisons", "{{ 1 < 2 }}{{ 2 <= 1 }}{{ 'a' == 'a' }}{{ 'a' != 'a' }}{{ 3 > 2 }}{{ 1 >= 1 }}{{ 1 == 1.0 }}{{ true == 1 }}{{ 'a' < 'b' }}{{ [1, 2] < [1, 3] }}", {}),
    ("chained comparison", "{{ 1 < 2 < 3 }}{{ 1 < 3 < 2 }}", {}),
    ("logic", "{{ true and false }}{{ true or false }}{{ not true }}{{ not (1 == 2) }}{{ 0 or 'x' }}{{ '' and 'y' }}{{ 'a' and 'b' }}", {}),
    ("in", "{{ 'b' in 'abc' }}{{ 2 in [1, 2] }}{{ 'k' in d }}{{ 'q' not in d }}{{ 'x' in missing }}", {"d": {"k": 1}}),
    ("conditional expression", "{{ 'yes' if flag else 'no' }}|{{ 'a' if false }}|{{ 'a' if false else 'b' if true else 'c' }}", {"flag": True}),
    ("precedence", "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 2 ** 3 ** 2 }} {{ -2 ** 2 }} {{ not 1 == 2 }} {{ 10 - 2 - 3 }}", {}),
    ("filter binds tighter", "{{ 'a' + ' b ' | trim + 'c' }}|{{ items | length - 1 }}", {"items": [1, 2, 3]}),
    ("list dict literals", "{{ [1, 'a', none, true, 1.0, [2], {'k': 'v'}] }}|{{ {'b': 1, 'a': [1, 2]} }}|{{ [] }}{{ {} }}|{{ [1, 2,] }}", {}),
    ("repr quoting", "{{ ['it\\'s', 'say \"hi\"', 'both \\' \"', 'nl\\n', 'tab\\t', 'back\\\\slash', '\\x01'] }}", {}),
    ("dict print", "{{ d }}|{{ d.x }}", {"d": {"x": [1, {"y": None}], "u": "é"}}),
    # variables, attributes, subscripts, slices
    ("undefined prints nothing", "[{{ missing }}]", {}),
    ("attribute and item", "{{ m.role }} {{ m['content'] }} {{ m.missing }} {{ l[0] }} {{ l[-1] }} {{ l.1 }} {{ l[5] }}", {"m": {"role": "user", "content": "hi"}, "l": ["a", "b"]}),
    ("slices", "{{ l[1:] }} {{ l[:-1] }} {{ l[::-1] }} {{ l[::2] }} {{ l[-2:] }} {{ l[1:2] }} {{ l[5:] }} {{ s[::-1] }} {{ s[1:3] }} {{ s[-1] }}", {"l": [1, 2, 3, 4], "s": "héllo"}),
    ("dict methods", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{{ d.keys() | list }}{{ d.values() | list }}{{ d.get('a') }}{{ d.get('z') }}{{ d.get('z', 'dflt') }}", {"d": {"b": 2, "a": 1}}),
    ("string methods", "{{ '  x  '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ '  x'.lstrip() }}|{{ 'x  '.rstrip() }}|{{ 'abc'.startswith('a') }}{{ 'abc'.endswith('bc') }}{{ 'abc'.startswith(('x', 'a')) }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'Hello'.upper() }}{{ 'Hello'.lower() }}|{{ 'hello world'.title() }}|{{ 'hELLO'.capitalize() }}|{{ 'aaa'.replace('a', 'b', 2) }}|{{ 'abc'.find('c') }}{{ 'abca'.count('a') }}|{{ '-'.join(['a', 'b']) }}", {}),
    ("unicode strip", "[{{ s.strip() }}][{{ s | trim }}][{{ s | length }}]", {"s": "\u3000 \u00a0x y\u2003\n"}),
    ("think split", "{{ c.split('</think>')[-1].lstrip('\\n') }}|{{ c.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') }}", {"c": "<think>\nhmm\n</think>\n\nHello!"}),
    # statements
    ("if elif else", "{% for n in [1, 2, 3] %}{% if n == 1 %}one{% elif n == 2 %}two{% else %}many{% endif %},{% endfor %}", {}),
    ("for loop variables", "{% for x in items %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.revindex }}{{ loop.revindex0 }};{% endfor %}", {"items": ["a", "b", "c"]}),
    ("loop previtem nextitem cycle", "{% for x in [1, 2, 3] %}{{ loop.previtem }}/{{ loop.nextitem }}/{{ loop.cycle('a', 'b') }};{% endfor %}", {}),
    ("for else", "{% for x in [] %}x{% else %}empty{% endfor %}{% for x in missing %}x{% else %}none{% endfor %}", {}),
    ("break continue", "{% for n in [1, 2, 3, 4] %}{% if n == 2 %}{% continue %}{% endif %}{% if n == 4 %}{% break %}{% endif %}{{ n }}{% endfor %}", {}),
    ("for with condition", "{% for x in [1, 2, 3, 4] if x % 2 == 0 %}{{ loop.index }}:{{ x }}{% if not loop.last %},{% endif %}{% endfor %}", {}),
    ("for over items with condition", "{% for k, v in d.items() if k != 'b' %}{{ k }}={{ v }};{% endfor %}", {"d": {"a": 1, "b": 2, "c": 3}}),
    ("for over dict and string", "{% for k in d %}{{ k }}{% endfor %}|{% for c in 'hé' %}[{{ c }}]{% endfor %}", {"d": {"x": 1, "y": 2}}),
    ("tuple unpacking", "{% for a, b in [[1, 2], [3, 4]] %}{{ a }}{{ b }}{% endfor %}{% for (a, b) in [['x', 'y']] %}{{ b }}{{ a }}{% endfor %}", {}),
    ("nested loops", "{% for i in [1, 2] %}{% for j in ['a', 'b'] %}{{ i }}{{ j }}{{ loop.index }}{% endfor %}{{ loop.index }} {% endfor %}", {}),
    ("set and scope", "{% set a = 1 %}{% for x in [1] %}{% set a = 2 %}{{ a }}{% endfor %}{{ a }}{% if true %}{% set b = 3 %}{% endif %}{{ b }}", {}),
    ("set per iteration", "{% for i in [1, 2] %}[{{ x }}]{% set x = i %}{% endfor %}[{{ x }}]", {}),
    ("set tuple", "{% set a, b = [1, 2] %}{{ a }}{{ b }}{% set c = 1, 2 %}{{ c }}{{ c[1:] }}{{ (1,) }}{{ () }}", {}),
    ("items print as tuples", "{{ d.items() | list }}{{ (d | items | list)[0] }}{% for p in d | items %}{{ p }}{% endfor %}{{ d.items() | list | first }}", {"d": {"a": 1, "b": [2]}}),
    ("set block", "{% set x %}a{{ 1 + 1 }}b{% endset %}[{{ x }}]", {}),
    ("set overrides context", "{{ messages | length }}{% set messages = messages[1:] %}{{ messages | length }}", {"messages": [1, 2, 3]}),
    ("namespace", "{% set ns = namespace(total=0, seen=false) %}{% for x in [1, 2, 3] %}{% set ns.total = ns.total + x %}{% if x == 2 %}{% set ns.seen = true %}{% endif %}{% endfor %}{{ ns.total }} {{ ns.seen }}", {}),
    ("namespace added attribute", "{% set ns = namespace() %}{% set ns.a = 'x' %}{{ ns.a }}{{ ns.b is defined }}", {}),
    ("namespace from dict", "{% set ns = namespace({'a': 1}, b=2) %}{{ ns.a }}{{ ns.b }}", {}),
    ("macro", "{% macro m(a, b='q') %}<{{ a }}{{ b }}{{ g }}>{% endmacro %}{% set g = 'G' %}{{ m(1) }}{{ m(1, b=2) }}{{ m(b=3, a=4) }}", {}),
    ("macro whitespace", "{% macro render(x) -%}\n  [{{ x }}]\n{%- endmacro %}\n{{ render('a') }}\n{{ render('b') }}", {}),
    ("python colons", "{% for x in [1, 2]: %}{% if x == 1: %}a{% elif x == 2: %}b{% else: %}c{% endif %}{% endfor %}", {}),
    ("unknown names in if", "{% if false %}{{ x | nope }}{{ x is a.b }}{% endif %}{{ 1 if true else x | nope }}", {}),
    ("safe is a string", "{{ (0 | safe) is string }}{{ not (false | safe) }}", {}),
    ("generators", "{{ [] | select is defined }}{% if [] | select %}gen-true{% endif %}{% if [] | select | list %}x{% else %}list-false{% endif %}{{ [3, 1] | reverse | list }}{{ d.items() | list }}{{ d.keys() | list | length }}{{ 'a' in d.keys() }}{{ d.items() | length }}", {"d": {"a": 1}}),
    ("generation block", "{% generation %}x{{ 1 }}{% endgeneration %}", {}),
    ("raise in branch not taken", "{% if false %}{{ raise_exception('no') }}{% endif %}ok", {}),
    # filters
    ("trim length upper lower", "{{ '  a b  ' | trim }}|{{ 'xxax' | trim('x') }}|{{ 'héllo' | length }}|{{ [1, 2] | count }}|{{ {'a': 1} | length }}|{{ 'ab' | upper }}|{{ 'AB' | lower }}", {}),
    ("capitalize title", "{{ 'hello WORLD' | capitalize }}|{{ 'hello world-wide (big)' | title }}|{{ \"it's ok\" | title }}", {}),
    ("default", "{{ missing | default('d') }}|{{ '' | default('d') }}|{{ '' | default('d', true) }}|{{ none | default('d') }}|{{ missing | d }}|{{ 0 | d('z', boolean=true) }}", {}),
    ("first last", "{{ [1, 2, 3] | first }}{{ [1, 2, 3] | last }}{{ 'abc' | first }}{{ 'abc' | last }}{{ [] | first }}", {}),
    ("join", "{{ ['a', 'b'] | join(', ') }}|{{ [1, 2] | join }}|{{ users | join(',', attribute='name') }}|{{ 'abc' | join('-') }}", {"users": [{"name": "x"}, {"name": "y"}]}),
    ("list reverse", "{{ 'ab' | list }}{{ {'a': 1, 'b': 2} | list }}{{ [1, 2, 3] | reverse | list }}{{ 'abc' | reverse }}", {}),
    ("items filter", "{% for k, v in d | items %}{{ k }}={{ v }},{% endfor %}{% for k, v in missing | items %}x{% endfor %}", {"d": {"z": 1, "a": 2}}),
    ("tojson", "{{ d | tojson }}|{{ d | tojson(indent=2) }}|{{ d | tojson(sort_keys=true) }}|{{ 'é\\n\"\\\\' | tojson }}|{{ 'é' | tojson(ensure_ascii=true) }}|{{ [] | tojson }}{{ {} | tojson(indent=2) }}|{{ d | tojson(separators=[',', ':']) }}", {"d": {"b": [1, 2.5, None, True], "a": {"x": "y"}, "e": [], "f": {}}}),
    ("tojson floats", "{{ [1.0, 0.5, 1e-7, 1e22, 3] | tojson }}", {}),
    ("string filter", "{{ 5 | string }}{{ none | string }}{{ [1, 'a'] | string }}{{ missing | string }}|{{ {'k': 'v'} | string }}", {}),
    ("replace", "{{ 'aaa' | replace('a', 'b') }}|{{ 'aaa' | replace('a', 'b', 2) }}|{{ 'ab' | replace('', '-') }}", {}),
    ("indent", "{{ 'a\\nb\\n\\nc' | indent }}|{{ 'a\\nb' | indent(2, true) }}|{{ 'a\\n\\nb' | indent(2, blank=true) }}|{{ 'x\\ny' | indent('> ') }}", {}),
    ("selectattr rejectattr", "{{ msgs | selectattr('role', 'equalto', 'user') | list | length }}|{{ (msgs | selectattr('role', 'equalto', 'user') | list)[-1].content }}|{{ msgs | rejectattr('role', 'eq', 'user') | map(attribute='content') | join(',') }}|{{ items | selectattr('on') | map(attribute='n') | list }}", {"msgs": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}], "items": [{"n": 1, "on": True}, {"n": 2, "on": False}, {"n": 3}]}),
    ("select reject map", "{{ [1, 2, 3, 4] | select('odd') | list }}{{ [1, 2, 3, 4] | reject('odd') | list }}{{ [0, 1, ''] | select | list }}{{ ['a', 'B'] | map('upper') | list }}{{ ['code', 'x'] | reject('equalto', 'code') | list }}", {}),
    ("numbers filters", "{{ -3 | abs }}{{ '42' | int }}{{ 'x' | int }}{{ 3.7 | int }}{{ '2.5' | float }}{{ 2.5 | round }}{{ 2.567 | round(2) }}{{ 2.1 | round(method='ceil') }}", {}),
    # tests
    ("tests", "{{ x is defined }}{{ y is defined }}{{ y is not defined }}{{ y is undefined }}{{ n is none }}{{ s is string }}{{ d is mapping }}{{ l is iterable }}{{ s is iterable }}{{ missing is iterable }}{{ 3 is number }}{{ 3 is integer }}{{ 3.0 is float }}{{ true is boolean }}{{ l is sequence }}", {"x": 1, "n": None, "s": "s", "d": {}, "l": []}),
    ("tests with arguments", "{{ 3 is divisibleby 3 }}{{ 4 is even }}{{ 3 is odd }}{{ 'a' is equalto 'a' }}{{ 2 is eq(2) }}{{ 2 is in [1, 2] }}{{ 3 is gt 2 }}{{ 3 is lt(2) }}{{ 'a' is ne 'b' }}{{ false is sameas false }}{{ none is sameas none }}{{ true is true }}{{ 0 is false }}", {}),
    ("test precedence", "{{ not x is none }}{{ x is none or true }}{{ 'a' ~ 'b' is string }}", {"x": 1}),
    # globals
    ("range", "{{ range(3) | list }}{{ range(1, 4) | list }}{{ range(10, 0, -3) | list }}{% for i in range(2) %}{{ i }}{% endfor %}", {}),
    ("dict global", "{{ dict(a=1, b='x') }}{{ dict(a=1) | tojson }}", {}),
    ("defined globals", "{{ strftime_now is defined }}{{ raise_exception is defined }}{{ range is defined }}{{ namespace is defined }}{{ nothing is defined }}", {}),
    ("tools defined as none", "{{ tools is defined }}{{ tools is none }}", {"tools": None}),
]


def render(template, context):
    ctx = dict(context)
    messages = _normalize_chat_messages(ctx.pop("messages"))
    tools = ctx.pop("tools", None)
    documents = ctx.pop("documents", None)
    add_generation_prompt = ctx.pop("add_generation_prompt", False)
    rendered, _ = render_jinja_template(
        conversations=[messages],
        tools=tools,
        documents=documents,
        chat_template=template,
        add_generation_prompt=add_generation_prompt,
        **ctx,
    )
    return rendered[0]


def main():
    cases = []
    files = sorted(p.stem for p in DIR.glob("*.jinja"))
    missing = set(files) ^ set(FAMILIES)
    if missing:
        sys.exit(f"templates and FAMILIES differ: {sorted(missing)}")
    for family in files:
        template = (DIR / f"{family}.jinja").read_text(encoding="utf-8")
        bos, eos = FAMILIES[family]
        tokens = {k: v for k, v in (("bos_token", bos), ("eos_token", eos)) if v is not None}
        todo = [(f"{name}/gen={int(gen)}", {"messages": msgs, "add_generation_prompt": gen})
                for name, msgs in COMMON.items() for gen in (True, False)]
        todo += [(name, ctx) for fam, name, ctx in SPECIFIC if fam == family]
        for name, ctx in todo:
            context = {**ctx, **tokens}
            case = {"family": family, "template": f"{family}.jinja", "name": name, "context": context}
            try:
                case["output"] = render(template, context)
            except Exception as e:  # noqa: BLE001 - recorded as an expected failure
                case["error"] = {"type": type(e).__name__, "message": str(e)}
            cases.append(case)
    snippets = []
    for name, template, variables in SNIPPETS:
        case = {"name": name, "template": template, "variables": variables}
        try:
            case["output"] = _compile_jinja_template(template).render(**variables)
        except Exception as e:  # noqa: BLE001
            case["error"] = {"type": type(e).__name__, "message": str(e)}
        snippets.append(case)
    out = {
        "generator": "scripts/make_chat_goldens.py",
        "transformers": transformers.__version__,
        "jinja2": jinja2.__version__,
        "cases": cases,
        "snippets": snippets,
    }
    path = DIR / "goldens.json"
    path.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    errors = sum("error" in c for c in cases)
    print(f"wrote {path.relative_to(ROOT)}: {len(cases)} cases ({errors} expected errors), {len(snippets)} snippets")
    for c in snippets:
        if "error" in c:
            print("  snippet error:", c["name"], c["error"])


if __name__ == "__main__":
    main()
