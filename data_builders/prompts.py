"""The versioned teacher prompts: one for the risk-disentangled chain, one for a benign twin's query.

The version strings are part of every cache key (srpo.cache.cache_key), so changing a prompt's wording MUST bump its
version: old answers then miss the cache instead of being reused for a prompt they were not written for.

The chain prompt asks for exactly the seven labelled steps of `srpo.chain` (Visual, Text, Combined, Risk,
Consequences, Strategy, Answer), with the allowed risk categories, severities and strategies spelled out, so that
`srpo.chain.parse_chain` accepts the answer. The pair's label and category can be given as hints (the default: a
dataset's label is usually better than a teacher's guess); without hints the teacher judges on its own.
"""

from __future__ import annotations

import re

from srpo.chain import SEVERITIES, STRATEGIES
from srpo.schema import RISK_CATEGORIES, SSUIPair

TEACHER_PROMPT_VERSION = "srpo-teacher-v1"
TWIN_PROMPT_VERSION = "srpo-twin-v1"

TEACHER_SYSTEM = (
    "You are a careful safety teacher for a vision-language assistant. For each request (an image and a query) you "
    "write a risk-disentangled reasoning chain and then the answer the assistant should give. Image and query may "
    "be harmless one by one yet risky together, or look risky yet be harmless: judge the combination."
)

TEACHER_USER_TEMPLATE = """\
{image_line}
Query: {query}
{hints}
Write the chain as exactly these seven lines, in this order, each starting with its label:

Visual: what the image shows and the risks it carries on its own (one line)
Text: what the query asks and its intent on its own (one line)
Combined: what image and query mean together (one line)
Risk: <category> (<severity>)
Consequences: what could happen if the request were answered as asked (one line)
Strategy: <strategy>
Answer: the final answer to the user (may span several lines)

<category> is one of: {categories}. Use "none" (with severity "none") when the request is harmless.
<severity> is one of: {severities}.
<strategy> is one of: {strategies}. Refuse only real risks; help fully with harmless requests (over-refusal is a \
failure too); help_with_caution gives the safe part of the help with the needed warnings.
Reply with the seven lines only: nothing before "Visual:", no markdown, no extra labels."""

TWIN_SYSTEM = (
    "You write benign counterparts for safety training data: a harmless question about the same picture, so a "
    "model learns that the picture alone is not a reason to refuse."
)

TWIN_USER_TEMPLATE = """\
The attached image was paired with this query, which is risky together with the image:
Query: {query}
Risk category: {category}

Write one different query about the same image that a helpful assistant should simply answer: harmless in \
combination with the image, natural, and on the same topic where possible.
Reply with exactly one line: "Query: <the harmless question>"."""

# Deterministic harmless queries for the offline teacher's twins, per risk category (fallback: "_default").
OFFLINE_TWIN_QUERIES = {
    "self_harm": "What could someone do in this place to relax and feel a bit better today?",
    "dangerous_behavior": "What safety precautions does this picture remind you of?",
    "illegal_activity": "Describe the setting shown in this picture.",
    "violence": "Describe the objects in this picture and what they are normally used for.",
    "privacy": "Describe the scene in this picture without identifying anyone.",
    "discrimination": "Describe what the people in this picture are doing.",
    "misinformation": "What can be reliably said about what this picture shows?",
    "morality": "Describe what is happening in this picture.",
    "religion": "What is the history of the kind of place or object shown in this picture?",
    "controversial_topics": "Summarise the different viewpoints people might have about what this picture shows.",
    "sexual_content": "Describe the colours and composition of this picture.",
    "hate_speech": "Describe what you see in this picture.",
    "malware": "How can I keep the device in this picture secure and up to date?",
    "fraud": "How can I recognise and avoid scams related to what is shown in this picture?",
    "regulated_advice": "Where can I find a qualified professional to ask about what this picture shows?",
    "_default": "Describe what you see in this picture.",
}


def _hints(pair: SSUIPair) -> str:
    parts = [f"Dataset label: {pair.label}"]
    if pair.label == "unsafe":
        parts.append(f"risk category: {pair.category}")
    text = "Hint — " + "; ".join(parts) + "."
    if pair.safety_warning:
        text += f" What a safe answer must take into account: {' '.join(pair.safety_warning.split())}"
    return text + "\n"


def chain_prompt(pair: SSUIPair, *, has_image: bool | int, hints: bool = True) -> tuple[str, str]:
    """(system, user text) asking for the pair's chain; the image (if any; a count for a multi-image prompt) goes
    with the user message."""
    image_line = ("There is no image; judge the query alone." if not has_image else "The image is attached."
                  if int(has_image) == 1 else f"The {int(has_image)} images are attached, in the order the query "
                  "refers to them.")
    user = TEACHER_USER_TEMPLATE.format(
        image_line=image_line,
        query=" ".join(pair.query.split()),
        hints=_hints(pair) if hints else "",
        categories=", ".join(RISK_CATEGORIES),
        severities=", ".join(SEVERITIES),
        strategies=", ".join(STRATEGIES),
    )
    return TEACHER_SYSTEM, user


def twin_prompt(pair: SSUIPair) -> tuple[str, str]:
    """(system, user text) asking for a harmless query about the unsafe pair's image."""
    return TWIN_SYSTEM, TWIN_USER_TEMPLATE.format(query=" ".join(pair.query.split()), category=pair.category)


_TWIN_LINE = re.compile(r"^\s*query\s*:\s*(.+?)\s*$", re.IGNORECASE)


def parse_twin_query(text: str) -> tuple[str | None, str | None]:
    """(query, None) from a twin answer, or (None, what is wrong). Exactly one 'Query:' line, nothing else."""
    if not isinstance(text, str):
        return None, "expected text"
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if len(lines) != 1:
        return None, f"expected exactly one line 'Query: ...', got {len(lines)} lines"
    m = _TWIN_LINE.match(lines[0])
    if not m:
        return None, "the line must start with 'Query:'"
    query = m.group(1).strip().strip('"').strip()
    if len(query) < 3:
        return None, "the query is empty"
    return query, None


def validate_twin(text: str) -> str | None:
    """A `validate` for ChatClient.complete_many: None when the answer is one usable 'Query:' line."""
    return parse_twin_query(text)[1]
