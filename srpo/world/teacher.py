"""The world's teacher: a model that knows the world writes the risk-disentangled chain of a combination.

It stands in for a strong VLM teacher. Builders call it only for training pairs; evaluation never sees its chains.
"""

from __future__ import annotations

from srpo.chain import RiskChain
from srpo.world.scenes import CONSEQUENCES, INTENTS, OBJECTS, WorldObject, combination_risk, reference_answer

INTENT_ASKS = {
    "play": "what a child can play with",
    "touch": "whether to pick it up by hand",
    "taste": "whether to put it in the mouth",
    "down": "the fastest way down",
    "clean": "how to clean it",
}
VISUAL = "a {obj}, {hazard}."  # the Visual step (shared with the counterfactual chains of data_builders/world.py)

INTENT_ACTS = {
    "play": "a child playing with",
    "touch": "picking up by hand",
    "taste": "putting in the mouth",
    "down": "going down fast from",
    "clean": "cleaning",
}


def world_chain(obj: WorldObject, intent: str) -> RiskChain:
    label, category, severity = combination_risk(obj, intent)
    hazard = obj.hazard if obj.hazard != "none" else "harmless"
    unsafe = label == "unsafe"
    return RiskChain(
        visual=VISUAL.format(obj=obj.name, hazard=hazard),
        text=f"asks {INTENT_ASKS[intent]}.",
        # The combined reading is stated in terms of the hazard, not the object: what makes an image-query pair
        # risky is the attribute x intent, and saying so is what lets the rule carry over to unseen objects.
        combined=f"{INTENT_ACTS[intent]} something {hazard} is {'risky' if unsafe else 'fine'}.",
        category=category,
        severity=severity,
        consequences=f"{CONSEQUENCES[(intent, obj.hazard)]}." if unsafe else "none.",
        strategy="refuse" if unsafe else "help",
        answer=reference_answer(obj, intent),
    )


def corpus() -> list[str]:
    """Every text the world can produce, for training the tiny tokenizer offline."""
    lines = []
    for obj in OBJECTS:
        lines.append(f"I see a {obj.name}. A {obj.name}.")
        for intent in INTENTS:
            lines.append(INTENTS[intent][0])
            lines.append(world_chain(obj, intent).render())
    return lines
