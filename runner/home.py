"""Where a run keeps its ledger and its clips when the config does not say: found as git finds its
repository, so a command started in a subfolder of a project joins the project's ledger.

`conf/config.yaml` gives `state_dir` and `outputs_dir` as interpolations of the resolvers below
(an override or a config file that sets them wins as usual); `runner.locate` holds the rule the
companion CLI follows too: `$RUNNER_STATE_DIR`, else the nearest `.runner/` holding a ledger from
the current folder up, else a new `.runner` here; clips go to `outputs/` beside that `.runner/`.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from runner import locate


def register_resolvers() -> None:
    """In every process that resolves a run config (Hydra's joblib workers import the app, not main)."""
    if not OmegaConf.has_resolver("runner_state_dir"):
        OmegaConf.register_new_resolver("runner_state_dir", lambda: locate.runner_state_dir(), use_cache=True)
    if not OmegaConf.has_resolver("runner_outputs_dir"):
        OmegaConf.register_new_resolver("runner_outputs_dir", lambda state_dir: locate.outputs_beside(str(state_dir)), use_cache=True)
