"""The judge-vs-human agreement pane of the traces screen: recomputed in a worker, debounced, edited dimension only."""

from __future__ import annotations

from textual import work
from textual.widgets import Static

from app.screens.trace_detail import AgreementLoaded, agreement_table, as_text
from app.widgets.quiet import update_if_changed
from engine.dims import DIMENSIONS
from engine.evaluation.agreement import judge_agreement
from engine.store import RunStore

AGREEMENT_DEBOUNCE_S = 0.4


class AgreementPane:
    """Mixed into TracesScreen: needs `store`, `_run`, `_agreement`, `_agreement_dims`, `_agreement_timer`."""

    def action_toggle_agreement(self) -> None:
        panel = self.query_one("#agreement", Static)
        panel.display = not panel.display
        self._draw_agreement()

    def refresh_agreement(self, dim: str | None) -> None:
        """dim None: every dimension (a run was opened)."""
        self._agreement_dims |= set(DIMENSIONS) if dim is None else {dim}
        if self._agreement_timer is not None:
            self._agreement_timer.stop()
        self._agreement_timer = self.set_timer(AGREEMENT_DEBOUNCE_S if dim else 0.01, self._agreement_now)

    def _agreement_now(self) -> None:
        dims, self._agreement_dims = sorted(self._agreement_dims), set()
        if self.store is not None and dims:
            self._compute_agreement(self.store, self._run, dims)

    @work(thread=True, exclusive=False, group="agreement", exit_on_error=False)
    def _compute_agreement(self, store: RunStore, run, dims: list[str]) -> None:
        self.post_message(AgreementLoaded(run, judge_agreement(store, dims)))

    def on_agreement_loaded(self, message: AgreementLoaded) -> None:
        if message.run == self._run:
            self._agreement.update(message.rows)
            self._draw_agreement()

    def _draw_agreement(self) -> None:
        panel = self.query_one("#agreement", Static)
        if panel.display:  # drawn once into a Text: a layout pass then measures lines, not a rich Table
            width = panel.content_region.width or self.query_one("#trace-left").content_region.width
            update_if_changed(panel, as_text(agreement_table(self._agreement), width), layout="lines")

