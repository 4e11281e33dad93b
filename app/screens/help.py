"""The help screen (?): every binding of every room, and where the panel's data comes from."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

HELP = """aba-tui: the control panel of the Entropy-Joy pipeline

Everything on screen comes from the run database (runs/<RUN_ID>/run.db). Stages run in detached workers:
quit with q and they keep going; `aba-tui RUN_ID` reattaches with the whole history.
Text from models, judges and logs is shown inert: a control character appears as a symbol (ESC as ␛).

Every screen (one meaning per key; each question names what will happen, y answers yes, n or Esc no)
  F2 pipeline    F3 training    F4 traces    F5 runs    F6 eval    F7 commitment    F8 playground
  n new run (asks first while a run is live)     s start any stage of the pipeline (asks before a re-run)
  c cancel running and pending stages (asks)     r resume what did not succeed (asks)
  k skip a stage (asks)    e view/edit the config    ? or F1 this help    ctrl+p every action    q quit

Pipeline
  up/down choose a stage: s, c and k act on it

Training
  tab / shift+tab the run's training stages (the view follows the running one until you press tab)
  t EMA trend    m one chart / small multiples    0 total reward on/off    1-9 each reward component on/off
  h the health strip (left/right: each rule, and why it is ok, warn or alarm)
  l completions of the latest sampled step (or click the reward chart at a step)
    in there: [ ] previous / next sampled step, up/down a completion, esc close

Traces
  up/down move    left/right scroll    [ ] choose the dimension    + / - change its score by 0.1
  enter type a score    x back to the judge's score    u undo the last edit    v reviewed on/off
  g next unreviewed    o sort by a column, or click its title (again: reverse)    O reverse    / filters
  a agreement
  tab the trace pane (End: the whole trace)    Esc back to the table
  Each edit is committed at once: quitting loses nothing. The judge's score is never overwritten.

Runs
  enter open    space mark two runs to compare; type stage/key (e.g. grpo/reward) under the table    f refresh

Eval
  arrows choose a cell: its output below    s start eval or export    f refresh

Commitment
  arrows choose a cell: its samples below    d next metric    f refresh    s start the commitment stage

Playground (the models run in a worker process of their own; every answer is judged and kept in the run)
  type a question, enter: every chosen model answers side by side; the next question follows up (ctrl+n: anew)
  esc cancel the answer    ctrl+o models and settings    ctrl+t thinking on/off    ctrl+y fold the thinking
  ctrl+b battery prompts    ctrl+l the history (enter: show a kept turn)
  ctrl+h keep the question as a held-out prompt    ctrl+g as a battery test (eval picks both up)
"""


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(Text(HELP))
