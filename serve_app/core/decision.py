"""Cheap decisions taken without the LLM: is this a product request, what are its price
and category constraints, which quick replies fit. Keywords plus embedding similarity to
a few intent prototypes, so nothing here adds a model call to the critical path."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

Intent = str  # "product" | "support" | "greeting" | "general"


class DecisionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    product_keywords: list[str] = Field(default_factory=lambda: [
        "buy", "purchase", "price", "cost", "cheap", "cheapest", "affordable", "recommend", "recommendation",
        "suggest", "looking for", "shop", "order", "deal", "discount", "gift", "under $", "budget", "product",
        "which one should i get", "best",
    ])
    prototypes: dict[str, list[str]] = Field(default_factory=lambda: {
        "product": ["I want to buy something", "Can you recommend a product for me?",
                    "What should I get as a gift?", "How much does it cost?", "Show me options under 50 dollars"],
        "support": ["Something is broken and not working", "I need help with a problem",
                    "My order has not arrived", "How do I fix this error?"],
        "greeting": ["Hello there!", "Hi, how are you?", "Good morning"],
    })
    # Cosine to the nearest prototype needed to take its intent.
    prototype_threshold: float = Field(default=0.55, ge=-1, le=1)
    max_products: int = Field(default=3, ge=1, le=20)


@dataclass(frozen=True)
class Constraints:
    price_min: float | None = None
    price_max: float | None = None
    category: str | None = None


@dataclass(frozen=True)
class Decision:
    intent: Intent
    wants_products: bool
    score: float  # similarity to the chosen prototype (1.0 for a keyword hit)
    constraints: Constraints = field(default_factory=Constraints)


_PRICE_MAX = re.compile(r"(?:under|below|less than|cheaper than|max(?:imum)?|up to|within)\s*\$?\s*(\d+(?:\.\d+)?)")
_PRICE_MIN = re.compile(r"(?:over|above|more than|at least|from)\s*\$?\s*(\d+(?:\.\d+)?)")


def has_product_keyword(text: str, keywords: list[str]) -> bool:
    lowered = f" {text.lower()} "
    return any(re.search(rf"(?<![a-z]){re.escape(k)}", lowered) for k in keywords)


def parse_constraints(text: str, categories: list[str]) -> Constraints:
    lowered = text.lower()
    price_max = _PRICE_MAX.search(lowered)
    price_min = _PRICE_MIN.search(lowered)
    category = next((c for c in sorted(categories, key=len, reverse=True) if c.lower() in lowered), None)
    return Constraints(
        price_min=float(price_min.group(1)) if price_min else None,
        price_max=float(price_max.group(1)) if price_max else None,
        category=category,
    )


def decide(
    text: str, vector: np.ndarray | None, prototypes: dict[str, np.ndarray], categories: list[str],
    settings: DecisionSettings,
) -> Decision:
    """`prototypes` maps an intent to a matrix of normalised prototype vectors."""
    best_intent, best = "general", -1.0
    if vector is not None:
        for intent, matrix in prototypes.items():
            score = float(np.max(matrix @ vector)) if len(matrix) else -1.0
            if score > best:
                best_intent, best = intent, score
        if best < settings.prototype_threshold:
            best_intent = "general"
    keyword = has_product_keyword(text, settings.product_keywords)
    if keyword:
        best_intent, best = "product", max(best, 1.0)
    wants = best_intent == "product"
    return Decision(best_intent, wants, round(best, 4), parse_constraints(text, categories) if wants else Constraints())


QUICK_REPLIES: dict[str, list[str]] = {
    "product": ["Show me cheaper options", "Compare the top two", "What do other people buy with it?"],
    "support": ["That fixed it, thanks", "It still doesn't work", "Can I talk to a person?"],
    "greeting": ["What can you do?", "Recommend me something", "Tell me what you remember about me"],
    "general": ["Tell me more", "Can you give an example?", "Summarize that in one line"],
}


def quick_replies(decision: Decision, product_names: list[str]) -> list[str]:
    """2-4 follow-ups from templates keyed by the decided intent."""
    replies = list(QUICK_REPLIES.get(decision.intent, QUICK_REPLIES["general"]))
    if product_names:
        replies.insert(0, f"Tell me more about {product_names[0]}")
    return replies[:4]
