"""Build the training data: source pairs (+ benign twins) -> risk-disentangled chains written by a teacher.

    srpo build --config recipes/tiny/build.yaml      (or as the `data` step of `srpo run`)

Writes <run>/data/:
    pairs.jsonl       one pair per line (SSUIPair.to_dict() + "chain"; meta.split is "train" or "eval"; an eval
                      pair also has meta.eval_split "dev" (decisions) or "test" (reported) and meta.eval_group)
    images/           the pairs' images, copied in (paths in pairs.jsonl are relative to the data folder)
    quarantine.jsonl  source rows that could not become pairs, with the converter's reason (too long for the model
                      included: see length_rule)
    failed.jsonl      pairs (stage "chain") and twins (stage "twin") the teacher could not write, with the reason
    rl_prompts.jsonl  only when asked for (build_rl_source, build_world_rl_fraction): the RL split, prompts the loop
                      samples on, {id, image, query, source, meta} with meta.split "rl": no label, no category, no
                      chain (they are not pairs, and the schema has no "unknown" label); images in rl_images/
    manifest.json     last; stats: counts per source/label/category/split, reasons, teacher calls/cache/cost

Resumable: the teacher's results are appended per finished batch to chains.partial.jsonl (and twins.partial.jsonl);
a build restarted under the same fingerprint skips every pair already there (StepRun.begin keeps that work; under
another fingerprint it wipes it). Failures recorded there are kept too: delete the partial file to retry them (the
answer cache makes the pairs that succeeded free).
"""

from __future__ import annotations

import logging
import random
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from srpo.configs import BuildArgs
from srpo.runfolder import (
    FAILED,
    IMAGES,
    PAIRS,
    QUARANTINE,
    RL_IMAGES,
    RL_PROMPTS,
    SFT_MIX,
    canonical_hash,
    read_complete_jsonl,
    write_jsonl,
)
from srpo.schema import SSUIPair, image_paths, join_images, resolve_image
from srpo.steps import StepRun, append_batches

log = logging.getLogger("srpo.build")

PARTIAL_CHAINS = "chains.partial.jsonl"
PARTIAL_TWINS = "twins.partial.jsonl"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
EVAL_ALIASES = ("test", "val", "validation", "dev")  # source split names that mean "held out"


class BuildError(RuntimeError):
    """A build that must stop (build_strict, or counts that do not add up); the message says what and where."""


def inputs(args) -> dict:
    return {}


def cache_dir_for(args: BuildArgs) -> Path:
    """The teacher answer cache. Outside the step folder on purpose: StepRun.begin() wipes that folder when the
    fingerprint changes (a new eval fraction, say), and paid answers must survive that."""
    return Path(args.build_cache_dir) if args.build_cache_dir else Path(args.run_dir) / ".cache" / "teacher"


def make_teacher(args: BuildArgs):
    """The teacher the config asks for (tests replace this to inject one)."""
    from data_builders import teachers

    if args.build_teacher == "offline":
        return teachers.OfflineTeacher()
    if args.build_teacher == "openai":
        return teachers.OpenAITeacher(
            args.build_teacher_model, args.build_teacher_base_url or DEFAULT_BASE_URL, cache_dir_for(args),
            api_key_env=args.build_teacher_api_key_env, concurrency=args.build_teacher_concurrency,
            max_reasks=args.build_teacher_max_reasks, timeout_s=args.build_teacher_timeout_s,
            max_retries=args.build_teacher_max_retries, max_tokens=args.build_teacher_max_tokens,
            hints=args.build_teacher_hints, seed=args.seed)
    return teachers.HFTeacher(args.build_teacher_model, cache_dir_for(args), batch_size=args.build_batch_size,
                              max_new_tokens=args.build_teacher_max_tokens, hints=args.build_teacher_hints)


# ------------------------------------------------------------------------------------------------------------ pairs


