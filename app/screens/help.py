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

Rooms (any time)
  F2 pipeline    F3 training    F4 traces    F5 runs    F6 eval    F7 commitment
  ?  this help   ctrl+p command palette    q quit (workers keep running)

Pipeline
  n new run from the config    s start the selected stage    c cancel (checkpoint, then stop)
  r resume what did not succeed    k skip the selected stage    e view/edit the config    o open another run

Training
  tab next training stage    s EMA smoothing    m one chart / small multiples
  0 toggle the total reward    1-9 toggle each of the nine reward components
  h the health strip (left/right: each rule, and why it is ok, warn or alarm)
  c completions of the latest sampled step (or click the reward chart at a step)
    in there: [ ] previous / next sampled step, up/down a completion, esc close

Traces
  up/down move    [ ] choose the dimension    + / - change its score by 0.1    enter type a score
  x reset to the judge's score    u undo the last edit    v reviewed on/off    n next unreviewed
  o sort by the next column    O reverse the sort    / filters
  Each edit is committed at once: quitting loses nothing. The judge's score is never overwritten.

Runs
  enter open    space mark two runs to compare; type stage/key (e.g. grpo/reward) under the table
"""


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(Text(HELP))
