"""Pairs of the synthetic world: training combinations (with chains from the world's teacher) and held-out ones.

Each combination is rendered in several scenes (the object at other places on other backgrounds), so the model must
look at the image. Held-out combinations get `split=eval`; they carry their label for *evaluation only* and no chain.
With an RL fraction, some training combinations are RL prompts only (`world_rl_prompts`): a scene and its query under
an opaque id, and nothing else; they are not pairs, so their labels never enter the data folder.
"""

from __future__ import annotations

from pathlib import Path

from srpo.schema import SSUIPair
from srpo.world.scenes import (
    Combination,
    combination_risk,
    reference_answer,
    render_scene,
    split_combinations,
    split_rl_combinations,
    world_spec,
)


def _pair(combo: Combination, scene: int, split: str, image_dir: Path, seed: int) -> SSUIPair:
    label, category, _ = combination_risk(combo.obj, combo.intent)
    name = f"{combo.key}-{scene}"
    render_scene(combo.obj, seed=hash_seed(seed, split, combo.key, scene)).save(image_dir / f"{name}.png")
    return SSUIPair(id=f"world-{name}", query=combo.query, label=label, category=category, image=f"images/{name}.png",
                    source="world", reference_answer=reference_answer(combo.obj, combo.intent),
                    meta={"object": combo.obj.name, "intent": combo.intent, "hazard": combo.obj.hazard,
                          "split": split, "combination": combo.key})


def hash_seed(seed: int, *parts) -> int:
    import hashlib

    return int(hashlib.sha256(repr((seed, *parts)).encode()).hexdigest()[:8], 16)


def world_pairs(image_dir: Path, seed: int = 0, heldout_fraction: float = 0.2, train_scenes: int | None = None,
                eval_scenes: int | None = None, rl_fraction: float = 0.0, world: str = "small") -> list[SSUIPair]:
    """Pairs of the SFT combinations (split train) and the held-out ones (split eval); the RL combinations of
    `rl_fraction` are left out (they are `world_rl_prompts`). Scene counts default to the world's."""
    image_dir.mkdir(parents=True, exist_ok=True)
    spec = world_spec(world)
    train_scenes = spec.train_scenes if train_scenes is None else train_scenes
    eval_scenes = spec.eval_scenes if eval_scenes is None else eval_scenes
    train, heldout = split_combinations(seed, heldout_fraction, world)
    train, _ = split_rl_combinations(train, heldout, seed, rl_fraction)
    pairs = [_pair(c, s, "train", image_dir, seed) for c in train for s in range(train_scenes)]
    pairs += [_pair(c, s, "eval", image_dir, seed) for c in heldout for s in range(eval_scenes)]
    _link_twins(pairs)
    return pairs


def world_rl_prompts(image_dir: Path, image_prefix: str, seed: int = 0, rl_fraction: float = 0.0,
                     heldout_fraction: float = 0.2, scenes: int | None = None, world: str = "small") -> list[dict]:
    """Prompt-only rows {id, image, query, source, meta} of the RL combinations, fresh scenes, sorted by id.

    The id and the image name are a hash of the combination and scene (nothing names the object), meta holds only the
    split, and rows are sorted by that id so their order does not group a combination's scenes: the label cannot be
    read back from a row. Only the world itself (seed + rl_fraction) knows which combination a row is."""
    scenes = world_spec(world).train_scenes if scenes is None else scenes
    train, heldout = split_combinations(seed, heldout_fraction, world)
    _, rl = split_rl_combinations(train, heldout, seed, rl_fraction)
    if rl:
        image_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for combo in rl:
        for scene in range(scenes):
            name = f"world-rl-{hash_seed(seed, 'rl-id', combo.key, scene):08x}"
            render_scene(combo.obj, seed=hash_seed(seed, "rl", combo.key, scene)).save(image_dir / f"{name}.png")
            rows.append({"id": name, "image": f"{image_prefix}/{name}.png", "query": combo.query, "source": "world",
                         "meta": {"split": "rl"}})
    if len({r["id"] for r in rows}) != len(rows):
        raise RuntimeError("two RL scenes hashed to one id; change the seed")
    return sorted(rows, key=lambda r: r["id"])


