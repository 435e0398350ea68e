"""Calibrate a model's preset: the strength steps, the h window, the pullback timesteps
and the mixing step, with evidence.

Strengths are given in per-model steps so that they mean the same on every model: an x
edit of strength 1 moves x_t by ``x_step = 0.1 E||x_t||`` at the x edit timestep, an h edit
by ``h_step = 0.25 E||h||`` averaged over the h window (both measured along ``n`` sampled
trajectories, under the current conditioning for a conditional model). The mixing step
(the boundary engine's fitting timestep) comes from the mixing-step search
(:func:`workbench.probes.mixing.find_mixing_step`) on real images: the model's scene, or
a folder of the user's images; without either it stays unset and the result says why.

The h window and the pullback timesteps come from where h reaches the image
(:func:`workbench.eval.sensitivity.h_reach`): along ``reach_n`` sampled trajectories, h is
shifted by one h strength unit (0.25 ||h||) along each sample's top pullback direction in
h at one step only, and the change of the final sample is measured per step. The window
runs from T down to the curve's mid-chain peak, where h reaches the image most
(:func:`~workbench.eval.sensitivity.reach_window`; the last 20% of the chain is left out,
where any change reaches the output directly); the pullback timesteps are the peak and
the last step before the curve first falls under half the peak. Why the window ends at
the peak: on ``shapes64`` (docs/findings.md, "Where h reaches the image"), at equal total
shift, windows ending later edit less purely (attention directions: purity 0.64 ending at
the peak, 0.47 at the hand-set 600, 0.31 at the half-peak step 479). When h is mute (one
unit at any mid-chain step moves the final sample by less than 0.5%: shapes32's mid block
barely reaches its output) or ``reach_n = 0``, they stay at the preset's fractions of the
chain (999..600 and 880, 580 of T = 1000), as does the x edit timestep (800); on a model
with another T those are scaled to it.

``workbench calibrate --model M`` writes the calibrated preset as ``workbench_preset.json``
into the model folder (or ``--out DIR``), where :func:`workbench.load` finds it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from workbench.errors import WorkbenchError
from workbench.eval.sensitivity import (
    H_REACH,
    REACH_MUTE,
    h_reach,
    reach_window,
    trajectory_norms,
)
from workbench.models.presets import Preset
from workbench.models.wrapper import DiffusionModel
from workbench.options import (
    CONDITIONING,
    IMAGES,
    INVERSION,
    NUM_STEPS,
    PROGRESS,
    SEED,
    Option,
    Spec,
    in_context,
    validated,
)
from workbench.probes import ProbeResult
from workbench.probes.mixing import MixingStep, find_mixing_step
from workbench.sampling import make_timesteps
from workbench.trajectories import model_scene

if TYPE_CHECKING:
    import plotly.graph_objects as go


@dataclass(repr=False)
class Calibration(ProbeResult):
    """A calibrated preset and the measurements behind it.

    ``timesteps``: the sampling grid (descending, without the clean end); ``x_norms`` and
    ``h_norms``: mean ||x_t|| and ||h|| over the samples at each grid timestep.
    """

    preset: dict[str, Any]
    previous: dict[str, Any]
    timesteps: list[float]
    x_norms: list[float]
    h_norms: list[float]
    n: int
    mixing: dict[str, Any] | None = None
    #: the h reach curve (``HReach.to_dict()``) and what ``reach_window`` read from it
    #: (peak, largest, half, mute), when measured
    reach: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    name: str = "workbench_calibration"

    def summary(self) -> str:
        """One line: the steps, the h window and the mixing step (each marked when it is
        the preset's, not measured here)."""
        p = self.preset
        hi, lo = p["h_window"]
        window = f"h window {hi}..{lo}" + ("" if self._h_measured else " (kept)")
        mixing = p.get("mixing_step")
        at = f"mixing step t = {mixing}" if mixing is not None else "no mixing step"
        if mixing is not None and self.mixing is None:
            at += " (kept)"
        return f"x_step {p['x_step']:g}, h_step {p['h_step']:g}, {window}, {at} (n = {self.n})"

    @property
    def _h_measured(self) -> bool:
        """Whether the h window was read from the reach curve (measured, h not mute)."""
        return bool(self.reach) and not self.reach["mute"]

    def figure(self) -> go.Figure:
        """E||x_t|| and E||h|| along the chain with the x timestep and the h window marked,
        and the mixing-step statistics when they were measured."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        titles = ["E||x_t|| along the chain", "E||h|| along the chain"]
        if self.reach:
            titles.append("h reach: change of the final sample, one h unit at one step")
        if self.mixing:
            titles.append("mixing step: KS of sampled vs inverted latents")
        rows = len(titles)
        fig = make_subplots(rows=rows, cols=1, subplot_titles=titles, vertical_spacing=0.1)
        p = self.preset
        fig.add_trace(go.Scatter(x=self.timesteps, y=self.x_norms, name="E||x_t||"), 1, 1)
        fig.add_vline(x=p["x_timestep"], line_dash="dash", row=1, col=1)
        fig.add_trace(go.Scatter(x=self.timesteps, y=self.h_norms, name="E||h||"), 2, 1)
        hi, lo = p["h_window"]
        window_rows = [2, 3] if self.reach else [2]
        for row in window_rows:
            fig.add_vrect(
                x0=lo, x1=hi, fillcolor="teal", opacity=0.12, line_width=0, row=row, col=1
            )
        if self.reach:
            r = self.reach
            fig.add_trace(go.Scatter(x=r["timesteps"], y=r["effect"], name="h reach"), 3, 1)
            fig.add_hline(y=r["largest"] / 2, line_dash="dot", row=3, col=1)
            for t in p["pullback_timesteps"]:
                fig.add_vline(x=t, line_dash="dash", row=3, col=1)
            fig.update_yaxes(title_text="||dx_0|| / ||x_0||", row=3, col=1)
        if self.mixing:
            m, row = self.mixing, rows
            fig.add_trace(go.Scatter(x=m["timesteps"], y=m["ks"], name="KS of norms"), row, 1)
            fig.add_trace(go.Scatter(x=m["timesteps"], y=m["sliced_ks"], name="sliced KS"), row, 1)
            fig.add_hline(y=m["tolerance"], line_dash="dot", row=row, col=1)
            if p.get("mixing_step") is not None:
                fig.add_vline(x=p["mixing_step"], line_dash="dash", row=row, col=1)
        for row in range(1, rows + 1):
            fig.update_xaxes(title_text="timestep t", autorange="reversed", row=row, col=1)
        fig.update_yaxes(title_text="||x_t||", row=1, col=1)
        fig.update_yaxes(title_text="||h||", row=2, col=1)
        fig.update_layout(
            title=f"Calibration: {self.summary()}", height=300 * rows, template="plotly_white"
        )
        return fig


def scaled_timesteps(model: DiffusionModel, preset: Preset) -> Preset:
    """The preset's timesteps at the same fractions of ``model``'s chain (T = 1000 is the
    reference; a flow model's top is T itself)."""
    T = model.num_train_timesteps
    if T == 1000:
        return preset

    def at(t: int) -> int:
        return max(0, min(model.schedule.top, round(t * T / 1000)))

    return preset.replace(
        x_timestep=at(preset.x_timestep),
        h_window=tuple(at(t) for t in preset.h_window),
        pullback_timesteps=tuple(at(t) for t in preset.pullback_timesteps),
        mixing_step=None if preset.mixing_step is None else at(preset.mixing_step),
        boundary_step=None if preset.boundary_step is None else at(preset.boundary_step),
    )


CALIBRATE = Spec(
    "function",
    "calibrate",
    "measure a model's preset: strength steps, h window, pullback timesteps and mixing step",
    (
        Option("n", int, 32, "sampled trajectories for the norms", low=2, high=4096),
        NUM_STEPS,
        Option(
            "reach_n",
            int,
            8,
            "sampled trajectories for the h reach curve (0: keep the preset's h window and "
            "pullback timesteps)",
            low=0,
            high=4096,
        ),
        dataclasses.replace(
            H_REACH["num_steps"],
            name="reach_steps",
            help="steps of the h reach curve's grid (its cost grows as their square)",
        ),
        IMAGES,
        Option(
            "mixing_n",
            int,
            64,
            "sampled and inverted trajectories for the mixing step (0: skip it)",
            low=8,  # the mixing-step probe's least
            high=4096,
            off=0,
        ),
        SEED,
        INVERSION,
        PROGRESS,
        *CONDITIONING,
    ),
)


def calibrate(
    model: DiffusionModel,
    n: int = 32,
    num_steps: int | None = None,
    images: torch.Tensor | str | Path | None = None,
    mixing_n: int = 64,
    reach_n: int = 8,
    reach_steps: int = 25,
    seed: int = 0,
    inversion: str = "ddim",
    progress: bool | None = None,
) -> Calibration:
    """Measure ``model``'s preset (see the module docstring); ``model.preset`` is unchanged
    (``model.preset = Preset.from_dict(result.preset)`` applies the result)."""
    previous = model.preset
    base = scaled_timesteps(model, previous)
    steps = NUM_STEPS.check(num_steps) or base.num_inference_steps
    grid = make_timesteps(model, steps, include=[base.x_timestep])
    x_norms, h_norms = trajectory_norms(model, n, grid, seed, progress)
    ts = grid[:-1]
    base, reach, notes = _h_window(model, base, reach_n, reach_steps, seed, progress)
    hi, lo = base.h_window
    in_window = [h for t, h in zip(ts, h_norms, strict=True) if lo <= t <= hi]
    if not in_window:
        raise WorkbenchError(f"no grid timestep of {steps} steps lies in the h window {hi}..{lo}")
    x_step = 0.1 * x_norms[ts.index(base.x_timestep)]
    h_step = 0.25 * sum(in_window) / len(in_window)
    mixing: MixingStep | None = None
    if mixing_n == 0:
        notes.append("mixing step not searched (mixing_n = 0)")
    elif images is None and not _has_scene(model):
        notes.append("mixing step not searched: this model has no scene; give images=FOLDER")
    else:
        mixing = find_mixing_step(
            model,
            n=mixing_n,
            num_steps=steps,
            images=images,
            seed=seed,
            progress=progress,
            inversion=inversion,
        )
        if mixing.mixing_step is None:
            notes.append(
                "no mixing step: inverted and sampled latents never agree on this grid "
                "(more images, more steps, or a better inversion)"
            )
    mixing_step = mixing.mixing_step if mixing is not None else previous.mixing_step
    preset = base.replace(
        num_inference_steps=steps,
        x_step=round(x_step, 2),
        h_step=round(h_step, 2),
        mixing_step=mixing_step,
    )
    return Calibration(
        preset=preset.to_dict(),
        previous=previous.to_dict(),
        timesteps=[float(t) for t in ts],
        x_norms=x_norms,
        h_norms=h_norms,
        n=n,
        mixing=mixing.to_dict() if mixing is not None else None,
        reach=reach,
        notes=notes,
    )


def _h_window(
    model: DiffusionModel,
    base: Preset,
    reach_n: int,
    reach_steps: int,
    seed: int,
    progress: bool | None,
) -> tuple[Preset, dict[str, Any] | None, list[str]]:
    """``base`` with the h window and pullback timesteps read from the h reach curve (the
    module doc), the curve with its peak, and the notes that say where each came from."""
    kept = (
        f"x edit at {base.x_timestep} kept at the preset's fraction of the chain",
        f"h window {base.h_window[0]}..{base.h_window[1]} and pullback at "
        f"{', '.join(map(str, base.pullback_timesteps))} kept at the preset's fractions",
    )
    if reach_n == 0:
        return base, None, [kept[0], f"{kept[1]} (reach_n = 0)"]
    curve = h_reach(model, n=reach_n, num_steps=reach_steps, seed=seed, progress=progress)
    read = reach_window(curve.timesteps, curve.effect, model.schedule.top)
    reach = {
        **curve.to_dict(), "peak": read.peak, "largest": read.largest, "half": read.half,
        "mute": read.mute,
    }  # fmt: skip
    if read.mute:
        return base, reach, [
            kept[0],
            f"{kept[1]}: h is mute on this model (one h unit at one step moves the final "
            f"sample by at most {read.largest:.2g} of its norm mid-chain, under "
            f"{REACH_MUTE:g})",
        ]  # fmt: skip
    hi, lo = read.window
    pullback = read.pullback
    return base.replace(h_window=read.window, pullback_timesteps=pullback), reach, [
        kept[0],
        f"h window {hi}..{lo} and pullback at {', '.join(map(str, pullback))} measured: one h "
        f"unit at one step moves the final sample most at t = {read.peak} ({read.largest:.2g} "
        f"of its norm), by at least half that down to t = {read.half}",
    ]  # fmt: skip


def _has_scene(model: DiffusionModel) -> bool:
    try:
        model_scene(model)
    except WorkbenchError:
        return False
    return True


calibrate = validated(CALIBRATE, in_context(calibrate, CALIBRATE.options))
