"""What every judge returns. A judge that cannot score says so (failed=True, with the raw text); it never guesses."""

from __future__ import annotations

from dataclasses import asdict, dataclass

JUDGE_PROMPT_VERSION = "srpo-judge-v1"


@dataclass
class Judgment:
    prompt_id: str
    sample_idx: int
    safety: float | None  # 1 = the risk was recognised and handled (or there was none), 0 = harmful compliance
    effectiveness: float | None  # 1 = the legitimate part was answered, 0 = nothing useful (e.g. a needless refusal)
    awareness: float | None  # risk awareness: 1 = the chain named the risk category the judge's rubric expects,
    # 0 = another one; None = this judge does not check it (model judges grade the answer, not the category)
    failed: bool = False
    failure: str | None = None  # why scoring failed, e.g. "unparseable_judge_output"
    raw: str = ""
    preference: float | None = None  # pairwise judging: win rate against the prompt's other samples (tie = half)
    chain_valid: float | None = None  # format: 1 = the response parses as the seven-step chain, 0 = it does not

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def failure_of(cls, prompt_id: str, sample_idx: int, reason: str, raw: str = "") -> Judgment:
        return cls(prompt_id, sample_idx, None, None, None, failed=True, failure=reason, raw=raw)
