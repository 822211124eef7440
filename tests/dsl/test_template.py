"""The template language: parsing, the safe expression evaluator and its limits, and templates
as node inputs, conditions and loop items in real runs."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, computed_field

import reprise
import reprise.dsl
from reprise import (
    DefinitionError,
    FlowDefinition,
    FlowRunner,
    NodeContext,
    Ref,
    RunContext,
    RunFailedError,
    RunResult,
    Template,
    TemplateError,
)
from reprise.dsl._expr import MAX_DEPTH, MAX_EXPRESSION_LENGTH, MAX_SIZE, MAX_STEPS, compile_expression
from reprise.dsl._template import MAX_TEMPLATE_LENGTH, compile_value, render
from reprise.runners._frame import Frame


# -- fixtures: a real scope (the executor's Frame) holding outcomes, variables and inputs --------
class Task(BaseModel):
    title: str
    hours: float


class Plan(BaseModel):
    tasks: list[Task]
    outcome: str = "a field named outcome"
    _secret: str = "private"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total(self) -> float:
        return sum(t.hours for t in self.tasks)


@dataclass
class Point:
    x: int
    y: int


def make_scope() -> Frame:
    top = Frame(None, {"name": "Ann", "n": 5, "config": {"limit": 3, "_hidden": 1}, "item": "initial item"})
    root = top.child("flow")
    root.outcomes["planner"] = None
    planner = root.child("planner")
    planner.outcomes["plan"] = Plan(tasks=[Task(title="write", hours=2), Task(title="test", hours=1.5)])
    root.outcomes["count"] = {"words": 1200, "lines": [1, 2, 3]}
    root.outcomes["point"] = Point(1, 2)
    root.outcomes["text"] = "Hello, World"
    root.outcomes["injected"] = "$expr{1+1}"
    root.outcomes["big"] = list(range(200_000))  # about 1.1 million characters as text
    return root.child("loop", {"item": {"title": "loop item"}, "index": 2}, keep=False)


SCOPE = make_scope()


def ev(expression: str) -> Any:
    return Template("$expr{" + expression + "}").render(SCOPE)


# -- parsing ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello $var{name}!", "Hello Ann!"),
        ("$var{n}", 5),  # a lone part gives the raw value
        ("$expr{[1, 2]}", [1, 2]),
        (" $var{n}", " 5"),  # anything around it makes a string
        ("n=$var{n} list=$expr{[1, 'a', null, true]}", 'n=5 list=[1,"a",null,true]'),
        ("$hier{count}", {"words": 1200, "lines": [1, 2, 3]}),
        (
            "plan: $hier{planner.plan}",
            'plan: {"tasks":[{"title":"write","hours":2.0},{"title":"test","hours":1.5}],'
            '"outcome":"a field named outcome","total":3.5}',
        ),
        ("$$var{n} costs $$5", "$var{n} costs $5"),
        ("$$$var{n}", "$5"),
        ("price $5, ${HOME} and a lone $", "price $5, ${HOME} and a lone $"),
        ("$var{item.title}", "loop item"),  # loop variable first...
        ("$var{config.limit}", 3),  # ...then initial input, with fields
        ("$expr{'}' + '{'}", "}{"),  # braces inside strings do not end the expression
        ("$expr{{'a': {'b': 1}}['a']}", {"b": 1}),
        ("a\n$expr{1 +\n 2}\nb", "a\n3\nb"),  # an expression may span lines
        ("", ""),
    ],
)
def test_render(text: str, expected: Any) -> None:
    assert Template(text).render(SCOPE) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("$expr{1 + 2", "unterminated $expr{"),
        ("$var{name", "unterminated $var{"),
        ("$hier{a.b", "unterminated $hier{"),
        ("$foo{x}", "unknown template part $foo{"),
        ("$var{two words}", "expected a name"),
        ("$var{x._y}", "expected a name"),
        ("$hier{a..b}", "$hier{a..b}"),
        ("$hier{}", "$hier{}"),
        ("$expr{}", "empty expression"),
        ("$expr{   }", "empty expression"),
        ("$expr{$expr{1}}", "cannot be nested"),
        ("$expr{1 +}", "invalid expression"),
        ("$expr{'abc}", "unterminated string"),
        ("$expr{$5}", "unexpected '$'"),
    ],
)
def test_syntax_errors(text: str, message: str) -> None:
    with pytest.raises(TemplateError) as info:
        Template(text)
    assert message in info.value.message
    assert info.value.expression  # names the part that is wrong


def test_refs_and_variables() -> None:
    t = Template("$hier{a} $expr{$hier{b.c}.x + len($var{v})} $var{w}")
    assert [str(r.path) for r in t.refs()] == ["a", "b.c"]
    assert all(isinstance(r, Ref) for r in t.refs())
    assert str(t.refs()[1]) == "$hier{b.c}"
    # $var{} may name an initial input: not reported to the loop-variable check.
    assert list(t.variables()) == []


def test_template_value_semantics() -> None:
    t = Template("x $expr{1 + 1}")
    assert t == Template("x $expr{1 + 1}") and hash(t) == hash(Template("x $expr{1 + 1}"))
    assert t != Template("x $expr{1+1}")
    assert repr(t) == "Template('x $expr{1 + 1}')"
    copy = pickle.loads(pickle.dumps(t))
    assert copy == t and copy.render(None) == "x 2"


def test_exports() -> None:
    assert reprise.Template is Template
    assert reprise.dsl.Template is Template
    assert reprise.dsl.render is render
    assert reprise.dsl.compile_value is compile_value
    assert "Template" in reprise.__all__ and {"Template", "render", "compile_value"} <= set(reprise.dsl.__all__)


# -- expressions -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 + 2 * 3 - 4 / 2", 5.0),
        ("7 // 2, 7 % 3, -2 ** 2, 2 ** -1, +3", (3, 1, -4, 0.5, 3)),
        ("'ab' + 'cd', 'ab' * 2, [1] + [2], (1,) * 2", ("abcd", "abab", [1, 2], (1, 1))),
        ("1 < 2 <= 2 < 3", True),
        ("1 < 2 > 3", False),
        ("1 == 1.0 != 2", True),
        ("'a' in 'cat' and 2 not in [1, 3]", True),
        ("null is None and 1 is not None", True),
        ("true and false or 'x'", "x"),
        ("0 or '' or []", []),
        ("1 && 2", 2),
        ("0 || 'y'", "y"),
        ("!0 && !(1 == 2)", True),
        ("1 != 2", True),  # != is not touched by the ! translation
        ("not 1 or not 0", True),
        ("'&&' + '||' + '!'", "&&||!"),  # string literals are left alone
        ("'yes' if $var{n} > 3 else 'no'", "yes"),
        ("[1, 2, 3][0], [1, 2, 3][-1], [1, 2, 3][1:], 'hello'[::-1]", (1, 3, [2, 3], "olleh")),
        ("{'a': 1, 'b': [1, 2]}['b'][1]", 2),
        ("len([1, 2]), sum([1, 2.5]), min(3, 1), max([3, 9]), abs(-2)", (2, 3.5, 1, 9, 2)),
        ("sorted([3, 1, 2]), sorted('cba', reverse=true)", ([1, 2, 3], ["c", "b", "a"])),
        ("round(2.567, 2), round(2.5), round(1234, -2)", (2.57, 2, 1200)),
        ("str(1), str(true), str(null), str([1, 'a']), str('s')", ("1", "true", "null", '[1,"a"]', "s")),
        ("int('42'), int('ff', base=16), float('1.5'), bool(0), bool('x')", (42, 255, 1.5, False, True)),
        (
            "any([0, 1]), all([1, 0]), list('ab'), dict(a=1), dict([['k', 2]])",
            (True, False, ["a", "b"], {"a": 1}, {"k": 2}),
        ),
        ("range(3), range(1, 7, 2), max([], default=0)", ([0, 1, 2], [1, 3, 5], 0)),
        ("' Hi '.strip().lower(), 'a,b'.split(','), '-'.join(['a', 'b'])", ("hi", ["a", "b"], "a-b")),
        (
            "'ab'.upper(), 'abc'.startswith('a'), 'abc'.endswith('x'), 'aXa'.replace('X', 'y')",
            ("AB", True, False, "aya"),
        ),
        (
            "{'a': 1}.get('a'), {'a': 1}.get('z', 9), {'a': 1}.keys(), {'a': 1}.values(), {'a': 1}.items()",
            (1, 9, ["a"], [1], [("a", 1)]),
        ),
        ("true, false, null, True, False, None", (True, False, None, True, False, None)),
        ("1_000 + 0x10 + 1e3", 2016.0),
        # data access
        ("$hier{planner.plan}.outcome.tasks[0].title", "write"),  # the seed's result-object form
        ("$hier{planner.plan}.tasks[0].title", "write"),  # plain form
        ("$hier{planner.plan}['outcome']", "a field named outcome"),  # a field that is called outcome
        ("$hier{planner.plan}.outcome.outcome", "a field named outcome"),
        ("$hier{planner.plan}.total", 3.5),  # computed fields are data too
        ("len($hier{planner.plan}.tasks)", 2),
        ("$hier{count}.words > 1000 && $hier{count}['lines'][-1] == 3", True),
        ("$hier{point}.x + $hier{point}['y']", 3),
        ("$hier{text}.lower().split(', ')", ["hello", "world"]),
        ("$var{item}.title", "loop item"),
        ("$var{index} + 1", 3),
        ("$var{config}.limit * 2", 6),
        ("$var{name} + '!'", "Ann!"),
        ("$hier{flow.count}.words", 1200),  # absolute: starts with the root id
    ],
)
def test_expressions(expression: str, expected: Any) -> None:
    assert ev(expression) == expected


def test_lazy_evaluation_skips_unused_branches() -> None:
    # The branch not taken (and the right side of a decided and/or) is never evaluated.
    assert ev("1 if true else 1 / 0") == 1
    assert ev("false && 1 / 0") is False
    assert ev("1 < 0 < 1 / 0") is False
    assert ev("$hier{count} if true else $hier{nothing_here}") == {"words": 1200, "lines": [1, 2, 3]}


ATTACKS = [
    "().__class__.__bases__[0].__subclasses__()",
    "__import__('os').system('id')",
    "[].__class__",
    "$hier{planner.plan}.__dict__",
    "$hier{planner.plan}._secret",
    "$var{config}._hidden",
    "getattr(1, 'real')",
    "open('/etc/passwd')",
    "eval('1')",
    "exec('x = 1')",
    "compile('1', 'f', 'eval')",
    "globals()",
    "type(1)",
    "(lambda: 1)()",
    "[x for x in [1]]",
    "{x for x in [1]}",
    "(x for x in [1])",
    "{1, 2}",
    "f'{1}'",
    "b'x'",
    "1j",
    "...",
    "(y := 1)",
    "len",
    "x",
    "'{0.__class__}'.format(1)",
    "'%s' % 'x'",
    "1 << 3",
    "1 | 2",
    "~1",
    "len(*[[1]])",
    "dict(**{'a': 1})",
    "{**{'a': 1}}",
    "sorted([2, 1], key=len)",
    "'a'.__len__()",
    "'a'.upper.__self__",
    "$hier{count}.get",
    "$hier{text}.upper",
    "$hier{point}.__class__",
    "[1].append(2)",
    "$hier{planner.plan}.model_dump()",
    "$hier{planner.plan}.model_fields",
    "$hier{count}.lower()",
    "'a'.keys()",
    "$var{index}.real",
]


@pytest.mark.parametrize("expression", ATTACKS)
def test_rejected(expression: str) -> None:
    with pytest.raises(TemplateError) as info:
        ev(expression)
    assert info.value.expression == "$expr{" + expression + "}"


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("9**9**9", "bits"),
        ("2 ** 100000", "bits"),
        ("(10 ** 3000) * (10 ** 3000)", "bits"),
        ("'a' * 10**10", "* would build 10,000,000,000 characters/items"),
        ("10**10 * 'a'", "budget"),
        ("[0] * 10**9", "budget"),
        ("[''] * 10**9", "budget"),
        ("[[0] * 600000] * 2", "budget"),
        # shared references would double at every level without size checks on displays
        ("[[[0] * 400000, [0] * 400000], [[0] * 400000]]", "budget"),
        ("('a' * 600000) + ('b' * 600000)", "budget"),
        ("range(10**12)", "range() would build"),
        ("range(10**30)", "range() would build"),
        (f"range({MAX_SIZE})", "range() would build"),
        ("('a' * 1000).replace('', 'b' * 1000)", ".replace() would build"),
        ("('x' * 1000).replace('x', 'y' * 10000)", ".replace() would build"),
        ("('x' * 100000).join(['a'] * 100)", ".join() would build"),
        # one budget for every value built and every step taken, whatever builds or takes it
        ("'a' * 400000 + 'b' * 400000", "+ would build 800,000 characters/items, more than the 200,000 left"),
        ("('a' * 300000).upper() + ('a' * 300000).upper()", ".upper() would build"),
        ("range(100000)[1:][1:]", "slicing [:] built"),
        ("len(str(range(100000))) + len(str(range(100000)))", "str() would build"),
        ("sorted(sorted($hier{big}))", f"sorted() would take 20,462,403 steps, more than the {MAX_STEPS:,} left"),
        (" and ".join(["$hier{big} == $hier{big}"] * 5), "== would take"),
        (" or ".join(["'x' in $hier{big}"] * 10), "in would take"),
        ("str($hier{big})", "str() would build"),
        ("[$hier{big}]", "a list [...] would build"),
        ("round(10**100, -10**9)", "ndigits"),
        ("int('9' * 5000)", "ValueError"),
        ("10.0 ** 400", "OverflowError"),
        ("1 / 0", "ZeroDivisionError"),
        ("sum(['a', 'b'])", "numbers only"),
        ("sum([[1]], [])", "numbers only"),
        ("'a' + 1", "TypeError"),
        ("[1, 2][5]", "out of range"),
        ("[1, 2]['a']", "must be an integer"),
        ("{'a': 1}['b']", "no key 'b'"),
        ("{'a': 1}.b", "no key 'b'"),
        ("$hier{planner.plan}.missing", "has no field 'missing'"),
        ("$hier{point}.z", "has no field 'z'"),
        ("$hier{nothing_here}", "has no outcome"),
        ("$var{nope}", "neither a loop variable"),
        ("len(1, 2)", "TypeError"),
        ("int(1, bogus=2)", "no keyword argument"),
    ],
)
def test_bounds_and_errors(expression: str, message: str) -> None:
    with pytest.raises(TemplateError) as info:
        ev(expression)
    assert message in info.value.message


def test_bounds_allow_values_up_to_the_limit() -> None:
    # The checks are limits, not bans: values right at the limit are built.
    assert len(ev(f"'a' * {MAX_SIZE}")) == MAX_SIZE
    assert len(ev("range(100000)")) == 100000
    assert ev("2 ** 9000") == 2**9000


# Expressions that once ran for minutes or ate gigabytes: every one must be refused by the
# evaluation's budget, naming the node, without the process growing by 100 MB.
RUNAWAY_TEMPLATES = [
    # the expression: str/sorted results did not count towards any limit
    "$expr{len(str(sorted(str(sorted(str(sorted(str(sorted(str(sorted(str(range(100000)))))))))))))}",
    "$expr{list(str(list(str(list(str(range(100000)))))))}",
    "$expr{str(sorted(str(sorted(str(range(100000))))))}",
    "$expr{sorted(str(range(100000)))}",
    # many values each under the old per-value limit: the budget is for the whole evaluation
    "$expr{" + " + ".join(["len(str(range(100000)))"] * 20) + "}",
    "$expr{" + " + ".join(["len(range(100000))"] * 12) + "}",
    "$expr{len(str(range(100000)))} " * 6,
    "$expr{('a' * 900000) + ('b' * 900000)}",
    "$expr{len('a' * 900000) + len('b' * 900000)}",
    # repetition and big ranges
    "$expr{'a' * 10**10}",
    "$expr{[''] * 10**9}",
    "$expr{[[[[[[1] * 10] * 10] * 10] * 10] * 10] * 10}",
    "$expr{range(10**12)}",
    "$expr{range(10**30)}",
    "$expr{'-'.join(str(sorted(str(range(100000)))))}",
    "$expr{'-'.join(list(str(range(100000))))}",
    "$expr{str(range(100000)).replace(',', ',,,,')}",
    "$expr{str(range(100000)).split(',') + str(range(100000)).split(',')}",
    # big integers, alone and repeated
    "$expr{9**9**9}",
    "$expr{2 ** 10**8}",
    "$expr{(2 ** 9999) ** 2}",
    "$expr{str([2 ** 9000] * 100000)}",
    "x $expr{[2 ** 9000] * 100000}",
    # format widths: no formatting is offered at all
    "$expr{f'{1:>999999999}'}",
    "$expr{'{:>999999999}'.format(1)}",
    "$expr{'%999999999d' % 1}",
]

_RUNAWAY_CHILD = textwrap.dedent(
    """
    import json, resource, sys
    # A regression fails here (MemoryError) instead of eating the machine.
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    from reprise import TemplateError
    from reprise.dsl._template import render

    render("$expr{len(str(range(10)))}", None, path="flow.warm")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = []
    for text in json.loads(sys.stdin.read()):
        try:
            render(text, None, path="flow.node")
            out.append({"text": text, "refused": False})
        except TemplateError as exc:
            out.append({"text": text, "refused": True, "path": exc.path, "message": exc.message})
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    print(json.dumps({"results": out, "grown_kb": grown}))
    """
)


def test_runaway_expressions_are_refused_within_the_budget() -> None:
    # A child process with an address-space cap, so a regression fails instead of swapping;
    # the timeout is a generous guard for the whole set, not a measurement.
    proc = subprocess.run(
        [sys.executable, "-c", _RUNAWAY_CHILD],
        input=json.dumps(RUNAWAY_TEMPLATES),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    for result in report["results"]:
        assert result["refused"], result["text"]
        assert result["path"] == "flow.node", result
        # refused by the budget or a language rule, not by running out of memory
        assert "MemoryError" not in result["message"], result
    assert report["grown_kb"] < 100 * 1024, report["grown_kb"]


def test_structural_limits() -> None:
    with pytest.raises(TemplateError, match="too long"):
        compile_expression("1 + " * (MAX_EXPRESSION_LENGTH // 4) + "1")
    with pytest.raises(TemplateError, match="too long"):
        Template("$expr{" + "1 + " * MAX_EXPRESSION_LENGTH + "1}")
    with pytest.raises(TemplateError, match="too long"):
        Template("x" * (MAX_TEMPLATE_LENGTH + 1))
    with pytest.raises(TemplateError, match="nested too deeply"):
        compile_expression("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    with pytest.raises(TemplateError, match="nested too deeply"):
        compile_expression("-" * (MAX_DEPTH + 5) + "1")
    # Python's own parser limit on parentheses is reported as a template error, too.
    with pytest.raises(TemplateError, match="invalid expression"):
        compile_expression("(" * 300 + "1" + ")" * 300)
    assert compile_expression("[" * 10 + "]" * 10).evaluate(None) == [[[[[[[[[[]]]]]]]]]]
    assert compile_expression("[" * MAX_DEPTH + "]" * MAX_DEPTH).evaluate(None) is not None


def test_substituted_values_are_never_evaluated() -> None:
    # The outcome text "$expr{1+1}" is data: it comes out as it went in.
    assert Template("$hier{injected}").render(SCOPE) == "$expr{1+1}"
    assert Template("got: $hier{injected}").render(SCOPE) == "got: $expr{1+1}"
    assert Template("$expr{$hier{injected} + '!'}").render(SCOPE) == "$expr{1+1}!"
    scope = Frame(None, {"evil": "$expr{9**9**9} $var{x} $$"})
    assert Template("[$var{evil}]").render(scope) == "[$expr{9**9**9} $var{x} $$]"


def test_errors_name_the_path_and_expression() -> None:
    with pytest.raises(TemplateError) as info:
        Template("total: $expr{$hier{count}.words / 0}").render(SCOPE, path="agent.flow.node")
    err = info.value
    assert err.path == "agent.flow.node"
    assert err.expression == "$expr{$hier{count}.words / 0}"
    assert isinstance(err.__cause__, ZeroDivisionError)
    assert str(err) == "agent.flow.node: ZeroDivisionError: division by zero (in '$expr{$hier{count}.words / 0}')"


# -- render() for built-in nodes, compile_value() for the builder -------------------------------
def test_render_function() -> None:
    assert render("Hi $var{name}, $$ is a dollar", SCOPE, path="f.n") == "Hi Ann, $ is a dollar"
    assert render("plain text", SCOPE, path="f.n") == "plain text"
    assert render(Template("$expr{2 * 21}"), None, path="f.n") == 42
    with pytest.raises(TemplateError) as info:
        render("$expr{1 +}", SCOPE, path="f.n")
    assert info.value.path == "f.n"
    with pytest.raises(TemplateError) as info:
        render("$var{name}", None, path="f.n")
    assert info.value.path == "f.n" and "needs a run scope" in info.value.message


def test_compile_value() -> None:
    value = compile_value({"a": "$var{n}", "b": ["x", "$expr{1}", {"c": "$hier{count}"}], "d": "plain $5", "e": 3})
    assert value["a"] == Template("$var{n}")
    assert value["b"][0] == "x" and value["b"][1] == Template("$expr{1}")
    assert value["b"][2]["c"] == Template("$hier{count}")
    assert value["d"] == "plain $5" and value["e"] == 3
    # "$$" alone does not make a template: a literal string stays exactly as written.
    assert compile_value("echo $$ ${HOME}") == "echo $$ ${HOME}"
    t = Template("$var{n}")
    assert compile_value(t) is t
    with pytest.raises(TemplateError) as info:
        compile_value({"a": ["$expr{1 +}"]}, path="node_id")
    assert info.value.path == "node_id"


# -- in flows ----------------------------------------------------------------------------------
def echo(value: Any) -> Any:
    return value


def make_plan() -> Plan:
    return Plan(tasks=[Task(title="design", hours=3), Task(title="build", hours=5), Task(title="ship", hours=1)])


def word_count(text: str) -> dict[str, int]:
    return {"words": len(text.split())}


async def _run(flow: FlowDefinition, tmp_path: Path, **inputs: Any) -> RunResult:
    return await FlowRunner(
        flow, RunContext(root_component_id="flow", project_root=tmp_path, initial_inputs=inputs)
    ).run()


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def test_build_time_errors_name_the_element() -> None:
    with pytest.raises(TemplateError) as info:
        FlowDefinition().node("bad_input", echo, inputs={"value": "x $expr{1 +} y"})
    assert info.value.path == "bad_input" and info.value.expression == "$expr{1 +}"
    with pytest.raises(TemplateError) as info:
        FlowDefinition().node("a", echo, inputs={"value": 1}).conditional(
            "check", "$expr{__import__('os')}", FlowDefinition().node("b", echo, inputs={"value": 1})
        )
    assert info.value.path == "check"
    with pytest.raises(TemplateError) as info:
        FlowDefinition().for_each(
            "loop", "$hier{a..b}", FlowDefinition().node("b", echo, inputs={"value": 1}), max_iterations=3
        )
    assert info.value.path == "loop"


def test_definition_check_validates_hier_references(tmp_path: Path) -> None:
    ctx = RunContext(root_component_id="flow", project_root=tmp_path)
    missing = FlowDefinition().node("a", echo, inputs={"value": 1}).node("b", echo, inputs={"value": "$hier{aa}"})
    with pytest.raises(DefinitionError) as info:
        FlowRunner(missing, ctx)
    assert info.value.path == "flow.b" and "$hier{aa}" in info.value.message and "a" in info.value.message
    later = (
        FlowDefinition().node("a", echo, inputs={"value": "$expr{$hier{b} + 1}"}).node("b", echo, inputs={"value": 1})
    )
    with pytest.raises(DefinitionError, match="runs after this element"):
        FlowRunner(later, ctx)
    # A template may use $var{} outside any loop (it may name an initial input).
    FlowRunner(FlowDefinition().node("a", echo, inputs={"value": "$var{anything}"}), ctx)


@pytest.mark.anyio
async def test_templates_in_node_inputs(tmp_path: Path) -> None:
    def greet(greeting: str, count: int, first_task: str, tasks: list[Task], hours: float) -> str:
        return f"{greeting}|{count}|{first_task}|{len(tasks)}|{hours}"

    sub = FlowDefinition().node(
        "inner",
        echo,
        # outwards lookup from the subflow, and an absolute path
        inputs={"value": "$expr{[$hier{planner}.tasks[0].title, $hier{flow.planner}.outcome.tasks[-1].title]}"},
    )
    flow = (
        FlowDefinition()
        .node("planner", make_plan)
        .node(
            "greet",
            greet,
            inputs={
                "greeting": "Hello $var{name}, $$5 please",
                "count": "$expr{len($hier{planner}.tasks) * $var{factor}}",
                "first_task": "$expr{$hier{planner}.outcome.tasks[0].title.upper()}",
                "tasks": "$expr{$hier{planner}.tasks[1:]}",
                "hours": "$expr{sum([3, 5, 1]) / 2}",
            },
        )
        .subflow("sub", sub)
    )
    result = await _run(flow, tmp_path, name="Ann", factor=10)
    assert result.ok
    assert result["flow.greet"] == "Hello Ann, $5 please|30|DESIGN|2|4.5"
    assert result["flow.sub.inner"] == ["design", "ship"]
    recorded = _json(result.run_dir / "flow" / "greet" / "input.json")
    assert recorded["greeting"] == "Hello Ann, $5 please"
    assert recorded["tasks"] == [{"title": "build", "hours": 5.0}, {"title": "ship", "hours": 1.0}]


@pytest.mark.anyio
async def test_template_conditions(tmp_path: Path) -> None:
    def flow_for() -> FlowDefinition:
        return (
            FlowDefinition()
            .node("count", word_count, inputs={"text": "$var{text}"})
            .conditional(
                "long",
                "$expr{$hier{count}.words > $var{limit} && !$var{skip}}",
                FlowDefinition().node("yes", echo, inputs={"value": "long: $hier{count}"}),
                FlowDefinition().node("no", echo, inputs={"value": "$expr{$hier{count}.words}"}),
            )
        )

    long_run = await _run(flow_for(), tmp_path, text="a b c d e", limit=3, skip=False)
    assert long_run["flow.long"] == 'long: {"words":5}'
    assert _json(long_run.run_dir / "flow" / "long" / "result.json")["branch"] == "then"
    short_run = await _run(flow_for(), tmp_path, text="a b", limit=3, skip=False)
    assert short_run["flow.long"] == 2
    assert _json(short_run.run_dir / "flow" / "long" / "result.json")["branch"] == "else"


@pytest.mark.anyio
async def test_template_loop_items(tmp_path: Path) -> None:
    body = FlowDefinition().node(
        "describe",
        echo,
        inputs={
            "value": "$expr{$var{index} + 1}/$expr{len($hier{planner}.tasks)}: "
            "$var{task.title} ($var{task.hours}h) $var{item}"
        },
    )
    flow = (
        FlowDefinition()
        .node("planner", make_plan)
        .for_each("per_task", "$expr{$hier{planner}.tasks[:$var{limit}]}", body, item_var="task", max_iterations=10)
        # literal list items may be templates, too; the loop variable 'item' shadows the initial input
        .for_each(
            "literal", ["$var{item}", "$expr{2 * 2}"], FlowDefinition().node("e", echo, inputs={"value": "$var{item}"})
        )
    )
    result = await _run(flow, tmp_path, limit=2, item="initial")
    assert result["flow.per_task"] == ["1/3: design (3.0h) initial", "2/3: build (5.0h) initial"]
    assert result.load_outcome("flow.per_task.1.describe") == "2/3: build (5.0h) initial"
    assert result["flow.literal"] == ["initial", 4]


@pytest.mark.anyio
async def test_template_error_names_the_node(tmp_path: Path) -> None:
    flow = (
        FlowDefinition()
        .node("count", word_count, inputs={"text": "a b"})
        .node("ratio", echo, inputs={"value": "ratio: $expr{$hier{count}.words / $var{zero}}"})
    )
    with pytest.raises(RunFailedError) as info:
        await _run(flow, tmp_path, zero=0)
    assert info.value.path == "flow.ratio"
    cause = info.value.__cause__
    assert isinstance(cause, TemplateError)
    assert cause.path == "flow.ratio"
    assert cause.expression == "$expr{$hier{count}.words / $var{zero}}"
    assert "ZeroDivisionError" in cause.message and "input 'value'" in cause.message
    run_dir = info.value.result.run_dir  # type: ignore[attr-defined]
    node_result = _json(run_dir / "flow" / "ratio" / "result.json")
    assert node_result["status"] == "failed" and node_result["error"]["type"] == "TemplateError"
    # Never rendered into a string: no outcome was written.
    assert not (run_dir / "flow" / "ratio" / "outcome.json").exists()


@pytest.mark.anyio
async def test_template_error_in_condition_and_loop_names_the_element(tmp_path: Path) -> None:
    branch = FlowDefinition().node("x", echo, inputs={"value": 1})
    cond = (
        FlowDefinition().node("a", echo, inputs={"value": 1}).conditional("check", "$expr{$var{missing} > 1}", branch)
    )
    with pytest.raises(RunFailedError) as info:
        await _run(cond, tmp_path)
    assert info.value.path == "flow.check"
    assert isinstance(info.value.__cause__, TemplateError)
    assert "neither a loop variable" in info.value.__cause__.message
    loop = (
        FlowDefinition()
        .node("a", echo, inputs={"value": 1})
        .for_each("loop", "$expr{range(10**12)}", branch, max_iterations=5)
    )
    with pytest.raises(RunFailedError) as info:
        await _run(loop, tmp_path)
    assert info.value.path == "flow.loop" and isinstance(info.value.__cause__, TemplateError)


@pytest.mark.anyio
async def test_outcomes_containing_templates_pass_through_literally(tmp_path: Path) -> None:
    def model_output() -> str:
        return "$expr{1+1} and $var{secret} and $hier{model}"

    flow = (
        FlowDefinition()
        .node("model", model_output)
        .node("whole", echo, inputs={"value": "$hier{model}"})
        .node("embedded", echo, inputs={"value": "said: $hier{model}"})
        .node("computed", echo, inputs={"value": "$expr{$hier{model}.upper()}"})
    )
    result = await _run(flow, tmp_path, secret="s3cret")
    assert result["flow.whole"] == "$expr{1+1} and $var{secret} and $hier{model}"
    assert result["flow.embedded"] == "said: $expr{1+1} and $var{secret} and $hier{model}"
    assert result["flow.computed"] == "$EXPR{1+1} AND $VAR{SECRET} AND $HIER{MODEL}"


@pytest.mark.anyio
async def test_nodes_render_their_own_templates_with_the_node_scope(tmp_path: Path) -> None:
    async def prompt_node(prompt: str, ctx: NodeContext) -> str:
        return str(render(prompt, ctx.scope, path=str(ctx.path)))

    body = FlowDefinition().node(
        "ask", prompt_node, inputs={"prompt": "Task $$var{index}: $$var{task.title} of $$expr{$$hier{planner}.tasks}"}
    )
    flow = (
        FlowDefinition()
        .node("planner", make_plan)
        .for_each("loop", "$expr{$hier{planner}.tasks}", body, item_var="task", max_iterations=5)
    )
    result = await _run(flow, tmp_path)
    # The binding renders "$$" to "$", so the node receives a template and renders it itself.
    assert result.load_outcome("flow.loop.0.ask") == "Task 0: design of " + json.dumps(
        [t.model_dump() for t in make_plan().tasks], separators=(",", ":")
    )

    async def broken(ctx: NodeContext) -> str:
        return str(render("$expr{1 +}", ctx.scope, path=str(ctx.path)))

    with pytest.raises(RunFailedError) as info:
        await _run(FlowDefinition().node("broken", broken), tmp_path)
    assert info.value.path == "flow.broken" and isinstance(info.value.__cause__, TemplateError)


@pytest.mark.anyio
async def test_documented_example(tmp_path: Path) -> None:
    # The example in docs/templates.md, run as written.
    def do_task(task: Task, label: str) -> str:
        return f"{label} [{task.hours}]"

    flow = (
        FlowDefinition()
        .node("planner", make_plan)
        .node(
            "summary",
            echo,
            inputs={
                "value": "$var{user} has $expr{len($hier{planner}.tasks)} tasks, "
                "$expr{sum([$hier{planner}.tasks[0].hours, 1])}h for the first with review",
            },
        )
        .conditional(
            "long",
            "$expr{$hier{planner}.outcome.tasks[0].hours > 2 && !$var{dry_run}}",
            FlowDefinition().node("warn", echo, inputs={"value": "first task: $hier{planner}"}),
        )
        .for_each(
            "per_task",
            "$expr{$hier{planner}.tasks[:$var{limit}]}",
            FlowDefinition().node(
                "do",
                do_task,
                inputs={"task": "$var{task}", "label": "$expr{$var{index} + 1}/$var{limit}: $var{task.title}"},
            ),
            item_var="task",
            max_iterations=20,
        )
    )
    result = await _run(flow, tmp_path, user="Ann", dry_run=False, limit=2)
    assert result["flow.summary"] == "Ann has 3 tasks, 4.0h for the first with review"
    assert result["flow.long"].startswith('first task: {"tasks":[{"title":"design","hours":3.0}')
    assert result["flow.per_task"] == ["1/2: design [3.0]", "2/2: build [5.0]"]


@pytest.mark.anyio
async def test_template_as_the_whole_input(tmp_path: Path) -> None:
    def greet(name: str, times: int) -> str:
        return name * times

    flow = FlowDefinition().node("greet", greet, inputs="$expr{{'name': $var{who}, 'times': 2}}")
    result = await _run(flow, tmp_path, who="ab")
    assert result["flow.greet"] == "abab"
