"""The instructions reprise.optim gives the models that write feedback and rewrite values.

The method is TextGrad's (Yuksekgonul et al., "Optimizing generative AI by backpropagating
language model feedback", Nature 2025): feedback on an output is turned into feedback on each
input by showing a model the whole call and asking how that input should change; an optimiser
model then rewrites each value from the feedback it gathered. Answers are asked for between tags,
so that an answer without them is recognised as unusable instead of being taken as a prompt.
"""

from __future__ import annotations

__all__ = [
    "SCORE_TAGS",
    "BACKWARD_SYSTEM",
    "FEEDBACK_TAGS",
    "JUDGE_SYSTEM",
    "OPTIMIZER_SYSTEM",
    "VALUE_TAGS",
    "backward_prompt",
    "between",
    "judge_prompt",
    "step_prompt",
]

FEEDBACK_TAGS = ("<FEEDBACK>", "</FEEDBACK>")
VALUE_TAGS = ("<IMPROVED_VARIABLE>", "</IMPROVED_VARIABLE>")
SCORE_TAGS = ("<SCORE>", "</SCORE>")

BACKWARD_SYSTEM = (
    "You help improve a system made of language-model calls. You are shown one call (its system "
    "message, its input and its output), feedback on that output, and one part of the call that "
    "can be changed. Explain how that part should change so that the output earns better feedback. "
    "Be specific and brief; do not rewrite the part yourself. Put your feedback between "
    f"{FEEDBACK_TAGS[0]} and {FEEDBACK_TAGS[1]}."
)

OPTIMIZER_SYSTEM = (
    "You improve one piece of text of a system made of language-model calls, using feedback that "
    "was gathered on it. Keep what works, change what the feedback asks for, and respect every "
    f"constraint. Give only the new text, between {VALUE_TAGS[0]} and {VALUE_TAGS[1]}."
)

JUDGE_SYSTEM = (
    "You evaluate an answer against the criteria you are given. Give a score between 0 and 1 "
    f"between {SCORE_TAGS[0]} and {SCORE_TAGS[1]}, and feedback that says what to improve between "
    f"{FEEDBACK_TAGS[0]} and {FEEDBACK_TAGS[1]}."
)


def backward_prompt(
    *, system: str | None, prompt: str, output: str, output_role: str, feedback: str, variable_role: str, value: str
) -> str:
    """The question asked of the backward model for one input of a chat completion."""
    return (
        "<CALL>\n"
        f"<SYSTEM_MESSAGE>{system or ''}</SYSTEM_MESSAGE>\n"
        f"<INPUT>{prompt}</INPUT>\n"
        f'<OUTPUT role="{output_role}">{output}</OUTPUT>\n'
        "</CALL>\n\n"
        f"<OUTPUT_FEEDBACK>{feedback}</OUTPUT_FEEDBACK>\n\n"
        f"The part to improve is the {variable_role}:\n"
        f"<VARIABLE>{value}</VARIABLE>\n\n"
        f"How should the {variable_role} change to address the feedback on the output?"
    )


def step_prompt(*, role: str, value: str, feedback: str, constraints: list[str], history: list[str]) -> str:
    """The request to the optimiser model to rewrite one parameter."""
    parts = [
        f"The text to improve is the {role}:\n<VARIABLE>{value}</VARIABLE>\n",
        f"Feedback gathered on it:\n<FEEDBACK_ON_VARIABLE>{feedback}</FEEDBACK_ON_VARIABLE>\n",
    ]
    if history:
        past = "\n".join(f"<PAST_VALUE>{v}</PAST_VALUE>" for v in history)
        parts.append(f"Earlier values, oldest first (do not go back to one that did worse):\n{past}\n")
    if constraints:
        listed = "\n".join(f"Constraint {i}: {c}" for i, c in enumerate(constraints, 1))
        parts.append(f"The new text must respect:\n{listed}\n")
    parts.append(f"Write the improved {role} between {VALUE_TAGS[0]} and {VALUE_TAGS[1]}.")
    return "\n".join(parts)


def judge_prompt(*, criteria: str, role: str, answer: str, reference: str | None) -> str:
    """The request to a model-as-judge."""
    text = f"Criteria: {criteria}\n\nThe {role} to evaluate:\n<ANSWER>{answer}</ANSWER>\n"
    if reference is not None:
        text += f"\nA reference answer:\n<REFERENCE>{reference}</REFERENCE>\n"
    return text


def between(text: str, tags: tuple[str, str]) -> str | None:
    """The text between the last opening tag and the closing tag after it, stripped; ``None`` if
    either is missing or nothing is between them."""
    start = text.rfind(tags[0])
    if start < 0:
        return None
    end = text.find(tags[1], start)
    if end < 0:
        return None
    inner = text[start + len(tags[0]) : end].strip()
    return inner or None
