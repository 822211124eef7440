"""Learnable prompts: Variables, textual gradients and optimisers over reprise runs.

::

    from reprise.optim import Variable

    x = Variable("The weather is nice today.", role="weather update statement", requires_grad=True)
    z = x + Variable(" Let's go for a walk.", role="activity suggestion")
    z.backward(Variable("Add a question for the reader.", role="reviewer feedback"))
    print(x.grad)

See docs/optimisation.md.
"""

from reprise.optim._chat import ChatBackward, ChatCompletion
from reprise.optim._errors import OptimizationError
from reprise.optim._evaluators import ExactMatch, FunctionEvaluator, ModelJudge
from reprise.optim._flow import GRADIENTS_FILE, FlowModule
from reprise.optim._model import CallRecord, ChatModel
from reprise.optim._module import Module, Parameter
from reprise.optim._optimizer import TGD, ParameterVersion
from reprise.optim._store import ParameterHistory
from reprise.optim._trainer import Trainer, TrainingResult
from reprise.optim._variable import GradFn, Variable

__all__ = [
    "GRADIENTS_FILE",
    "TGD",
    "CallRecord",
    "ChatBackward",
    "ChatCompletion",
    "ChatModel",
    "ExactMatch",
    "FlowModule",
    "FunctionEvaluator",
    "GradFn",
    "ModelJudge",
    "Module",
    "OptimizationError",
    "Parameter",
    "ParameterHistory",
    "ParameterVersion",
    "Trainer",
    "TrainingResult",
    "Variable",
]

for _name in __all__:
    if isinstance(globals()[_name], type):
        globals()[_name].__module__ = __name__
del _name
