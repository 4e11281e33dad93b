"""aba-tui: the Textual control panel. Reads the run database; never imports torch or cloud clients."""