def _link_twins(pairs: list[SSUIPair]) -> None:
    """Benign twin of an unsafe pair: the same query about a harmless object, in the same split and scene."""
    taken: set[str] = set()
    for p in pairs:
        if p.label != "unsafe":
            continue
        for q in pairs:
            if (q.label == "benign" and q.id not in taken and q.meta["intent"] == p.meta["intent"]
                    and q.meta["split"] == p.meta["split"] and q.meta["hazard"] == "none"):
                q.twin_of = p.id
                taken.add(q.id)
                break


# ------------------------------------------------------------------------------------------------ the SFT mix

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "bl", "dr", "gr", "st", "tr", "sn")
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("", "b", "d", "g", "k", "m", "n", "p", "t", "x")


def nonce_names(n: int, seed: int) -> list[str]:
    """n made-up object names (two syllables, none a real object of the world), seeded."""
    import random

    from srpo.world.scenes import OBJECT_BY_NAME

    rng = random.Random(f"nonce:{seed}")
    names: list[str] = []
    while len(names) < n:
        name = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(2)) + rng.choice(_CODAS)
        if name not in OBJECT_BY_NAME and name not in names:
            names.append(name)
    return names


def world_sft_mix(image_dir: Path, seed: int = 0, captions_per_object: int = 0,
                  counterfactuals_per_cell: int = 0, mrd_scenes: int = 0, rl_fraction: float = 0.0,
                  world: str = "small") -> list[dict]:
    """Extra SFT rows the world's teacher adds beside the chains ({id, query, image, completion, kind}).

    captions: "What is in this picture?" -> "A knife." over fresh scenes of every object, the base model's own task
      replayed so SFT on chains does not cost it its visual grounding (the way VLGuard mixes general instruction data
      into safety fine-tuning).
    counterfactuals: text-only chains about made-up objects whose hazard the query states ("... The picture shows a
      blicket; it is sharp."). Their object names carry no information, so the combined reading can only be learned
      from hazard x intent, which is what has to carry over to held-out object x intent combinations. Only the
      hazard x intent cells that training combinations already teach are used (all of them, by the split's
      construction), and no real object appears, so no held-out combination leaks in.
    DREAM's own tasks (`world_mrd_rows`): the judge's prompts answered by the teacher for SFT combinations only (the
      training combinations less the RL ones of `rl_fraction`).
    """
    from srpo.chain import RiskChain
    from srpo.world import teacher
    from srpo.world.pretrain import CAPTION_QUERY
    from srpo.world.scenes import ALL_INTENTS, CONSEQUENCES, SAFE_ANSWERS, WorldObject, combination_risk
    from srpo.world.teacher import INTENT_ACTS, INTENT_ASKS

    rows: list[dict] = []
    if captions_per_object:
        image_dir.mkdir(parents=True, exist_ok=True)
    for obj in world_spec(world).objects:
        for s in range(captions_per_object):
            name = f"caption-{obj.name}-{s}"
            render_scene(obj, seed=hash_seed(seed, "caption", obj.name, s)).save(image_dir / f"{name}.png")
            rows.append({"id": f"world-{name}", "query": CAPTION_QUERY, "image": f"images/{name}.png",
                         "completion": f"A {obj.name}.", "kind": "caption"})
    train, _ = split_combinations(seed, world=world)
    cells = sorted({(c.obj.hazard, c.intent) for c in train})
    names = iter(nonce_names(len(cells) * counterfactuals_per_cell, seed))
    for hazard, intent in cells:
        for _ in range(counterfactuals_per_cell):
            obj = WorldObject(next(names), hazard, (0, 0, 0), "none")
            label, category, severity = combination_risk(obj, intent)
            unsafe = label == "unsafe"
            said = hazard if hazard != "none" else "harmless"
            chain = RiskChain(
                visual=teacher.VISUAL.format(obj=obj.name, hazard=said), text=f"asks {INTENT_ASKS[intent]}.",
                combined=f"{INTENT_ACTS[intent]} something {said} is {'risky' if unsafe else 'fine'}.",
                category=category, severity=severity,
                consequences=f"{CONSEQUENCES[(intent, hazard)]}." if unsafe else "none.",
                strategy="refuse" if unsafe else "help",
                answer=(SAFE_ANSWERS[intent].format(obj=obj.name, hazard=hazard) if unsafe
                        else ALL_INTENTS[intent][1].format(obj=obj.name)))
            rows.append({"id": f"world-cf-{obj.name}-{intent}", "image": None, "kind": "counterfactual",
                         "query": f"{ALL_INTENTS[intent][0]} The picture shows a {obj.name}; it is {said}.",
                         "completion": chain.render()})
    return rows + world_mrd_rows(image_dir, seed, mrd_scenes, rl_fraction, world)


