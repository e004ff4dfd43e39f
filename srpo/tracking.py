"""Experiment tracking of the iteration loop: eval metrics, gate decisions, judge statistics and a sample table.

Backends, chosen by `run_report_to`: tensorboard (event files under <run>/tracking/tensorboard), wandb (offline
unless WANDB_API_KEY is set, so a run never needs a login), trackio. Training curves of the SFT/DPO steps go through
TRL's own `report_to`; a GRPO step's curve (its reward means and judge failure rate at every logging step) is
also logged here once the step is done (log_training). Only numbers, decisions and texts from the run folder are
logged: no config value that could hold a secret (API keys are read from the environment by name and never stored in
the recipe).
"""

from __future__ import annotations

import os
from pathlib import Path

from srpo.configs import TRACKERS as BACKENDS


class Tracker:
    def __init__(self, backends: list[str], run_dir: Path, run_name: str, config: dict):
        unknown = sorted(set(backends) - set(BACKENDS))
        if unknown:
            raise ValueError(f"run_report_to: unknown tracker(s) {unknown}; choose from {BACKENDS}")
        self.backends = [b for b in backends if b != "none"]
        self.writers = {}
        if "tensorboard" in self.backends:
            from torch.utils.tensorboard import SummaryWriter

            self.writers["tensorboard"] = SummaryWriter(log_dir=str(run_dir / "tracking" / "tensorboard"))
        if "wandb" in self.backends:
            import wandb

            if not os.environ.get("WANDB_API_KEY") and "WANDB_MODE" not in os.environ:
                os.environ["WANDB_MODE"] = "offline"  # no key: write locally, `wandb sync` later
            self.writers["wandb"] = wandb.init(project="srpo", name=run_name, dir=str(run_dir / "tracking"),
                                               config=config, reinit=True)
        if "trackio" in self.backends:
            import trackio

            self.writers["trackio"] = trackio.init(project="srpo", name=run_name, config=config)

    def log_iteration(self, iteration: int, metrics: dict, gate: dict | None, judge: dict | None,
                      samples: list[dict] | None = None, judge_scores: dict | None = None) -> None:
        scalars = {f"eval/{split}/{k}": v for split, block in (metrics.get("splits") or {}).items()
                   for k, v in block.items() if isinstance(v, (int, float)) and v is not None}
        scalars.update({f"eval/{k}": v for k, v in metrics.items() if isinstance(v, (int, float)) and v is not None})
        if gate is not None:
            scalars["gate/accepted"] = 1.0 if gate["decision"] == "accept" else 0.0
            scalars["gate/stopped"] = 1.0 if gate["decision"] == "stop" else 0.0
            scalars.update({f"gate/{k}": v for k, v in gate.get("deltas", {}).items()})
        if judge:
            for key in ("judge_failure_rate", "mean_safety", "mean_effectiveness", "mean_awareness",
                        "mean_chain_valid",
                        "failures", "mean_preference", "comparisons", "comparison_failures", "position_a_rate",
                        "mean_reward", "mean_judge", "mean_format", "mean_consistency", "mean_length",
                        "frac_reward_zero_std"):
                if isinstance(judge.get(key), (int, float)):
                    scalars[f"judge/{key}"] = judge[key]
            scalars.update(cost_panel(judge))
        tb = self.writers.get("tensorboard")
        if tb is not None:
            for key, value in scalars.items():
                tb.add_scalar(key, value, iteration)
            if gate is not None:
                tb.add_text("gate/decision", f"**{gate['decision']}** — " + "; ".join(gate["reasons"]), iteration)
            for name, values in (judge_scores or {}).items():
                if values:
                    import numpy as np

                    tb.add_histogram(f"judge/{name}", np.asarray(values, dtype=float), iteration)
            if samples:
                table = "| id | prompt | response | scores |\n|---|---|---|---|\n" + "\n".join(
                    f"| {s['id']} | {s['query']} | {_cell(s['response'])} | {_cell(s['scores'])} |" for s in samples)
                tb.add_text("samples", table, iteration)
            tb.flush()
        run = self.writers.get("wandb")
        if run is not None:
            import wandb

            payload = dict(scalars, iteration=iteration)
            if gate is not None:
                payload["gate/decision"] = gate["decision"]
            for name, values in (judge_scores or {}).items():
                if values:
                    payload[f"judge/{name}_hist"] = wandb.Histogram(values)
            if samples:
                payload["samples"] = wandb.Table(columns=["id", "prompt", "response", "scores"],
                                                 data=[[s["id"], s["query"], s["response"], str(s["scores"])]
                                                       for s in samples])
            run.log(payload, step=iteration)
        track = self.writers.get("trackio")
        if track is not None:
            track.log(scalars, step=iteration)

    def log_training(self, iteration: int, stage: str, history: list[dict], prefixes: tuple[str, ...]) -> None:
        """A training step's curve, every logging step of it (e.g. GRPO's reward means and judge failure rate), as
        `<stage>/iter_NNN/<key>` against the step's own optimizer step."""
        rows = [h for h in history if isinstance(h.get("step"), int)]
        series = [(f"{stage}/iter_{iteration:03d}/{k}", h["step"], v) for h in rows for k, v in h.items()
                  if k.startswith(prefixes) and isinstance(v, (int, float)) and v == v]
        tb = self.writers.get("tensorboard")
        if tb is not None:
            for key, step, value in series:
                tb.add_scalar(key, value, step)
            tb.flush()
        run = self.writers.get("wandb")
        if run is not None and series:
            import wandb

            # One table per iteration at the iteration's step: wandb's own step must not run backwards.
            table = wandb.Table(columns=["metric", "step", "value"],
                                data=[[key, step, value]
                                      for key, step, value in series])
            run.log({f"{stage}/iter_{iteration:03d}/curve": table}, step=iteration)

    def close(self) -> None:
        for name, writer in self.writers.items():
            if name == "tensorboard":
                writer.close()
            elif name in ("wandb", "trackio"):
                writer.finish()


def cost_panel(judge_stats: dict) -> dict:
    """What judging this iteration cost: wall time always; for an endpoint judge also calls, retries, failed calls,
    tokens, cache hits and the estimated price (from the recipe's judge_price_* settings)."""
    out = {}
    if isinstance(judge_stats.get("judge_seconds"), (int, float)):
        out["cost/judge_seconds"] = judge_stats["judge_seconds"]
    client = (judge_stats.get("judge") or {}).get("client") or {}
    for key in ("calls", "failed", "reasks", "prompt_tokens", "completion_tokens", "estimated_cost_usd"):
        if isinstance(client.get(key), (int, float)):
            out[f"cost/judge_{key}"] = client[key]
    if isinstance(client.get("retries"), dict):
        out["cost/judge_retries"] = sum(client["retries"].values())
    cache = (judge_stats.get("judge") or {}).get("cache") or {}
    if isinstance(cache.get("hits"), (int, float)):
        out["cost/judge_cache_hits"] = cache["hits"]
    return out


def _cell(value) -> str:
    return " ".join(str(value).split()).replace("|", "/")[:300]