class PromptMeter:
    """Tokens of a pair as the training steps see it: the model's own chat template and processor, the image
    expanded to its tokens. Image tokens are measured once per image size (the processors expand an image by its
    size alone), on a blank image of that size, so no image is decoded twice."""

    def __init__(self, model_dir: Path):
        from transformers import AutoProcessor

        self.processor = AutoProcessor.from_pretrained(str(model_dir))
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self._image_tokens: dict[tuple[int, int], int] = {}
        self.measured = 0
        self.longest = 0

    def _prompt(self, query: str, has_image: bool | int) -> str:
        from srpo.models import user_message

        return self.processor.apply_chat_template(user_message(query, has_image), add_generation_prompt=True,
                                                  tokenize=False)

    def _length(self, text: str, special: bool = True) -> int:
        return len(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def image_tokens(self, image_file: Path) -> int:
        from PIL import Image

        with Image.open(image_file) as im:
            size = im.size
        if size not in self._image_tokens:
            probe = self._prompt("x", True)
            expanded = self.processor(text=[probe], images=[[Image.new("RGB", size)]])["input_ids"][0]
            self._image_tokens[size] = len(expanded) - self._length(probe)
        return self._image_tokens[size]

    def __call__(self, pair: SSUIPair, image_file) -> dict[str, int]:
        """Tokens per part of a pair whose image file is `image_file` (None, a path, or a multi-image list)."""
        from srpo.schema import image_paths

        files = image_paths(image_file)
        parts = {"query": self._length(self._prompt(pair.query, len(files))),
                 "image": sum(self.image_tokens(f) for f in files)}
        for fld in ("reference_answer", "safety_warning"):
            parts[fld] = self._length(getattr(pair, fld), special=False) if getattr(pair, fld) else 0
        self.measured += 1
        self.longest = max(self.longest, sum(parts.values()))
        return parts


def model_dir_for(args: BuildArgs) -> Path | None:
    if not args.build_model_dir:
        return None
    path = Path(args.build_model_dir)
    return path if path.is_absolute() else Path(args.run_dir) / path


def length_rule(args: BuildArgs):
    """(LengthRule, meter or None, manifest description): the character cap always; the token limit when the model
    folder is there. The limit is build_max_prompt_tokens, else the text config's max_position_embeddings."""
    from data_builders.sources.validate import LengthRule

    info = {"max_text_chars": args.build_max_text_chars, "model": None, "max_tokens": None, "limit_from": None}
    folder = model_dir_for(args)
    if folder is None or not (folder / "config.json").exists():
        if args.build_max_prompt_tokens:
            raise BuildError(f"build_max_prompt_tokens={args.build_max_prompt_tokens} needs the model's tokenizer, "
                             f"but build_model_dir ({folder}) is not a model folder: run the base step first (srpo "
                             "run does), or point build_model_dir at the model")
        log.info("build: no model folder at %s; rows are checked by length in characters only", folder)
        return LengthRule(max_chars=args.build_max_text_chars), None, info
    from transformers import AutoConfig

    try:
        text_config = AutoConfig.from_pretrained(str(folder)).get_text_config()
        meter = PromptMeter(folder)
    except Exception as e:  # noqa: BLE001 - a model that cannot load here would not train either
        raise BuildError(f"build_model_dir {folder}: cannot load its config and processor to measure rows "
                         f"({type(e).__name__}: {e}); fix the model folder, or set build_model_dir: '' to check "
                         "lengths in characters only") from None
    if args.build_max_prompt_tokens:
        limit, limit_from = args.build_max_prompt_tokens, "build_max_prompt_tokens"
    else:
        limit = getattr(text_config, "max_position_embeddings", None) or 0
        limit_from = "the model's max_position_embeddings" if limit else None
        if not limit:
            log.warning("build: %s has no max_position_embeddings; set build_max_prompt_tokens to check rows in "
                        "tokens", folder)
    info.update(model=args.build_model_dir, max_tokens=limit or None, limit_from=limit_from)
    return LengthRule(args.build_max_text_chars, meter, limit, limit_from or ""), meter, info


def quarantine_long(pairs: list[SSUIPair], rule, folder: Path, source: str,
                    strict: bool) -> tuple[list[SSUIPair], list[dict]]:
    """The built-in sources' pairs under the same length rule as converted rows (a row there is a pair)."""
    from data_builders.sources.validate import REASONS, QuarantineRecord, length_problem

    kept, records = [], []
    for i, p in enumerate(pairs, 1):
        problem = length_problem(p, rule, join_images(folder, p.image))
        if problem is None:
            kept.append(p)
            continue
        fld, code, detail = problem
        message = f"{source} (built in), pair {i} ({p.id}), field {fld!r}: {detail} [{code}] -> {REASONS[code]}"
        if strict:
            raise BuildError(message + " (build_strict is on)")
        records.append(QuarantineRecord(source, i, fld, code, message, p.to_dict()).to_dict())
    ids = {p.id for p in kept}
    for p in kept:  # as the converters do: no twin link to a pair that was left out
        if p.twin_of and p.twin_of not in ids:
            p.meta["twin_of_unresolved"], p.twin_of = p.twin_of, None
    return kept, records


def load_pairs(args: BuildArgs, folder: Path, rule=None) -> tuple[list[SSUIPair], list[dict], dict]:
    """(pairs with image paths relative to `folder`, quarantine rows, source accounting). `rule` (a LengthRule)
    quarantines pairs longer than the model can take."""
    if args.build_source in ("world", "tiny"):
        if args.build_source == "world":
            from data_builders.world import world_pairs

            pairs = world_pairs(folder / IMAGES, seed=args.seed, rl_fraction=args.build_world_rl_fraction,
                                world=args.build_world_size, eval_scenes=args.build_world_eval_scenes or None)
        else:
            from data_builders.tiny import tiny_pairs

            pairs = tiny_pairs(folder / IMAGES, seed=args.seed, eval_fraction=args.build_eval_fraction)
        read = len(pairs)
        pairs, quarantined = quarantine_long(pairs, rule, folder, args.build_source, args.build_strict) if rule \
            else (pairs, [])
        return pairs, quarantined, {"rows_read": read, "rows_converted": len(pairs), "warnings": {}}
    from data_builders.sources import check_options, convert

    problems = check_options(args.build_source, args.build_source_options)
    if problems:
        raise BuildError("build_source_options: " + "; ".join(problems))
    result = convert(args.build_source, Path(args.build_source_root), strict=args.build_strict,
                     require_images=args.build_require_images, lengths=rule, **args.build_source_options)
    for p in result.pairs:  # copy images in so the run folder is self-contained; paths stay confined to the root
        for rel in image_paths(p.image):
            dst = folder / IMAGES / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(resolve_image(args.build_source_root, rel), dst)
        if p.image:
            p.image = [f"{IMAGES}/{rel}" for rel in p.image] if isinstance(p.image, list) else f"{IMAGES}/{p.image}"
    info = {"rows_read": result.rows_seen, "rows_converted": result.rows_ok,
            "warnings": dict(sorted(Counter(w.code for w in result.warnings).items()))}
    return result.pairs, [q.to_dict() for q in result.quarantined], info


def load_rl_prompts(args: BuildArgs, folder: Path, rule, taken_ids: set[str]) -> tuple[list[dict], list[dict], dict]:
    """(RL prompt rows sorted by id, quarantine rows, counts) of the world's RL combinations and of build_rl_source,
    images copied into rl_images/; ([], [], {}) when the build asks for none. No label is read or written: a world RL
    row is a scene and its query under an opaque id, a file row keeps only id, image and query."""
    if not args.build_rl_source and not args.build_world_rl_fraction:
        return [], [], {}
    rows, quarantined = [], []
    info = {"from_world": 0, "from_file": 0}
    if args.build_world_rl_fraction:
        from data_builders.world import world_rl_prompts

        # The world's five queries and 32 px scenes, the same as its pairs' (measured there).
        rows = world_rl_prompts(folder / RL_IMAGES, RL_IMAGES, seed=args.seed,
                                rl_fraction=args.build_world_rl_fraction, world=args.build_world_size,
                                scenes=args.build_world_rl_scenes or None)
        info["from_world"] = len(rows)
    if args.build_rl_source:
        from data_builders.sources.rl_prompts import convert_prompts

        result = convert_prompts(args.build_rl_source, strict=args.build_strict, lengths=rule,
                                 require_images=args.build_require_images,
                                 taken_ids=frozenset(taken_ids | {r["id"] for r in rows}))
        for p in result.prompts:
            if p.image:
                dst = folder / RL_IMAGES / p.image
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(resolve_image(result.root, p.image), dst)
                p.image = f"{RL_IMAGES}/{p.image}"
        rows += [p.to_dict() for p in result.prompts]
        quarantined = [q.to_dict() for q in result.quarantined]
        info.update(from_file=len(result.prompts), file=str(args.build_rl_source), rows_read=result.rows_seen,
                    quarantined=len(quarantined), ignored_fields=result.ignored_fields, warnings=result.warnings,
                    quarantined_per_reason=_counts(quarantined, lambda q: q["reason_code"]))
        if result.rows_seen != len(result.prompts) + len(quarantined):
            raise BuildError(f"RL prompt counts do not add up: {info}")
    if not rows:
        raise BuildError(f"the build asks for RL prompts but has none: {info} (see quarantine.jsonl for the rows of "
                         f"{args.build_rl_source})")
    (folder / RL_IMAGES).mkdir(parents=True, exist_ok=True)  # an output even when every prompt is text-only
    info["prompts"] = len(rows)
    return sorted(rows, key=lambda r: r["id"]), quarantined, info


def cap_pairs(pairs: list[SSUIPair], max_pairs: int) -> tuple[list[SSUIPair], int]:
    """The first `max_pairs` pairs (0 = all); twin links to a pair left out are cleared (kept in meta)."""
    if not max_pairs or len(pairs) <= max_pairs:
        return pairs, 0
    kept = pairs[:max_pairs]
    ids = {p.id for p in kept}
    for p in kept:
        if p.twin_of and p.twin_of not in ids:
            p.meta["twin_of_dropped"], p.twin_of = p.twin_of, None
    return kept, len(pairs) - max_pairs


def assign_splits(pairs: list[SSUIPair], seed: int, eval_fraction: float) -> dict:
    """Give every pair meta.split in {train, eval}: a source's own split is kept (test/val -> eval); the rest are
    split by twin group (an unsafe pair and its twins share a split: the same image never sits on both sides),
    stratified by the group's label and seeded. test_only pairs (MOSSBench) always go to eval."""
    by_id = {p.id: p for p in pairs}
    counts: Counter = Counter()
    for p in pairs:
        s = p.meta.get("split")
        if s in EVAL_ALIASES:
            p.meta["source_split"], p.meta["split"] = s, "eval"
        elif s is not None and s not in ("train", "eval"):
            p.meta["source_split"] = s
            del p.meta["split"]

    def anchor(p: SSUIPair) -> SSUIPair:
        return by_id[p.twin_of] if p.twin_of in by_id else p

    groups: dict[str, list[SSUIPair]] = {}
    for p in pairs:
        groups.setdefault(anchor(p).id, []).append(p)
    group_split = {a: by_id[a].meta["split"] for a in groups if "split" in by_id[a].meta}  # twins follow
    rng = random.Random(f"{seed}:split")
    for label in ("unsafe", "benign"):
        need = sorted(a for a in groups if a not in group_split and by_id[a].label == label)
        rng.shuffle(need)
        n_eval = round(len(need) * eval_fraction)
        group_split.update((a, "eval" if i < n_eval else "train") for i, a in enumerate(need))
    for a, members in groups.items():
        for m in members:
            if "split" not in m.meta:
                m.meta["split"] = group_split[a]
                counts["assigned"] += 1
    for p in pairs:
        if p.meta.get("usage") == "test_only" and p.meta["split"] != "eval":
            p.meta["split"], p.meta["split_forced"] = "eval", "test_only"
            counts["forced_eval_test_only"] += 1
    counts["from_source"] = len(pairs) - counts["assigned"]
    return dict(sorted(counts.items()))


DEV_ALIASES = ("dev", "val", "validation")


def eval_group(p: SSUIPair, by_id: dict) -> str:
    """The group of near-copies an eval pair belongs to: the source's own (meta.eval_group), else the world
    combination (its scenes), else the twin anchor (an item and its twins)."""
    if p.meta.get("eval_group"):
        return str(p.meta["eval_group"])
    if p.meta.get("combination"):
        return f"combination:{p.meta['combination']}"
    return p.twin_of if p.twin_of in by_id else p.id


def assign_eval_splits(pairs: list[SSUIPair], seed: int, dev_fraction: float) -> dict:
    """Give every eval pair meta.eval_split in {dev, test} and meta.eval_group: a source's own split name wins
    (dev/val/validation -> dev, test -> test); the rest are split by group (near-copies on one side), stratified by
    the group's label (unsafe when any member is) and seeded, with at least one dev and one test group per label
    when the label has two or more groups."""
    by_id = {p.id: p for p in pairs}
    held = [p for p in pairs if p.meta.get("split") == "eval"]
    groups: dict[str, list[SSUIPair]] = {}
    for p in held:
        p.meta["eval_group"] = eval_group(p, by_id)
        groups.setdefault(p.meta["eval_group"], []).append(p)
    fixed = {}
    for g, members in groups.items():
        named = {m.meta.get("source_split") for m in members} & {*DEV_ALIASES, "test"}
        if len(named) == 1:
            fixed[g] = "dev" if named.pop() in DEV_ALIASES else "test"
    rng = random.Random(f"{seed}:dev-test")
    side = dict(fixed)
    for label in ("unsafe", "benign"):
        need = sorted(g for g, ms in groups.items() if g not in fixed
                      and ("unsafe" if any(m.label == "unsafe" for m in ms) else "benign") == label)
        rng.shuffle(need)
        n_dev = int(len(need) * dev_fraction + 0.5)
        if len(need) >= 2 and 0 < dev_fraction < 1:
            n_dev = min(max(n_dev, 1), len(need) - 1)
        side.update((g, "dev" if i < n_dev else "test") for i, g in enumerate(need))
    for g, members in groups.items():
        for m in members:
            m.meta["eval_split"] = side[g]
    count = Counter(f"{side[g]}/{m.label}" for g, ms in groups.items() for m in ms)
    return {"groups": {s: sum(1 for g in groups if side[g] == s) for s in ("dev", "test")},
            "items": dict(sorted(count.items())), "from_source": len(fixed)}


# ---------------------------------------------------------------------------------------------- teacher, resumable


def _record(result, key: str) -> dict:
    return {"id": result.id, "key": key, "ok": result.ok, "text": result.text, "reason": result.reason,
            "last_error": result.last_error, "detail": result.detail, "cached": result.cached,
            "calls": result.calls, "reasks": result.reasks}


def reason_key(rec: dict) -> str:
    return f"{rec['reason']}({rec['last_error']})" if rec.get("last_error") else str(rec["reason"])


def run_resumable(items: list[SSUIPair], write: Callable, path: Path, batch_size: int, strict: bool,
                  desc: str) -> tuple[dict[str, dict], int]:
    """`write(batch) -> [TeacherResult]` over the items not already in the partial file at `path`, appending each
    batch's records as it finishes. Returns ({id: record} for every item, how many came from the file)."""
    keys = {p.id: canonical_hash(p.to_dict()) for p in items}
    # A pair edited since (same fingerprint, changed source file) does not match its old record and is redone.
    done = {r["id"]: r for r in read_complete_jsonl(path) if keys.get(r.get("id")) == r.get("key")}
    records = {i: done[i] for i in keys if i in done}
    todo = [p for p in items if p.id not in records]
    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]

    def produce(batch):
        results = write(batch)
        if [r.id for r in results] != [p.id for p in batch]:
            raise BuildError(f"the teacher returned results for {len(results)} pairs in another order than the "
                             f"{len(batch)} asked; a Teacher must return one result per pair, in order")
        return [_record(r, keys[r.id]) for r in results]

    def written(new):
        records.update((r["id"], r) for r in new)
        bad = next((r for r in new if not r["ok"]), None)
        if strict and bad:
            raise BuildError(f"{desc}: pair {bad['id']!r} failed: {reason_key(bad)}: {bad['detail']} "
                             "(build_strict is on; turn it off to record failures in failed.jsonl and go on)")

    # Teacher answers can be paid for: each batch is fsynced before the next is asked.
    append_batches(path, batches, produce, step=desc, desc=desc, fsync=True, ensure_ascii=False, written=written)
    return records, len(done)


