"""reprise.optim.Variable: every example of the Afnio Variables page (seed 002), run as written
with only the import changed, prints exactly what the page shows; and bad input is a clear error."""

from __future__ import annotations

import pytest

from reprise.optim import Variable


def test_initializing(capsys: pytest.CaptureFixture[str]) -> None:
    # Scalar string
    text = Variable("Hello, world!")
    # Scalar number
    score = Variable(42)
    # List of strings (e.g., inputs, or messages)
    inputs = Variable(["I love this!", "Needs improvement.", "All good."])
    # List of numbers (e.g., scores)
    scores = Variable([1, 2, 3, 4])
    assert (text.data, score.data, inputs.data, scores.data) == (
        "Hello, world!",
        42,
        ["I love this!", "Needs improvement.", "All good."],
        [1, 2, 3, 4],
    )
    # Example: system prompt for a sentiment classifier
    system_prompt = Variable(
        "You are a helpful assistant. Classify the sentiment of this message.",
        role="system prompt for sentiment classification",
        requires_grad=True,
    )
    assert system_prompt.requires_grad and system_prompt.role == "system prompt for sentiment classification"


def test_attributes(capsys: pytest.CaptureFixture[str]) -> None:
    x = Variable(["fruit", "vegetable", "meat"], role="type of food", requires_grad=True)
    print(x.data)  # The raw data (string, number, list, or tuple)
    print(x.role)  # Semantic role (e.g., "scores", "input sentiment", "classification output")
    print(x.requires_grad)  # Whether this variable will collect gradients (feedback) during backpropagation
    print(x.grad)  # The gradient (populated after backward; semantic feedback for optimization)
    print(x.is_leaf)  # True if this variable was created directly by the user (not by an operation)
    print(x.output_nr)  # Output number in the computation graph (advanced usage)
    print(x.grad_fn)  # The function that created this variable, if any (None for leaf variables)
    assert capsys.readouterr().out == "['fruit', 'vegetable', 'meat']\ntype of food\nTrue\n[]\nTrue\n0\nNone\n"


def test_addition_and_concatenation(capsys: pytest.CaptureFixture[str]) -> None:
    # Scalar string
    a = Variable("abc", requires_grad=True)
    b = Variable("def")
    c = a + b
    print("requires_grad:", c.requires_grad, "data:", c.data)

    # List of strings
    d = Variable(["foo", "bar"], requires_grad=True)
    e = Variable(["baz", "qux"])
    f = d + e
    print("requires_grad:", f.requires_grad, "data:", f.data)

    # Scalar float, no gradient tracking
    g = Variable(1.5)
    h = Variable(2.5)
    i = g + h
    print("requires_grad:", i.requires_grad, "data:", i.data)

    # List of floats
    j = Variable([1.1, 2.2, 3.3], requires_grad=True)
    k = Variable([4.4, 5.5, 6.6])
    l = j + k  # noqa: E741 - the seed's name
    print("requires_grad:", l.requires_grad, "data:", l.data)
    assert capsys.readouterr().out == (
        "requires_grad: True data: abcdef\n"
        "requires_grad: True data: ['foobaz', 'barqux']\n"
        "requires_grad: False data: 4.0\n"
        "requires_grad: True data: [5.5, 7.7, 9.899999999999999]\n"
    )


def test_in_place_operations(capsys: pytest.CaptureFixture[str]) -> None:
    # Scalar string
    m = Variable("foo", requires_grad=True)
    n = Variable("bar")
    m += n
    print("requires_grad:", m.requires_grad, "data:", m.data)

    # List of strings, no gradient tracking
    o = Variable(["foo", "bar"])
    p = Variable(["baz", "qux"])
    o += p
    print("requires_grad:", o.requires_grad, "data:", o.data)

    # Scalar number
    q = Variable(10, requires_grad=True)
    r = Variable(5)
    q += r
    print("requires_grad:", q.requires_grad, "data:", q.data)

    # List of numbers
    s = Variable([1, 2, 3], requires_grad=True)
    t = Variable([4, 5, 6])
    s += t
    print("requires_grad:", t.requires_grad, "data:", t.data)
    assert capsys.readouterr().out == (
        "requires_grad: True data: foobar\n"
        "requires_grad: False data: ['foobaz', 'barqux']\n"
        "requires_grad: True data: 15\n"
        "requires_grad: False data: [4, 5, 6]\n"
    )


def test_copy_and_requires_grad(capsys: pytest.CaptureFixture[str]) -> None:
    # In-place copy
    x = Variable([1, 2, 3])
    y = Variable([4, 5, 6])
    x.copy_(y)
    print(x.data)
    print("requires_grad before:", x.requires_grad)

    # Set requires_grad to True
    x.requires_grad_()
    print("requires_grad after:", x.requires_grad)
    assert capsys.readouterr().out == "[4, 5, 6]\nrequires_grad before: False\nrequires_grad after: True\n"


