"""``Parameter`` and ``Module``: the learnable values of a program and the object that holds
them, as in PyTorch.

::

    class Classifier(Module):
        def __init__(self, model: ChatModel) -> None:
            super().__init__()
            self.system = Parameter("Classify the sentiment.", role="system prompt for sentiment")
            self.chat = ChatCompletion(model)

        def forward(self, text: Variable) -> Variable:
            return self.chat(text, system=self.system, role="sentiment label")

    classifier = Classifier(model)
    dict(classifier.named_parameters())     # {"system": Parameter(...)}
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from reprise.optim._variable import Value, Variable

__all__ = ["Module", "Parameter"]


class Parameter(Variable):
    """A Variable that requires grad, made to be registered on a :class:`Module` and changed
    by an optimiser."""

    def __init__(self, data: Value, role: str = "", requires_grad: bool = True) -> None:
        super().__init__(data, role=role, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return f"Parameter(data={self.data}, role={self.role}, requires_grad={self.requires_grad})"


class Module:
    """Base class of programs with learnable prompts: assigning a :class:`Parameter` or another
    Module to an attribute registers it; :meth:`named_parameters` finds them all, sub-modules
    included, by dotted name. Subclasses implement :meth:`forward`; calling the module calls it."""

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})

    def __setattr__(self, name: str, value: Any) -> None:
        registry = self.__dict__.get("_parameters")
        if registry is None:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() before setting {name!r}")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    _parameters: dict[str, Parameter]
    _modules: dict[str, Module]

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """``(dotted name, parameter)`` for every parameter, each once, in registration order."""
        seen: set[int] = set()
        for name, parameter in self._named(prefix):
            if id(parameter) not in seen:
                seen.add(id(parameter))
                yield name, parameter

    def _named(self, prefix: str) -> Iterator[tuple[str, Parameter]]:
        for name, parameter in self._parameters.items():
            yield prefix + name, parameter
        for name, module in self._modules.items():
            yield from module._named(f"{prefix}{name}.")

    def parameters(self) -> Iterator[Parameter]:
        """Every parameter (see :meth:`named_parameters`)."""
        for _, parameter in self.named_parameters():
            yield parameter

    def state_dict(self) -> dict[str, Value]:
        """The value of every parameter by name, to save or restore with :meth:`load_state_dict`."""
        return {name: _copy(p.data) for name, p in self.named_parameters()}

    def load_state_dict(self, state: dict[str, Value]) -> None:
        """Set parameters from :meth:`state_dict`; every name must be a parameter of the module."""
        parameters = dict(self.named_parameters())
        unknown = sorted(set(state) - set(parameters))
        if unknown:
            raise KeyError(f"not parameters of {type(self).__name__}: {', '.join(unknown)}")
        for name, value in state.items():
            parameters[name].copy_(value)

    def zero_grad(self) -> None:
        """Forget the feedback gathered on every parameter."""
        for parameter in self.parameters():
            parameter.zero_grad()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The computation; subclasses define it."""
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)


def _copy(value: Value) -> Value:
    return list(value) if isinstance(value, list) else value