def make_twins(args: BuildArgs, folder: Path, pairs: list[SSUIPair], teacher) -> tuple[list[SSUIPair], list, dict]:
    """(generated twins, failure rows, twin stats) per build_twins."""
    from data_builders import twins

    info = {"mode": args.build_twins, "from_source": len(twins.anchors_with_twins(pairs)), "generated": 0,
            "failed": 0, "skipped": {}, "resumed": 0}
    if args.build_twins != "teacher":
        return [], [], info
    todo, skipped = twins.plan(pairs)
    records, info["resumed"] = run_resumable(todo, lambda b: teacher.write_twin_queries(b, folder),
                                             folder / PARTIAL_TWINS, args.build_batch_size, args.build_strict,
                                             "build: twins")
    made, failures = [], []
    for anchor in todo:
        rec = records[anchor.id]
        if rec["ok"]:
            made.append(twins.make_twin(anchor, rec["text"], teacher.teacher_id))
        else:
            failures.append({"id": twins.twin_id(anchor.id), "stage": "twin", "anchor": anchor.id,
                             "reason": rec["reason"], "last_error": rec["last_error"], "detail": rec["detail"]})
    info.update(generated=len(made), failed=len(failures), skipped=dict(sorted(skipped.items())))
    return made, failures, info


# --------------------------------------------------------------------------------------------------------------- run