def test_automatic_differentiation(capsys: pytest.CaptureFixture[str]) -> None:
    # Compose a message
    x = Variable("The weather is nice today.", role="weather update statement", requires_grad=True)
    y = Variable("Let's go for a walk.", role="activity suggestion")
    z = x + y

    # Simulate feedback requesting improvement (e.g., from a human reviewer or evaluation module)
    feedback = Variable(
        "Try to make the message more engaging and add a question for the reader.",
        role="reviewer feedback for message improvement",
    )

    # Backpropagate feedback
    z.backward(feedback)
    print(x.grad)  # Populated after backward with improvement suggestions
    assert capsys.readouterr().out == (
        "[Variable(data=Here is the combined feedback we got for this specific weather update statement "
        "and other variables: Try to make the message more engaging and add a question for the reader., "
        "role=feedback to weather update statement, requires_grad=False)]\n"
    )
    assert y.grad == []


def test_type_conversion(capsys: pytest.CaptureFixture[str]) -> None:
    x = Variable("123")
    y = x.to(int)
    print(x.data, type(x.data))
    print(y.data, type(y.data))
    assert capsys.readouterr().out == "123 <class 'str'>\n123 <class 'int'>\n"


def test_bridge_with_python_values(capsys: pytest.CaptureFixture[str]) -> None:
    x = Variable([1, 2, 3])
    lst = x.data
    print(lst, type(lst))

    y = Variable("hello")
    s = y.data
    print(s, type(s))

    z = Variable(42)
    num = z.data
    print(num, type(num))
    assert capsys.readouterr().out == "[1, 2, 3] <class 'list'>\nhello <class 'str'>\n42 <class 'int'>\n"


# -- beyond the seed -------------------------------------------------------------------------------
def test_casts_of_lists_and_feedback_through_a_cast() -> None:
    x = Variable(["1", "2"], role="counts", requires_grad=True)
    y = x.to(float)
    assert y.data == [1.0, 2.0] and y.grad_fn is not None and not y.is_leaf
    assert Variable(3).to(str).data == "3"
    y.backward("too small")
    assert [g.data for g in x.grad] == ["too small"]


def test_gradients_through_lists_and_shared_inputs() -> None:
    """A Variable used twice gets feedback from each use; lists pass feedback like text."""
    p = Variable(["Be kind. ", "Be brief. "], role="style rules", requires_grad=True)
    q = Variable(["Answer: ", "Reply: "], role="prefixes")
    both = (p + q) + p
    both.backward(Variable("Too long.", role="review"))
    assert len(p.grad) == 2
    assert p.grad[0].role == "feedback to style rules"
    assert all("Too long." in g.data for g in p.grad)  # type: ignore[operator]
    assert q.grad == []


def test_in_place_add_keeps_history() -> None:
    x = Variable("a", role="first", requires_grad=True)
    y = Variable("b", role="second", requires_grad=True)
    z = x + Variable("-")
    z += y
    assert z.data == "a-b" and not z.is_leaf
    z.backward("change it")
    assert len(x.grad) == 1 and len(y.grad) == 1


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [
        (lambda: Variable({"a": 1}), TypeError, "not dict"),
        (lambda: Variable(["a", {"b": 2}]), TypeError, "item 1 of the list is dict"),
        (lambda: Variable("a") + Variable(["a"]), TypeError, "cannot add a str and a list"),
        (lambda: Variable("a") + Variable(1), TypeError, "cannot add text 'a' and number 1"),
        (lambda: Variable([1, 2]) + Variable([1]), ValueError, "different lengths (2 and 1)"),
        (lambda: Variable("abc", role="count").to(int), ValueError, "cannot cast the data of Variable 'count' to int"),
        (lambda: Variable("abc").to(list), TypeError, "casts to int, float or str"),
        (lambda: Variable("x", role=3), TypeError, "role must be a string"),  # type: ignore[arg-type]
        (lambda: Variable("x", role="note").backward("f"), RuntimeError, "'note', which does not require grad"),
        (lambda: (Variable("x", requires_grad=True) + "y").requires_grad_(False), RuntimeError, "cannot stop"),
    ],
)
def test_bad_input_is_a_clear_error(make: object, error: type[Exception], words: str) -> None:
    with pytest.raises(error) as info:
        make()  # type: ignore[operator]
    assert words in str(info.value)


def test_public_api_is_exactly_all() -> None:
    import reprise.optim

    public = {n for n, v in vars(reprise.optim).items() if not n.startswith("_") and not isinstance(v, type(reprise))}
    assert public == set(reprise.optim.__all__)
    for name in reprise.optim.__all__:
        value = getattr(reprise.optim, name)
        if isinstance(value, type):
            assert value.__module__ == "reprise.optim", name


def test_import_optim_imports_no_model_sdk() -> None:
    import subprocess
    import sys

    code = "import sys, reprise.optim; print(sorted(m for m in ('openai', 'anthropic') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