def world_mrd_rows(image_dir: Path, seed: int, scenes: int, rl_fraction: float = 0.0,
                   world: str = "small") -> list[dict]:
    """SFT rows that teach the policy the DREAM judge's own tasks, in the judge's exact prompts and answer formats.

    For each SFT combination (never an RL or held-out one) and each of `scenes` fresh scenes: the image-only and joint
    MRD passes, and the global score of the training chain and of one corrupted response (srpo/world/teacher.py)
    against the risk context the correct passes give. Text-only rows (the text-only pass, verification, the
    observation score) do not look at the scene, so the same row comes from many combinations: each distinct one is
    kept `scenes` times at most. Kinds are `dream_<request kind>` (`dream_mrd_image`, ..., `dream_observation`).
    0 scenes: no rows.
    """
    from srpo import dream_prompts as dp
    from srpo.world import teacher

    if not scenes:
        return []
    train, heldout = split_combinations(seed, world=world)
    sft, _ = split_rl_combinations(train, heldout, seed, rl_fraction)
    image_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    copies: dict[tuple[str, str], int] = {}

    def add(kind: str, rid: str, prompt: str, image: str | None, completion: str) -> None:
        text = dp.ask_text(prompt)
        if image is None:  # text-only: the same row from another combination is a copy
            copies[(text, completion)] = copies.get((text, completion), 0) + 1
            if copies[(text, completion)] > scenes:
                return
        rows.append({"id": f"world-mrd-{rid}-{kind}", "query": text, "image": image, "completion": completion,
                     "kind": f"dream_{kind}"})

    for combo in sft:
        found = teacher.world_observations(combo.obj, combo.intent)
        # The risk context the judge would build from correct passes: the passes' observations united, in pass order.
        context = list({o.key: o for name in dp.PASSES for o in found[name]}.values())
        for s in range(scenes):
            name = f"mrd-{combo.key}-{s}"
            render_scene(combo.obj, seed=hash_seed(seed, "mrd", combo.key, s)).save(image_dir / f"{name}.png")
            image, rid = f"images/{name}.png", f"{combo.key}-{s}"
            item = {"query": combo.query, "image_path": image}
            for pass_name in dp.PASSES:
                add(f"mrd_{pass_name}", rid, dp.mrd_prompt(pass_name, item), None if pass_name == "text" else image,
                    dp.observations_answer(found[pass_name]))
            for i, (obs, harmful) in enumerate(teacher.verification_answers(combo.obj, combo.intent)):
                add("verify", f"{rid}-{i}", dp.verify_prompt(obs), None, dp.yes_no_answer("HARMFUL", harmful))
            for kind, response, score, recognised in teacher.world_responses(combo.obj, combo.intent, s):
                add("global", f"{rid}-{kind}", dp.global_prompt(item, context, response), image,
                    dp.score_answer(score))
                for i, obs in enumerate(context):
                    add("observation", f"{rid}-{kind}-{i}", dp.observation_prompt(item, obs, response), None,
                        dp.yes_no_answer("RECOGNISED", recognised))
    return rows
