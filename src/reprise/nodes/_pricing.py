"""Token prices, to turn a model call's usage into a cost in US dollars.

A :class:`PriceTable` maps model names to :class:`ModelPrice` (dollars per million input and
output tokens). A model name matches its exact entry, else the longest entry it starts with, so
``gpt-4o-2024-08-06`` is priced as ``gpt-4o``. Unknown models have no cost (``None``), never a
guessed one.

The built-in entries are list prices taken from the providers' pricing pages (``PRICES_AS_OF``);
prices change, so check them and override what you use::

    from reprise.nodes import register_price
    register_price("my-finetune", input_per_mtok=0.30, output_per_mtok=1.20)

``register_price`` changes :data:`DEFAULT_PRICES`, the table every AI model node uses unless it is
given its own (``AIModelNode(..., prices=PriceTable({...}))``). Prices are configuration, not run
state: they are shared by all runs in the process, like the model names themselves.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["DEFAULT_PRICES", "PRICES_AS_OF", "ModelPrice", "PriceTable", "register_price"]

PRICES_AS_OF = "2025-11"

# What may follow a priced name in a dated or pinned model name.
_VERSION_SUFFIX = re.compile(r"-(?:\d{8}|\d{4}-\d{2}-\d{2}|\d{4}|latest)")


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """US dollars per million input tokens and per million output tokens."""

    input_per_mtok: float
    output_per_mtok: float

    def __post_init__(self) -> None:
        if self.input_per_mtok < 0 or self.output_per_mtok < 0:
            raise ValueError("prices must be >= 0")

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """The cost of a call with this usage, in US dollars."""
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1_000_000


class PriceTable:
    """Model name -> :class:`ModelPrice`; dated or pinned names match their base entry."""

    def __init__(self, prices: Mapping[str, ModelPrice | tuple[float, float]] | None = None) -> None:
        self._prices: dict[str, ModelPrice] = {}
        self._lock = threading.Lock()
        for model, price in (prices or {}).items():
            self.register(
                model, *(price if isinstance(price, tuple) else (price.input_per_mtok, price.output_per_mtok))
            )

    def register(self, model: str, input_per_mtok: float, output_per_mtok: float) -> None:
        """Set the price of ``model`` (and of its dated versions, unless they have their own)."""
        if not model:
            raise ValueError("model name must not be empty")
        price = ModelPrice(float(input_per_mtok), float(output_per_mtok))
        with self._lock:
            self._prices[model] = price

    def price_for(self, model: str | None) -> ModelPrice | None:
        """The price of ``model``: its own entry, else the entry it is a dated version of."""
        if not model:
            return None
        prices = self._prices
        exact = prices.get(model)
        if exact is not None:
            return exact
        match = _VERSION_SUFFIX.search(model)
        while match is not None:
            if _VERSION_SUFFIX.fullmatch(model, match.start()):
                return prices.get(model[: match.start()])
            match = _VERSION_SUFFIX.search(model, match.start() + 1)
        return None

    def cost(self, model: str | None, input_tokens: int | None, output_tokens: int | None) -> float | None:
        """The cost of a call in US dollars, or ``None`` if the model or the usage is unknown."""
        price = self.price_for(model)
        if price is None or input_tokens is None or output_tokens is None:
            return None
        return price.cost(input_tokens, output_tokens)

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self.price_for(model) is not None

    def __repr__(self) -> str:
        return f"PriceTable({len(self._prices)} models)"


#: The table nodes use by default. Entries: (input, output) US dollars per million tokens.
DEFAULT_PRICES = PriceTable(
    {
        "gpt-4o": (2.50, 10.00),
        "gpt-4o-mini": (0.15, 0.60),
        "gpt-4.1": (2.00, 8.00),
        "gpt-4.1-mini": (0.40, 1.60),
        "gpt-4.1-nano": (0.10, 0.40),
        "o3": (2.00, 8.00),
        "o3-mini": (1.10, 4.40),
        "o4-mini": (1.10, 4.40),
        "claude-opus-4-5": (5.00, 25.00),
        "claude-sonnet-4-5": (3.00, 15.00),
        "claude-haiku-4-5": (1.00, 5.00),
        "claude-opus-4-1": (15.00, 75.00),
        "claude-opus-4": (15.00, 75.00),
        "claude-sonnet-4": (3.00, 15.00),
        "claude-3-7-sonnet": (3.00, 15.00),
        "claude-3-5-sonnet": (3.00, 15.00),
        "claude-3-5-haiku": (0.80, 4.00),
        "claude-3-haiku": (0.25, 1.25),
    }
)


def register_price(model: str, input_per_mtok: float, output_per_mtok: float) -> None:
    """Add or change a price in :data:`DEFAULT_PRICES` (US dollars per million tokens)."""
    DEFAULT_PRICES.register(model, input_per_mtok, output_per_mtok)
