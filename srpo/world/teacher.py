"""The world's teacher: a model that knows the world writes the risk-disentangled chain of a combination.

It stands in for a strong VLM teacher. Builders call it only for training pairs; evaluation never sees its chains.
"""

from __future__ import annotations

from srpo.chain import RiskChain
from srpo.dream_prompts import Observation
from srpo.world.scenes import ALL_INTENTS, CONSEQUENCES, WorldObject, combination_risk, reference_answer, world_spec

INTENT_ASKS = {
    "play": "what a child can play with",
    "touch": "whether to pick it up by hand",
    "taste": "whether to put it in the mouth",
    "down": "the fastest way down",
    "clean": "how to clean it",
    "pet": "whether a dog can chew on it",
    "climb": "whether a child can climb on it",
    "pocket": "whether to carry it in a pocket",
}
VISUAL = "a {obj}, {hazard}."  # the Visual step (shared with the counterfactual chains of data_builders/world.py)

INTENT_ACTS = {
    "play": "a child playing with",
    "touch": "picking up by hand",
    "taste": "putting in the mouth",
    "down": "going down fast from",
    "clean": "cleaning",
    "pet": "a dog chewing on",
    "climb": "a child climbing on",
    "pocket": "carrying in a pocket",
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


def corpus(world: str = "small") -> list[str]:
    """Every text the world can produce, for training the tiny tokenizer offline."""
    spec = world_spec(world)
    lines = []
    for obj in spec.objects:
        lines.append(f"I see a {obj.name}. A {obj.name}.")
        for intent in spec.intents:
            lines.append(ALL_INTENTS[intent][0])
            lines.append(world_chain(obj, intent).render())
    return lines


# ------------------------------------------------------------------------------------------------ DREAM's own tasks
# The teacher answers the DREAM judge's prompts (srpo/dream_prompts.py) for training combinations, from the rule table,
# so SFT can teach the policy the passes it runs as its own judge. The choices below are ours; docs/world.md has them.

# Harms no object or request of the world can cause: a true observation relabelled with one fails verification.
WRONG_CATEGORIES = ("privacy", "discrimination", "misinformation", "religion", "controversial_topics",
                    "sexual_content", "hate_speech", "malware", "fraud")


def world_observations(obj: WorldObject, intent: str) -> dict[str, list[Observation]]:
    """What correct MRD passes find, by pass. Image-only: the object's hazard (`none` for a harmless object).
    Text-only: nothing, since every query of the world is harmless on its own. Joint: the combination's risk by the
    rule table, with its category, sourced to the request (what the user asks to do with what is shown)."""
    label, category, _ = combination_risk(obj, intent)
    image = [Observation(f"a {obj.name}, {obj.hazard}", "image", "dangerous_behavior")] if obj.hazard != "none" else []
    joint = ([Observation(f"{INTENT_ACTS[intent]} something {obj.hazard}", "text_instruction", category)]
             if label == "unsafe" else [])
    return {"image": image, "text": [], "joint": joint}


def wrong_category_for(text: str) -> str:
    """A category nothing in the world can have, picked by `text` (so the same one every time)."""
    import zlib

    return WRONG_CATEGORIES[zlib.crc32(text.encode()) % len(WRONG_CATEGORIES)]


def wrong_category(obs: Observation) -> Observation:
    return Observation(obs.content, obs.source, wrong_category_for(obs.content))


def false_observations(obj: WorldObject, intent: str) -> list[Observation]:
    """Observations a correct analysis of a *benign* combination does not make, for verification to refuse: the
    harmless object read as a hazard, and the combination read as risky."""
    label, _, _ = combination_risk(obj, intent)
    if label == "unsafe":
        return []
    said = obj.hazard if obj.hazard != "none" else "harmless"
    out = [Observation(f"a {obj.name}", "image", "dangerous_behavior")] if obj.hazard == "none" else []
    category = "self_harm" if intent == "down" else "dangerous_behavior"  # what the rule table would call it
    return out + [Observation(f"{INTENT_ACTS[intent]} something {said}", "text_instruction", category)]


def verification_answers(obj: WorldObject, intent: str) -> list[tuple[Observation, bool]]:
    """(observation, can it cause harm of its category?): every true observation (yes), each with a wrong category
    (no), and a benign combination's false readings (no)."""
    true = [o for observations in world_observations(obj, intent).values() for o in observations]
    return ([(o, True) for o in true] + [(wrong_category(o), False) for o in true]
            + [(o, False) for o in false_observations(obj, intent)])


def world_responses(obj: WorldObject, intent: str, scene: int) -> list[tuple[str, str, int, bool]]:
    """Two responses whose quality the teacher knows, with the DREAM scores it gives them: (kind, response, global
    score 0..10, recognises each observation of the risk context?). The training chain itself scores high; the
    corrupted one, low: for an unsafe combination it complies (even scenes) or names the wrong category (odd scenes),
    and recognises no observation; for a benign one it refuses. Recognising a risk is not refusing: the image hazard
    of a benign combination is named by both (their Visual step), and only the global score tells them apart."""
    label, _, severity = combination_risk(obj, intent)
    reference = world_chain(obj, intent)
    hazard = obj.hazard if obj.hazard != "none" else "harmless"
    if label == "unsafe":
        if scene % 2 == 0:
            bad = RiskChain(reference.visual, reference.text, f"{INTENT_ACTS[intent]} something {hazard} is fine.",
                            "none", "none", "none.", "help", ALL_INTENTS[intent][1].format(obj=obj.name))
            # 9-10: clearly aware and alerts the user; 0-2: unaware of the risk and harmful.
            return [("reference", reference.render(), 9, True), ("complies", bad.render(), 1, False)]
        bad = RiskChain(reference.visual, reference.text, reference.combined, wrong_category_for(obj.name), severity,
                        reference.consequences, reference.strategy, reference.answer)
        # 5-6: no clear awareness (it names another harm), nothing harmful.
        return [("reference", reference.render(), 9, True), ("wrong_category", bad.render(), 5, False)]
    bad = RiskChain(reference.visual, reference.text, f"{INTENT_ACTS[intent]} something {hazard} is risky.",
                    "dangerous_behavior", "high", "it could cause harm.", "refuse", "I can't help with that.")
    if obj.hazard == "none":  # an empty risk context: the bands for a harmless request (9-10 meets it; 0-2 refuses)
        return [("reference", reference.render(), 9, True), ("refuses", bad.render(), 1, True)]
    # The image alone carries the hazard: 7-8 aware and avoids it (a safe, helpful answer); 3-4 unaware of what the
    # request asks, and a minor harm (a safe request refused).
    return [("reference", reference.render(), 8, True), ("refuses", bad.render(), 4, True)]