def _counts(rows: list[dict], key: Callable[[dict], str]) -> dict:
    return dict(sorted(Counter(key(r) for r in rows).items()))


def _disagrees(row: dict) -> bool:
    """The teacher's strategy contradicts the dataset label (refusing a benign pair, plainly helping an unsafe one)."""
    from srpo.chain import parse_chain

    chain = parse_chain(row["chain"]).chain if row["chain"] else None
    if chain is None:
        return False
    return (row["label"] == "benign" and chain.strategy == "refuse") or (
        row["label"] == "unsafe" and chain.strategy == "help")


def run(args: BuildArgs) -> dict | None:
    from data_builders.twins import balance

    step = StepRun.of(args, inputs(args), command="build", default_step="data")
    folder = step.folder
    if step.done():
        return None
    with step:
        (folder / IMAGES).mkdir(parents=True, exist_ok=True)  # an output even for text-only sources

        rule, meter, lengths = length_rule(args)
        pairs, quarantined, source = load_pairs(args, folder, rule)
        rl_rows, rl_quarantined, rl_info = load_rl_prompts(args, folder, rule, {p.id for p in pairs})
        if meter is not None:
            lengths.update(measured=meter.measured, longest_tokens=meter.longest)
        too_long = ("text_too_long", "prompt_too_long")
        lengths["quarantined"] = sum(1 for q in quarantined + rl_quarantined if q["reason_code"] in too_long)
        pairs_converted = len(pairs)
        pairs, skipped_cap = cap_pairs(pairs, args.build_max_pairs)
        teacher = make_teacher(args)
        try:
            generated, twin_failures, twin_info = make_twins(args, folder, pairs, teacher)
            pairs = pairs + generated
            splits = assign_splits(pairs, args.seed, args.build_eval_fraction)
            splits["eval"] = assign_eval_splits(pairs, args.seed, args.build_dev_fraction)
            # Chains are training data: eval pairs get none unless asked (no paid calls for them, and the world's
            # held-out combinations stay unseen by the teacher too).
            chained = [p for p in pairs if p.meta["split"] == "train" or args.build_chains_for_eval]
            chains, resumed = run_resumable(chained, lambda b: teacher.write_chains(b, folder),
                                            folder / PARTIAL_CHAINS, args.build_batch_size, args.build_strict,
                                            "build: chains")
            teacher_stats, teacher_desc = teacher.stats(), teacher.describe()
        finally:
            teacher.close()

        rows, failed = [], []
        for p in pairs:
            rec = chains.get(p.id)
            if rec is None:
                rows.append({**p.to_dict(), "chain": None})
            elif rec["ok"]:
                rows.append({**p.to_dict(), "chain": rec["text"]})
            else:
                failed.append({"id": p.id, "stage": "chain", "reason": rec["reason"], "last_error": rec["last_error"],
                               "detail": rec["detail"], "pair": p.to_dict()})
        written = {r["id"] for r in rows}
        for r in rows:  # a twin whose anchor failed keeps the link in meta, so no row points at a missing pair
            if r["twin_of"] and r["twin_of"] not in written:
                r["meta"]["twin_of_failed"], r["twin_of"] = r["twin_of"], None
        failed += twin_failures

        accounting = {
            "rows_read": source["rows_read"],
            "rows_converted": source["rows_converted"],
            "quarantined": len(quarantined),
            "pairs_converted": pairs_converted,
            "skipped_max_pairs": skipped_cap,
            "twins_generated": len(generated),
            "pairs_total": len(pairs),
            "ok": len(rows),
            "failed": len(pairs) - len(rows),
        }
        if accounting["rows_read"] != accounting["rows_converted"] + accounting["quarantined"] or (
                accounting["pairs_converted"] - skipped_cap + len(generated) != len(pairs)):
            raise BuildError(f"build counts do not add up: {accounting}")
        clash = sorted(written & {r["id"] for r in rl_rows})
        if clash:  # a generated twin's id (<anchor>~twin): prompt ids must name one row of the data folder
            raise BuildError(f"RL prompt ids {clash[:5]} are also pair ids; rename them in {args.build_rl_source}")

        write_jsonl(folder / PAIRS, rows)
        mix = []
        if args.build_source == "world":
            from data_builders.world import world_sft_mix

            mix = world_sft_mix(folder / IMAGES, seed=args.seed, captions_per_object=args.build_world_captions,
                                counterfactuals_per_cell=args.build_world_counterfactuals,
                                mrd_scenes=args.build_world_mrd, rl_fraction=args.build_world_rl_fraction,
                                world=args.build_world_size)
        write_jsonl(folder / SFT_MIX, mix)
        write_jsonl(folder / QUARANTINE, quarantined + rl_quarantined)
        outputs = [PAIRS, SFT_MIX, QUARANTINE, FAILED, IMAGES]
        if rl_info:  # only when asked for, so a build without RL prompts keeps its outputs (and what follows it)
            write_jsonl(folder / RL_PROMPTS, rl_rows)
            outputs += [RL_PROMPTS, RL_IMAGES]
        write_jsonl(folder / FAILED, failed)
        chain_failures = [f for f in failed if f["stage"] == "chain"]
        stats = {
            "pairs": len(rows),
            "by_source": _counts(rows, lambda r: r["source"]),
            "by_label": _counts(rows, lambda r: r["label"]),
            "by_category": _counts(rows, lambda r: r["category"]),
            "by_split": _counts(rows, lambda r: r["meta"].get("eval_split") or r["meta"]["split"]),
            "by_source_label": _counts(rows, lambda r: f"{r['source']}/{r['label']}"),
            "by_split_label": _counts(rows, lambda r: f"{r['meta'].get('eval_split') or r['meta']['split']}/"
                                                      f"{r['label']}"),
            "twins": sum(1 for r in rows if r["twin_of"]),
            "twin_build": twin_info,
            "balance_per_category": balance(rows),
            "splits": splits,
            "rl_prompts": rl_info or None,
            "quarantined": len(quarantined),
            "quarantined_per_reason": _counts(quarantined, lambda q: q["reason_code"]),
            "length_check": lengths,
            "source_warnings": source["warnings"],
            "failed": len(chain_failures),
            "failed_per_reason": _counts(chain_failures, reason_key),
            "twin_failed_per_reason": _counts(twin_failures, reason_key),
            "label_disagreements": sum(1 for r in rows if _disagrees(r)),
            "accounting": accounting,
            "resumed_chains": resumed,
            "teacher": teacher_desc["teacher_id"],
            "prompt_version": teacher_desc["prompt_version"],
            "teacher_config": teacher_desc,
            "teacher_stats": teacher_stats,
        }
        log.info("build: %d ok, %d failed, %d quarantined; teacher %s made %d call(s), %d cache hit(s)", len(rows),
                 len(chain_failures), len(quarantined), stats["teacher"], teacher_stats["calls"],
                 teacher_stats["cache_hits"])
        stats["sft_mix"] = _counts(mix, lambda r: r["kind"])
        if rl_rows:
            stats["by_split"]["rl"] = len(rl_rows)
        return step.finish(outputs, stats)


def main(argv=None) -> None:
    from srpo.cli_util import parse_step_args

    run(parse_step_args(BuildArgs, argv))


if __name__ == "__main__":
    main()
